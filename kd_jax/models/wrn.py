"""Wide Residual Networks WRN-d-k for CIFAR (pre-activation blocks).

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016, arXiv:1605.07146. The layout, the shortcut
rule and the feature taps follow RepDistiller's `models/wrn.py` (Tian et al., ICLR 2020, arXiv:1910.10699),
so parameter counts match the KD tables (CIFAR-100: wrn_40_2 2.26M, wrn_16_2 0.70M, wrn_40_1 0.57M).
No dropout (RepDistiller's drop rate is 0 for every KD model).

Submodules are named after the PyTorch reference (`conv1`, `block1_layer0`, ..., `bn1`, `fc`).

Kernel variants (`kernel`, for Pacemaker KD: Son, Kim, Song, Moon, Hwang, "Knowledge Distillation with
a Pacemaker", arXiv:2003.03944, whose students replace the 3x3 filters by 1xN ones with a "pacemaker" of
intermediate shape in between; no public code). Every 3x3 convolution (the stem `conv1` and both convs
of every block) becomes, keeping its name, its stride and the output size of the 3x3 conv:
  - '3x3': the reference network, unchanged (same parameter tree, so existing checkpoints load);
  - '2x3': one 2x3 kernel (height 2, width 3), padding ((0, 1), (1, 1)) (assumed: the paper gives none);
  - '3x1_1x3': a 3x1 conv (padding ((1, 1), (0, 0)), stride (s, 1)) followed directly by a 1x3 conv
    (padding ((0, 0), (1, 1)), stride (1, s)), both with the output width, no BN or ReLU between them
    (assumed), i.e. a factorised 3x3; they are the children `conv_3x1` and `conv_1x3` of a module with the
    3x3 conv's name (`params["conv1"]["conv_3x1"]["kernel"]`, ...);
  - '1x3': one 1x3 kernel, padding ((0, 0), (1, 1)).
The 1x1 projection shortcuts stay 1x1.

Cheap convolutions (`conv`, for Moonshine: Crowley, Gray, Storkey, "Moonshine: Distilling with Cheap
Convolutions", NeurIPS 2018, arXiv:1711.02613, whose students are WRN-40-2 with every block's convs
replaced; reference BayesWatch/pytorch-moonshine): 'standard' (default, the reference tree), 'dw_sep'
(depthwise-separable) or 'g<g>' (grouped with g groups + pointwise) replace both 3x3 convs of every block
by `resnet_cifar.GroupedPointwiseConv` (a grouped 3x3 conv, BN, ReLU, a 1x1 conv), keeping their names.
Unlike `kernel`, `conv` leaves the stem conv a full 3x3 conv, as Moonshine does (its `conv1` is a plain
`nn.Conv2d` whatever the block type); the shortcuts stay 1x1. `kernel` and `conv` do not combine: a
non-'3x3' kernel needs conv='standard'.
"""

from __future__ import annotations

from typing import Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError, one_of
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import (STANDARD_CONV, Dtype, batch_norm, block_conv, classifier, conv1x1,
                                        conv3x3, conv_init, global_avg_pool, validate_conv)

# The kernel shapes a WRN's 3x3 convolutions can be replaced by (see the module docstring).
WRN_KERNELS = ("3x3", "2x3", "3x1_1x3", "1x3")
# kernel name -> (kernel size, padding) of the single-conv variants other than 3x3.
_SINGLE_KERNELS = {
    "2x3": ((2, 3), ((0, 1), (1, 1))),
    "1x3": ((1, 3), ((0, 0), (1, 1))),
}
_KERNEL_WORDS = {"2x3": "a 2x3 conv", "3x1_1x3": "a 3x1 then a 1x3 conv", "1x3": "a 1x3 conv"}


def wrn_blocks_per_stage(depth: int) -> int:
  """n for WRN-`depth`, depth = 6n + 4."""
  if depth < 10 or (depth - 4) % 6:
    raise KDJaxError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...); got depth={depth}.")
  return (depth - 4) // 6


def validate_kernel(kernel: str) -> str:
  """`kernel` if it is one of `WRN_KERNELS`, else a KDJaxError listing them."""
  if kernel not in WRN_KERNELS:
    raise KDJaxError(f"WRN kernel must be {one_of(WRN_KERNELS)}; got kernel={kernel!r}.")
  return kernel


def validate_kernel_and_conv(kernel: str, conv: str) -> Tuple[str, str]:
  """`(kernel, conv)` if each is valid and they do not both replace the 3x3 convs, else a KDJaxError."""
  validate_kernel(kernel)
  validate_conv(conv)
  if kernel != "3x3" and conv != STANDARD_CONV:
    raise KDJaxError(f"A WRN takes either a kernel shape (kernel={kernel!r}, Pacemaker KD) or cheap convolutions "
                     f"(conv={conv!r}, Moonshine), not both; set kernel='3x3' or conv='standard'.")
  return kernel, conv


