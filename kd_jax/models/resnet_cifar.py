"""CIFAR ResNets (BasicBlock, three stages, depth 6n+2) as used across the knowledge-distillation literature.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385 (the
CIFAR variant of Section 4.2). The layer layout, widths and initialisation follow RepDistiller's
`models/resnet.py` (Tian et al., "Contrastive Representation Distillation", ICLR 2020, arXiv:1910.10699),
which mdistiller and most later KD papers reuse, so the parameter counts match the tables those papers
print (resnet8x4 1.23M, resnet32x4 7.43M, resnet20 0.28M, resnet56 0.86M, resnet110 1.74M on CIFAR-100).

Submodules are named after the PyTorch reference (`conv1`, `bn1`, `layer1_0`, ..., `fc`) so a converter
for its published teacher checkpoints is a renaming, not a rewrite.
"""

from __future__ import annotations

from typing import Any, Tuple

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
  the sum before the final ReLU and `out = relu(preact)`.
  """

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    y = conv3x3(self.features, self.stride, dt, pdt, "conv1", kernels=k)(x)
    y = nn.relu(batch_norm(train, dt, pdt, "bn1")(y))
    y = conv3x3(self.features, 1, dt, pdt, "conv2", kernels=k)(y)
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
  """

  num_classes: int
  depth: int = 20
  stem_width: int = 16
  widths: Tuple[int, int, int] = (16, 32, 64)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    n = blocks_per_stage(self.depth)
    if len(self.widths) != 3:
      raise KDJaxError(f"ResNetCIFAR takes three stage widths; got widths={self.widths}.")
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    x = conv3x3(self.stem_width, 1, dt, pdt, "conv1", kernels=k)(x)
    x = nn.relu(batch_norm(train, dt, pdt, "bn1")(x))
    stem = x
    stages, preacts = [], []
    for s, width in enumerate(self.widths):
      for b in range(n):
        stride = 2 if (s > 0 and b == 0) else 1
        x, preact = BasicBlock(width, stride, dt, pdt, k, name=f"layer{s + 1}_{b}")(x, train)
      stages.append(x)
      preacts.append(preact)
    embedding = global_avg_pool(x, train, k)
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding, stem=stem)


def resnet(num_classes: int, *, depth: int, stem_width: int = 16, widths: Tuple[int, int, int] = (16, 32, 64),
           dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
           kernels: Kernels = DEFAULT_KERNELS) -> ResNetCIFAR:
  """Any BasicBlock CIFAR ResNet: depth 6n+2, a stem width and three stage widths."""
  blocks_per_stage(depth)
  widths = tuple(int(w) for w in widths)
  if len(widths) != 3:
    raise KDJaxError(f"resnet takes three stage widths; got widths={widths}.")
  return ResNetCIFAR(num_classes=num_classes, depth=depth, stem_width=stem_width, widths=widths,
                     dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def _named(depth: int, stem_width: int = 16, widths: Tuple[int, int, int] = (16, 32, 64)):
  def constructor(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                  kernels: Kernels = DEFAULT_KERNELS) -> ResNetCIFAR:
    return ResNetCIFAR(num_classes=num_classes, depth=depth, stem_width=stem_width, widths=widths,
                       dtype=dtype, param_dtype=param_dtype, kernels=kernels)

  x4 = "x4" if stem_width != 16 else ""
  constructor.__name__ = constructor.__qualname__ = f"resnet{depth}{x4}"
  constructor.__doc__ = (f"ResNet-{depth}{x4} for CIFAR: stem {stem_width}, stage widths {widths}, "
                         f"{(depth - 2) // 6} BasicBlocks per stage "
                         f"(RepDistiller's `{constructor.__name__}`).")
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
