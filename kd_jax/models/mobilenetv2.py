"""MobileNetV2 for CIFAR with a width multiplier and an expansion ratio T.

Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018, arXiv:1801.04381. The CIFAR variant follows RepDistiller's `models/mobilenetv2.py` (Tian et
al., ICLR 2020, arXiv:1910.10699; it comes from "Knowledge Distillation via Route Constrained
Optimization", Jin et al., ICCV 2019), whose `mobile_half` (T = 6, width 0.5) is the "MobileNetV2"
student of the CIFAR-100 KD tables (0.81M parameters). It differs from the ImageNet network in ways that
change the counts:

  - every inverted residual has its 1x1 expansion conv, including the first one whose ratio is 1;
  - the final 1x1 conv is 1280 wide for any width <= 1 (scaled only above 1);
  - the stem is a stride-2 3x3 conv, so on 32x32 inputs the blocks run at 16, 8, 4 and 2 pixels.

Submodules: `conv1`/`bn1` (stem), `blocks{g}_{i}` (block i of group g, each with `conv1..3`/`bn1..3`),
`conv2`/`bn2` (the 1x1 head conv) and `fc`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.layers import conv, small_normal_init
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, batch_norm, global_avg_pool

# (expansion ratio or None for T, output channels at width 1, blocks, stride of the first block).
_GROUPS = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
           (None, 160, 3, 2), (None, 320, 1, 1))
# The groups whose outputs are RepDistiller's features f1..f4 (and whose last BN `get_bn_before_relu` lists).
_STAGE_GROUPS = (1, 2, 4, 6)


class InvertedResidual(nn.Module):
  """1x1 expansion conv-BN-ReLU, 3x3 depthwise conv (with the stride)-BN-ReLU, 1x1 projection conv-BN.

  The projection is linear (no ReLU), and the input is added when the stride is 1 and the channel count
  is unchanged.
  """

  features: int
  stride: int = 1
  expand_ratio: int = 6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    hidden = x.shape[-1] * self.expand_ratio
    y = conv(hidden, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv1")(x)
    y = nn.relu(batch_norm(train, dt, pdt, "bn1")(y))
    y = conv(hidden, 3, self.stride, groups=hidden, dtype=dt, param_dtype=pdt, kernels=k, name="conv2")(y)
    y = nn.relu(batch_norm(train, dt, pdt, "bn2")(y))
    y = conv(self.features, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv3")(y)
    y = batch_norm(train, dt, pdt, "bn3")(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = x + y
    return y


class MobileNetV2(nn.Module):
  """CIFAR MobileNetV2: stride-2 3x3 stem, seven groups of inverted residuals, 1x1 conv to 1280 (or
  1280*width above width 1), global average pool, linear classifier.

  Channels are `int(c * width_mult)` for the stem (c = 32) and the groups (c = 16, 24, 32, 64, 96, 160,
  320); the first group expands by 1, the others by `expand_ratio`.

  Outputs: `stages` are the outputs of groups 1, 2, 4 and 6 (RepDistiller's f1..f4; 16x16, 8x8, 4x4 and
  2x2 on 32x32 inputs). A block ends in a BN without a ReLU, so `preact_stages` equal `stages` (the
  reference returns the same list for `preact=True`). `embedding` is the pooled relu(bn2(conv2(.))) head
  output, 1280 wide for width <= 1.

  Attributes:
    num_classes: classifier outputs.
    width_mult: channel multiplier (0.5 for RepDistiller's `mobile_half`).
    expand_ratio: T, the expansion of every group but the first.
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
  """

  num_classes: int
  width_mult: float = 1.0
  expand_ratio: int = 6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    _check(self.width_mult, self.expand_ratio)
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    x = conv(int(32 * self.width_mult), 3, 2, dtype=dt, param_dtype=pdt, kernels=k, name="conv1")(x)
    x = nn.relu(batch_norm(train, dt, pdt, "bn1")(x))
    stages = []
    for g, (ratio, channels, blocks, stride) in enumerate(_GROUPS):
      for i in range(blocks):
        x = InvertedResidual(int(channels * self.width_mult), stride if i == 0 else 1,
                             self.expand_ratio if ratio is None else ratio, dt, pdt, k,
                             name=f"blocks{g}_{i}")(x, train)
      if g in _STAGE_GROUPS:
        stages.append(x)
    last = int(1280 * self.width_mult) if self.width_mult > 1.0 else 1280
    x = conv(last, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv2")(x)
    x = nn.relu(batch_norm(train, dt, pdt, "bn2")(x))
    embedding = global_avg_pool(x, train, k)
    logits = nn.Dense(self.num_classes, kernel_init=small_normal_init, bias_init=nn.initializers.zeros,
                      dtype=dt, param_dtype=pdt, name="fc")(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(stages),
                       embedding=embedding)


def _check(width_mult: float, expand_ratio: int) -> None:
  if not width_mult > 0 or int(16 * width_mult) < 1:
    raise KDJaxError(f"MobileNetV2 width_mult must be positive and leave every layer at least one channel "
                     f"(>= 0.0625); got width_mult={width_mult}.")
  if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, int) or expand_ratio < 1:
    raise KDJaxError(f"MobileNetV2 expand_ratio must be a positive integer; got "
                     f"expand_ratio={expand_ratio!r}.")


def mobilenetv2(num_classes: int, *, width_mult: float = 1.0, expand_ratio: int = 6,
                dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                kernels: Kernels = DEFAULT_KERNELS) -> MobileNetV2:
  """CIFAR MobileNetV2, width 1 and T = 6 by default (RepDistiller's `mobilenetv2_T_w(T, W)`)."""
  _check(width_mult, expand_ratio)
  return MobileNetV2(num_classes=num_classes, width_mult=float(width_mult), expand_ratio=expand_ratio,
                     dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def mobilenetv2_half(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                     kernels: Kernels = DEFAULT_KERNELS) -> MobileNetV2:
  """CIFAR MobileNetV2 with width 0.5 and T = 6 (RepDistiller's `mobile_half`, 0.81M on CIFAR-100)."""
  return MobileNetV2(num_classes=num_classes, width_mult=0.5, expand_ratio=6, dtype=dtype,
                     param_dtype=param_dtype, kernels=kernels)
