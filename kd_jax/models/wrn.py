"""Wide Residual Networks WRN-d-k for CIFAR (pre-activation blocks).

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016, arXiv:1605.07146. The layout, the shortcut
rule and the feature taps follow RepDistiller's `models/wrn.py` (Tian et al., ICLR 2020, arXiv:1910.10699),
so parameter counts match the KD tables (CIFAR-100: wrn_40_2 2.26M, wrn_16_2 0.70M, wrn_40_1 0.57M).
No dropout (RepDistiller's drop rate is 0 for every KD model).

Submodules are named after the PyTorch reference (`conv1`, `block1_layer0`, ..., `bn1`, `fc`).
"""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, batch_norm, classifier, conv1x1, conv3x3, global_avg_pool


def wrn_blocks_per_stage(depth: int) -> int:
  """n for WRN-`depth`, depth = 6n + 4."""
  if depth < 10 or (depth - 4) % 6:
    raise KDJaxError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...); got depth={depth}.")
  return (depth - 4) // 6


class PreActBlock(nn.Module):
  """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the shortcut; no activation at the end.

  When the input and output shapes agree the shortcut is the raw input. Otherwise the shortcut is a 1x1
  conv (with the block's stride) applied to the *activated* input relu(bn1(x)), as in the reference.
  Returns `(out, normed)` where `normed = bn1(x)` is the block's input after its first BN and before the
  ReLU: the WRN uses it as the pre-activation feature of the previous stage.
  """

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    normed = batch_norm(train, dt, pdt, "bn1")(x)
    act = nn.relu(normed)
    y = conv3x3(self.features, self.stride, dt, pdt, "conv1", kernels=k)(act)
    y = nn.relu(batch_norm(train, dt, pdt, "bn2")(y))
    y = conv3x3(self.features, 1, dt, pdt, "conv2", kernels=k)(y)
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
  """

  num_classes: int
  depth: int = 16
  widen_factor: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    n = wrn_blocks_per_stage(self.depth)
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    widths = (16 * self.widen_factor, 32 * self.widen_factor, 64 * self.widen_factor)
    x = conv3x3(16, 1, dt, pdt, "conv1", kernels=k)(x)
    stages, preacts = [], []
    for s, width in enumerate(widths):
      for b in range(n):
        stride = 2 if (s > 0 and b == 0) else 1
        x, normed = PreActBlock(width, stride, dt, pdt, k, name=f"block{s + 1}_layer{b}")(x, train)
        if s > 0 and b == 0:
          preacts.append(normed)  # bn1 of this stage's first block applied to the previous stage's output
      stages.append(x)
    normed = batch_norm(train, dt, pdt, "bn1")(x)
    preacts.append(normed)
    embedding = global_avg_pool(nn.relu(normed), train, k)
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding)


def wrn(num_classes: int, *, depth: int, widen_factor: int, dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> WideResNet:
  """Any WRN-d-k: depth d = 6n+4, widen factor k >= 1."""
  wrn_blocks_per_stage(depth)
  if widen_factor < 1:
    raise KDJaxError(f"WRN widen_factor must be a positive integer; got widen_factor={widen_factor}.")
  return WideResNet(num_classes=num_classes, depth=depth, widen_factor=widen_factor, dtype=dtype,
                    param_dtype=param_dtype, kernels=kernels)


def _named(depth: int, widen_factor: int):
  def constructor(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                  kernels: Kernels = DEFAULT_KERNELS) -> WideResNet:
    return WideResNet(num_classes=num_classes, depth=depth, widen_factor=widen_factor, dtype=dtype,
                      param_dtype=param_dtype, kernels=kernels)

  constructor.__name__ = constructor.__qualname__ = f"wrn_{depth}_{widen_factor}"
  constructor.__doc__ = f"WRN-{depth}-{widen_factor} for CIFAR (RepDistiller's `{constructor.__name__}`)."
  return constructor


wrn_16_1 = _named(16, 1)
wrn_16_2 = _named(16, 2)
wrn_40_1 = _named(40, 1)
wrn_40_2 = _named(40, 2)
