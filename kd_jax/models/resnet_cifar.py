"""CIFAR ResNets (BasicBlock, three stages, depth 6n+2) as used across the knowledge-distillation literature.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385 (the
CIFAR variant of Section 4.2). The layer layout, widths and initialisation follow RepDistiller's
`models/resnet.py` (Tian et al., "Contrastive Representation Distillation", ICLR 2020, arXiv:1910.10699),
which mdistiller and most later KD papers reuse, so the parameter counts match the tables those papers
print (resnet8x4 1.23M, resnet32x4 7.43M, resnet20 0.28M, resnet56 0.86M, resnet110 1.74M on CIFAR-100).

Submodules are named after the PyTorch reference (`conv1`, `bn1`, `layer1_0`, ..., `fc`) so a converter
for its published teacher checkpoints is a renaming, not a rewrite.

Two options make smaller students; at their defaults the parameter tree is the reference's, unchanged, so
existing checkpoints load:
  - `conv` (cheap convolutions, `block_conv`): the two 3x3 convs of every residual block become Moonshine's
    grouped + pointwise substitute ('g<g>') or its depthwise-separable form ('dw_sep'); the stem conv and
    the 1x1 projection shortcuts stay as they are. Crowley, Gray, Storkey, "Moonshine: Distilling with
    Cheap Convolutions", NeurIPS 2018, arXiv:1711.02613.
  - `inner_widths` (structured filter pruning): the output width of each block's first conv, i.e. the
    network `kd_jax.compression.pruning.prune_filters` leaves after removing filters (Li et al., "Pruning
    Filters for Efficient ConvNets", ICLR 2017, arXiv:1608.08710). Block outputs keep the stage widths.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput

Dtype = Any

# Kaiming-normal with fan_out, as `nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu")` in the
# PyTorch references ("normal" is untruncated here, like PyTorch's).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default nn.Linear weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias starts at zero.
dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def batch_norm(train: bool, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 in PyTorch's convention is 0.9 here, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=param_dtype, name=name)


def conv3x3(features: int, stride: int, dtype: Dtype, param_dtype: Dtype, name: str, *,
            kernels: Kernels) -> nn.Conv:
  """3x3 convolution, padding 1 on every side (PyTorch's `padding=1`, not "SAME": they differ at stride 2)."""
  return nn.Conv(features, (3, 3), strides=stride, padding=((1, 1), (1, 1)), use_bias=False,
                 kernel_init=conv_init, dtype=dtype, param_dtype=param_dtype,
                 conv_general_dilated=kernels.conv_general_dilated, name=name)


def conv1x1(features: int, stride: int, dtype: Dtype, param_dtype: Dtype, name: str, *,
            kernels: Kernels) -> nn.Conv:
  """1x1 convolution (the projection shortcut)."""
  return nn.Conv(features, (1, 1), strides=stride, padding="VALID", use_bias=False,
                 kernel_init=conv_init, dtype=dtype, param_dtype=param_dtype,
                 conv_general_dilated=kernels.conv_general_dilated, name=name)


# Cheap convolutions (`conv` option): 'standard', 'dw_sep', or 'g<g>' for an integer g >= 1.
STANDARD_CONV = "standard"
DEPTHWISE_SEPARABLE = "dw_sep"
_GROUPED = re.compile(r"^g([1-9][0-9]*)$")


def conv_groups(conv: str) -> Optional[int]:
  """The group count of the grouped 3x3 conv of `block_conv`'s substitute for `conv`: None for 'standard'
  (no substitution), 0 for 'dw_sep' (g = the input channels, depthwise), g for 'g<g>'.

  Raises:
    KDJaxError: `conv` is none of these (the message lists them).
  """
  if conv == STANDARD_CONV:
    return None
  if conv == DEPTHWISE_SEPARABLE:
    return 0
  match = _GROUPED.match(conv) if isinstance(conv, str) else None
  if match is None:
    raise KDJaxError(f"conv must be 'standard', 'dw_sep' (depthwise-separable) or 'g<g>' for a grouped + "
                     f"pointwise conv with an integer g >= 1 groups (e.g. 'g2', 'g4'); got conv={conv!r}.")
  return int(match.group(1))


def validate_conv(conv: str) -> str:
  """`conv` if it names a block convolution (`conv_groups`), else a KDJaxError listing the choices."""
  conv_groups(conv)
  return conv


class GroupedPointwiseConv(nn.Module):
  """Moonshine's cheap substitute for a 3x3 convolution: a grouped 3x3 conv, BN, ReLU, then a 1x1 conv.

      y = conv1x1_{C_in -> features}( relu( bn( gconv3x3_{C_in -> C_in, g groups, stride}(x) ) ) )

  Crowley, Gray, Storkey, "Moonshine: Distilling with Cheap Convolutions", NeurIPS 2018, arXiv:1711.02613,
  Sec. 3 and Fig. 1: G(g) "substitutes a k x k convolution with a grouped convolution followed by a
  pointwise (1x1) convolution"; g = C_in is the depthwise-separable block DW (MobileNet's depthwise 3x3 then
  pointwise 1x1). The structure follows the reference code, BayesWatch/pytorch-moonshine
  `models/blocks.py::DConv` (G(g) is its `DConvA<g>`, DW its `DConv`): the grouped conv keeps the *input*
  width C_in (stride and padding 1 of the conv it replaces), and BatchNorm + ReLU sit between it and the
  pointwise conv, which maps C_in to the output width; no bias. The paper's text and table count only the
  two convolutions; the intermediate BN + ReLU is the reference code's (its comment: the substitute's
  output goes through the block's own BN + ReLU, the internal ones are written out), and we follow the
  code. The BN + ReLU after the pointwise conv are the replaced conv's own (the block's). Not implemented: the reference's G(N/g) variants (`DConvG<g>`, g
  channels per group) and the bottleneck blocks B(b), BG(b, g).

  Parameters (counted by `param_count`): 9·C_in·C_in/g (grouped kernel) + 2·C_in (BN scale and bias) +
  C_in·features (pointwise), against 9·C_in·features for the 3x3 conv; the paper's Table 1 cost
  N²(k²/g + 1) for C_in = features = N, plus the BN. Children: `conv_grouped` ([3, 3, C_in/g, C_in]), `bn`
  (with running statistics in `batch_stats`) and `conv_pointwise` ([1, 1, C_in, features]).

  Attributes:
    features: output channels.
    stride: the replaced conv's stride (taken by the grouped conv).
    groups: g; 0 means g = C_in (depthwise). g must divide C_in.
    train: BatchNorm mode (batch statistics when True), as for the block's own BNs.
  """

  features: int
  stride: int = 1
  groups: int = 0
  train: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    channels = x.shape[-1]
    groups = channels if self.groups == 0 else self.groups
    if groups < 1 or channels % groups:
      raise KDJaxError(f"{self.name}: a grouped conv with g={groups} groups needs input channels divisible by g, "
                       f"got {channels} channels; choose conv='g<g>' with g dividing every block's width (or "
                       "'dw_sep').")
    y = nn.Conv(channels, (3, 3), strides=self.stride, padding=((1, 1), (1, 1)), feature_group_count=groups,
                use_bias=False, kernel_init=conv_init, dtype=dt, param_dtype=pdt,
                conv_general_dilated=k.conv_general_dilated, name="conv_grouped")(x)
    y = nn.relu(batch_norm(self.train, dt, pdt, "bn")(y))
    return conv1x1(self.features, 1, dt, pdt, "conv_pointwise", kernels=k)(y)


def block_conv(conv: str, features: int, stride: int, train: bool, dtype: Dtype, param_dtype: Dtype, name: str,
               *, kernels: Kernels) -> Union[nn.Conv, GroupedPointwiseConv]:
  """A residual block's 3x3 convolution for `conv` (see `conv_groups`), named `name`, called as `m(x)`:
  `conv3x3` for 'standard' (the reference, same parameter tree), else a `GroupedPointwiseConv` with the
  same output size (H - 1) // stride + 1 by (W - 1) // stride + 1 and width."""
  groups = conv_groups(conv)
  if groups is None:
    return conv3x3(features, stride, dtype, param_dtype, name, kernels=kernels)
  return GroupedPointwiseConv(features, stride, groups, train, dtype, param_dtype, kernels, name=name)


def classifier(num_classes: int, dtype: Dtype, param_dtype: Dtype, name: str = "fc") -> nn.Dense:
  """The linear head. Every model in the zoo names it `fc`, so `params["fc"]` is always the classifier."""
  return nn.Dense(num_classes, kernel_init=dense_init, bias_init=nn.initializers.zeros, dtype=dtype,
                  param_dtype=param_dtype, name=name)


def global_avg_pool(x: jax.Array, train: bool, kernels: Kernels = DEFAULT_KERNELS) -> jax.Array:
  """Mean over H and W: [B, H, W, C] -> [B, C]. Equals the references' `AvgPool2d(8)` on 32x32 inputs and
  also works for other input sizes. In eval mode the input first passes `kernels.fusion_barrier` (an
  identity): on CPU the pool's reduction otherwise took the last stage's convolutions into YNNPACK."""
  return jnp.mean(x if train else kernels.fusion_barrier(x), axis=(1, 2))


def blocks_per_stage(depth: int) -> int:
  """n for a BasicBlock CIFAR ResNet of `depth` = 6n + 2 layers."""
  if depth < 8 or (depth - 2) % 6:
    raise KDJaxError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, 44, 56, 110, ...); "
                     f"got depth={depth}.")
  return (depth - 2) // 6


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

  The shortcut is the identity when shapes agree and otherwise a 1x1 convolution with the block's stride
  followed by BN (option B of the paper, as in RepDistiller). Returns `(out, preact)`, where `preact` is
  the sum before the final ReLU and `out = relu(preact)`. `inner_features` (default `features`) is the
  width of conv1 and bn1, i.e. of the block after filter pruning; `conv` replaces both 3x3 convs
  (`block_conv`; 'standard' is the reference block).
  """

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS
  conv: str = STANDARD_CONV
  inner_features: Optional[int] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    inner = self.features if self.inner_features is None else self.inner_features
    y = block_conv(self.conv, inner, self.stride, train, dt, pdt, "conv1", kernels=k)(x)
    y = nn.relu(batch_norm(train, dt, pdt, "bn1")(y))
    y = block_conv(self.conv, self.features, 1, train, dt, pdt, "conv2", kernels=k)(y)
    y = batch_norm(train, dt, pdt, "bn2")(y)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = conv1x1(self.features, self.stride, dt, pdt, "downsample_conv", kernels=k)(x)
      shortcut = batch_norm(train, dt, pdt, "downsample_bn")(shortcut)
    preact = y + shortcut
    return nn.relu(preact), preact


class ResNetCIFAR(nn.Module):
  """CIFAR ResNet with BasicBlocks: stem, three stages of n blocks each, global average pool, linear head.

  Layout (depth = 6n + 2): 3x3 conv (`stem_width` channels) - BN - ReLU; stage 1 (`widths[0]`, stride 1),
  stage 2 (`widths[1]`, stride 2), stage 3 (`widths[2]`, stride 2), each n BasicBlocks; global average
  pool; Dense. On 32x32 inputs the stage outputs are 32x32, 16x16 and 8x8.

  Outputs (`ModelOutput`): `stages[i]` is the output of the last block of stage i (after its ReLU);
  `preact_stages[i]` is the same tensor before that ReLU (RepDistiller's `preact=True` features);
  `embedding` is the pooled stage-3 output fed to the classifier; `stem` is the conv-BN-ReLU output
  before stage 1 (RepDistiller's `f0`, which its FSP pairs with stage 1).

  Attributes:
    num_classes: classifier outputs.
    depth: total number of weighted layers, 6n+2.
    stem_width: channels of the stem conv (16, or 32 for the x4 models).
    widths: channels of the three stages ((16, 32, 64), or (64, 128, 256) for the x4 models).
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
    conv: the blocks' 3x3 convolutions: 'standard' (the reference), 'dw_sep' or 'g<g>' (Moonshine's cheap
      substitutes, `GroupedPointwiseConv`); the stem conv stays a full 3x3 conv, as in Moonshine.
    inner_widths: None (every block's conv1 as wide as its stage), or one conv1 output width per block in
      network order (3n entries: stage 1's blocks first), as `prune_filters` returns them.
  """

  num_classes: int
  depth: int = 20
  stem_width: int = 16
  widths: Tuple[int, int, int] = (16, 32, 64)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS
  conv: str = STANDARD_CONV
  inner_widths: Optional[Tuple[int, ...]] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    n = blocks_per_stage(self.depth)
    if len(self.widths) != 3:
      raise KDJaxError(f"ResNetCIFAR takes three stage widths; got widths={self.widths}.")
    inner = validate_inner_widths(self.inner_widths, self.depth)
    validate_conv(self.conv)
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    x = conv3x3(self.stem_width, 1, dt, pdt, "conv1", kernels=k)(x)
    x = nn.relu(batch_norm(train, dt, pdt, "bn1")(x))
    stem = x
    stages, preacts = [], []
    for s, width in enumerate(self.widths):
      for b in range(n):
        stride = 2 if (s > 0 and b == 0) else 1
        inner_width = None if inner is None else inner[s * n + b]
        x, preact = BasicBlock(width, stride, dt, pdt, k, self.conv, inner_width,
                               name=f"layer{s + 1}_{b}")(x, train)
      stages.append(x)
      preacts.append(preact)
    embedding = global_avg_pool(x, train, k)
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding, stem=stem)


def validate_inner_widths(inner_widths: Optional[Sequence[int]], depth: int) -> Optional[Tuple[int, ...]]:
  """`inner_widths` as a tuple of ints, checked to give one positive width per block of a depth-`depth`
  ResNet (3n entries), or None."""
  if inner_widths is None:
    return None
  blocks = 3 * blocks_per_stage(depth)
  try:
    widths = tuple(int(w) for w in inner_widths)
  except (TypeError, ValueError) as e:
    raise KDJaxError(f"inner_widths must be a sequence of {blocks} positive integers (one per block); got "
                     f"{inner_widths!r}.") from e
  if len(widths) != blocks or any(w < 1 for w in widths) or any(isinstance(w, bool) for w in inner_widths):
    raise KDJaxError(f"inner_widths must hold one positive integer per residual block, {blocks} for depth {depth} "
                     f"(stage 1's blocks first); got {inner_widths!r}. Use the widths prune_filters returns, "
                     "or None for the full network.")
  return widths


def resnet(num_classes: int, *, depth: int, stem_width: int = 16, widths: Tuple[int, int, int] = (16, 32, 64),
           conv: str = STANDARD_CONV, inner_widths: Optional[Sequence[int]] = None, dtype: Dtype = jnp.float32,
           param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> ResNetCIFAR:
  """Any BasicBlock CIFAR ResNet: depth 6n+2, a stem width, three stage widths, the blocks' `conv`
  ('standard', 'dw_sep' or 'g<g>') and optionally per-block `inner_widths` (filter-pruned)."""
  blocks_per_stage(depth)
  widths = tuple(int(w) for w in widths)
  if len(widths) != 3:
    raise KDJaxError(f"resnet takes three stage widths; got widths={widths}.")
  return ResNetCIFAR(num_classes=num_classes, depth=depth, stem_width=stem_width, widths=widths,
                     dtype=dtype, param_dtype=param_dtype, kernels=kernels, conv=validate_conv(conv),
                     inner_widths=validate_inner_widths(inner_widths, depth))


def _named(depth: int, stem_width: int = 16, widths: Tuple[int, int, int] = (16, 32, 64),
           default_conv: str = STANDARD_CONV):
  def constructor(num_classes: int, *, conv: str = default_conv, inner_widths: Optional[Sequence[int]] = None,
                  dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                  kernels: Kernels = DEFAULT_KERNELS) -> ResNetCIFAR:
    return ResNetCIFAR(num_classes=num_classes, depth=depth, stem_width=stem_width, widths=widths,
                       dtype=dtype, param_dtype=param_dtype, kernels=kernels, conv=validate_conv(conv),
                       inner_widths=validate_inner_widths(inner_widths, depth))

  x4 = "x4" if stem_width != 16 else ""
  suffix = "" if default_conv == STANDARD_CONV else f"_{default_conv}"
  constructor.__name__ = constructor.__qualname__ = f"resnet{depth}{x4}{suffix}"
  if suffix:
    constructor.__doc__ = f"ResNet-{depth}{x4}, depthwise-separable block convs (Moonshine; conv='{default_conv}')."
  else:
    constructor.__doc__ = (f"ResNet-{depth}{x4} for CIFAR: stem {stem_width}, stage widths {widths}, "
                           f"{(depth - 2) // 6} BasicBlocks per stage "
                           f"(RepDistiller's `{constructor.__name__}`); `conv` and `inner_widths` as in "
                           "`ResNetCIFAR`.")
  return constructor


resnet8 = _named(8)
resnet14 = _named(14)
resnet20 = _named(20)
resnet26 = _named(26)
resnet32 = _named(32)
resnet44 = _named(44)
resnet56 = _named(56)
resnet110 = _named(110)
resnet8x4 = _named(8, 32, (64, 128, 256))
resnet32x4 = _named(32, 32, (64, 128, 256))
# Cheap-convolution students (Moonshine, arXiv:1711.02613) for the orthogonality study.
resnet8_dw_sep = _named(8, default_conv=DEPTHWISE_SEPARABLE)
resnet8x4_dw_sep = _named(8, 32, (64, 128, 256), default_conv=DEPTHWISE_SEPARABLE)