def _conv(features: int, size: Tuple[int, int], strides: Tuple[int, int], padding, dtype: Dtype,
          param_dtype: Dtype, name: str, kernels: Kernels) -> nn.Conv:
  return nn.Conv(features, size, strides=strides, padding=padding, use_bias=False, kernel_init=conv_init,
                 dtype=dtype, param_dtype=param_dtype, conv_general_dilated=kernels.conv_general_dilated,
                 name=name)


class FactorisedConv(nn.Module):
  """A 3x1 conv (stride (s, 1)) then a 1x3 conv (stride (1, s)), both `features` wide and without a bias,
  with nothing between them: the '3x1_1x3' replacement of a 3x3 conv (same output size). The children are
  `conv_3x1` and `conv_1x3`."""

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f, s, dt, pdt, k = self.features, self.stride, self.dtype, self.param_dtype, self.kernels
    x = _conv(f, (3, 1), (s, 1), ((1, 1), (0, 0)), dt, pdt, "conv_3x1", k)(x)
    return _conv(f, (1, 3), (1, s), ((0, 0), (1, 1)), dt, pdt, "conv_1x3", k)(x)


def kernel_conv(kernel: str, features: int, stride: int, dtype: Dtype, param_dtype: Dtype, name: str, *,
                kernels: Kernels) -> Union[nn.Conv, FactorisedConv]:
  """The module that replaces a 3x3 conv (padding 1, no bias) for `kernel` in `WRN_KERNELS`, named `name`:
  `conv3x3` itself for '3x3', a single 2x3 or 1x3 `nn.Conv`, or a `FactorisedConv` for '3x1_1x3'. Every
  variant keeps the 3x3 conv's output size, (H - 1) // stride + 1 by (W - 1) // stride + 1.

  Raises:
    KDJaxError: `kernel` is not one of `WRN_KERNELS` (the message lists them).
  """
  validate_kernel(kernel)
  if kernel == "3x3":
    return conv3x3(features, stride, dtype, param_dtype, name, kernels=kernels)
  if kernel == "3x1_1x3":
    return FactorisedConv(features, stride, dtype, param_dtype, kernels, name=name)
  size, padding = _SINGLE_KERNELS[kernel]
  return _conv(features, size, (stride, stride), padding, dtype, param_dtype, name, kernels)


class PreActBlock(nn.Module):
  """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the shortcut; no activation at the end.

  When the input and output shapes agree the shortcut is the raw input. Otherwise the shortcut is a 1x1
  conv (with the block's stride) applied to the *activated* input relu(bn1(x)), as in the reference.
  Returns `(out, normed)` where `normed = bn1(x)` is the block's input after its first BN and before the
  ReLU: the WRN uses it as the pre-activation feature of the previous stage. `kernel` replaces both 3x3
  convs (`kernel_conv`; '3x3' is the reference block), or else `conv` does (`resnet_cifar.block_conv`;
  'standard' is the reference block).
  """

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS
  kernel: str = "3x3"
  conv: str = STANDARD_CONV

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    validate_kernel_and_conv(self.kernel, self.conv)

    def conv3(features: int, stride: int, name: str):
      if self.conv == STANDARD_CONV:
        return kernel_conv(self.kernel, features, stride, dt, pdt, name, kernels=k)
      return block_conv(self.conv, features, stride, train, dt, pdt, name, kernels=k)

    normed = batch_norm(train, dt, pdt, "bn1")(x)
    act = nn.relu(normed)
    y = conv3(self.features, self.stride, "conv1")(act)
    y = nn.relu(batch_norm(train, dt, pdt, "bn2")(y))
    y = conv3(self.features, 1, "conv2")(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      shortcut = x
    else:
      shortcut = conv1x1(self.features, self.stride, dt, pdt, "conv_shortcut", kernels=k)(act)
    return y + shortcut, normed


class WideResNet(nn.Module):
  """WRN-d-k: 3x3 conv stem (16 channels), three stages of n = (d-4)/6 pre-activation blocks with widths
  16k, 32k, 64k (strides 1, 2, 2), a final BN-ReLU, global average pool and a linear head.

  Feature taps (RepDistiller's `is_feat=True, preact=...`; there is no ReLU at the end of a pre-activation
  block, so the two tuples differ by a BN rather than by a ReLU):
    - `stages[i]`: the output of stage i's last block (the residual sum, no activation).
    - `preact_stages[i]`: that output after the *next* BN and before its ReLU: the first block of stage
      i+1 computes `bn1(stages[i])`, and for the last stage the network's final BN computes
      `bn(stages[2])`. These BN outputs are taken from the forward pass itself (the reference calls the
      next BN a second time, which in PyTorch train mode also updates its running statistics twice).
    - `embedding`: `mean_hw(relu(bn(stages[2])))`, the classifier's input (64k wide).
  On 32x32 inputs the stages are 32x32, 16x16 and 8x8.

  Attributes:
    num_classes: classifier outputs.
    depth: d = 6n + 4.
    widen_factor: k.
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
    kernel: what replaces every 3x3 conv, one of `WRN_KERNELS` ('3x3': the reference network; see the
      module docstring).
    conv: what replaces the blocks' 3x3 convs (not the stem's): 'standard' (the reference), 'dw_sep' or
      'g<g>' (Moonshine's cheap convolutions; see the module docstring). Needs kernel='3x3'.
  """

  num_classes: int
  depth: int = 16
  widen_factor: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS
  kernel: str = "3x3"
  conv: str = STANDARD_CONV

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    n = wrn_blocks_per_stage(self.depth)
    kernel, conv = validate_kernel_and_conv(self.kernel, self.conv)
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    widths = (16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor)
    x = kernel_conv(kernel, 16, 1, dt, pdt, "conv1", kernels=k)(x)
    stages, preacts = [], []
    for s, width in enumerate(widths):
      for b in range(n):
        stride = 2 if (s > 0 and b == 0) else 1
        x, normed = PreActBlock(width, stride, dt, pdt, k, kernel, conv, name=f"block{s + 1}_layer{b}")(x, train)
        if s > 0 and b == 0:
          preacts.append(normed)  # bn1 of this stage's first block applied to the previous stage's output
      stages.append(x)
    normed = batch_norm(train, dt, pdt, "bn1")(x)
    preacts.append(normed)
    embedding = global_avg_pool(nn.relu(normed), train, k)
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding)


def wrn(num_classes: int, *, depth: int, widen_factor: int, kernel: str = "3x3", conv: str = STANDARD_CONV,
        dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
        kernels: Kernels = DEFAULT_KERNELS) -> WideResNet:
  """Any WRN-d-k: depth d = 6n+4, widen factor k >= 1, `kernel` one of `WRN_KERNELS` (default '3x3') or
  `conv` 'dw_sep'/'g<g>' (Moonshine's cheap block convolutions; default 'standard')."""
  wrn_blocks_per_stage(depth)
  if widen_factor < 1:
    raise KDJaxError(f"WRN widen_factor must be a positive integer; got widen_factor={widen_factor}.")
  kernel, conv = validate_kernel_and_conv(kernel, conv)
  return WideResNet(num_classes=num_classes, depth=depth, widen_factor=widen_factor, dtype=dtype,
                    param_dtype=param_dtype, kernels=kernels, kernel=kernel, conv=conv)


def _named(depth: int, widen_factor: int, kernel: str = "3x3", doc: str = "", default_conv: str = STANDARD_CONV):
  validate_kernel(kernel)

  def constructor(num_classes: int, *, conv: str = default_conv, dtype: Dtype = jnp.float32,
                  param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> WideResNet:
    validate_kernel_and_conv(kernel, conv)
    return WideResNet(num_classes=num_classes, depth=depth, widen_factor=widen_factor, dtype=dtype,
                      param_dtype=param_dtype, kernels=kernels, kernel=kernel, conv=conv)

  suffix = "" if kernel == "3x3" else f"_{kernel}"
  suffix += "" if default_conv == STANDARD_CONV else f"_{default_conv}"
  name = constructor.__name__ = constructor.__qualname__ = f"wrn_{depth}_{widen_factor}{suffix}"
  if default_conv != STANDARD_CONV:
    doc = f"WRN-{depth}-{widen_factor}, depthwise-separable block convs (Moonshine; conv='{default_conv}')"
  elif kernel != "3x3":
    doc = f"WRN-{depth}-{widen_factor}, every 3x3 conv replaced by {_KERNEL_WORDS[kernel]} (Pacemaker KD)"
  else:
    doc = (doc or f"WRN-{depth}-{widen_factor} for CIFAR (RepDistiller's `{name}`)") + (
        "; `conv` 'dw_sep' or 'g<g>' gives Moonshine's cheap-convolution student")
  constructor.__doc__ = doc + "."
  return constructor


wrn_16_1 = _named(16, 1)
wrn_16_2 = _named(16, 2)
wrn_40_1 = _named(40, 1)
wrn_40_2 = _named(40, 2)
# Pacemaker KD (arXiv:2003.03944): teacher WRN-40-4; students and pacemakers with other kernel shapes.
wrn_40_4 = _named(40, 4, doc="WRN-40-4 for CIFAR (the Pacemaker KD teacher)")
wrn_40_4_2x3 = _named(40, 4, "2x3")
wrn_40_4_3x1_1x3 = _named(40, 4, "3x1_1x3")
wrn_40_4_1x3 = _named(40, 4, "1x3")
wrn_16_2_2x3 = _named(16, 2, "2x3")
wrn_16_2_3x1_1x3 = _named(16, 2, "3x1_1x3")
wrn_16_2_1x3 = _named(16, 2, "1x3")
# Cheap-convolution student (Moonshine, arXiv:1711.02613) for the orthogonality study.
wrn_16_2_dw_sep = _named(16, 2, default_conv="dw_sep")
