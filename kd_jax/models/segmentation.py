"""Segmentation models: a small U-Net returning per-pixel logits [B, H, W, num_classes], any input channels.

Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015,
arXiv:1505.04597, reduced in width and depth for small tiles [assume]: each encoder level is two
(conv3×3 − BN − ReLU) blocks followed by a 2×2 max pool (except the deepest level, the bottleneck); each
decoder level upsamples by 2 (nearest neighbour), concatenates the encoder output of the same resolution (the
skip), and applies two (conv3×3 − BN − ReLU) blocks; a 1×1 conv (with bias) gives the logits. Convolutions
pad by 1 ('SAME' at stride 1), so the logits have the input's height and width, which must be divisible by
2^(levels − 1).

`stages` are the encoder level outputs (input side first, the bottleneck last) followed by the decoder level
outputs (coarse to fine): with widths (16, 32, 64), stages 0–2 are [B, H, W, 16], [B, H/2, W/2, 32],
[B, H/4, W/4, 64] and stages 3–4 [B, H/2, W/2, 32], [B, H, W, 16]. `preact_stages` are the same before the last
ReLU; `embedding` is the bottleneck pooled over H and W. A teacher and a student of the same depth have maps of
the same resolution at every stage, whatever input channels each sees, so FitNet's 1×1 regressor can align
them.
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, batch_norm, conv3x3, global_avg_pool
from kd_jax.models.vgg import max_pool_2x2


class UNet(nn.Module):
  """See the module docstring. `widths[i]` is the channel width of encoder level i (the last: the bottleneck)."""

  num_classes: int
  widths: Tuple[int, ...] = (16, 32, 64)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  def _double(self, x, width: int, train: bool, name: str):
    preact = None
    for j in range(2):
      x = conv3x3(width, 1, self.dtype, self.param_dtype, f"{name}_conv{j}", kernels=self.kernels)(x)
      preact = batch_norm(train, self.dtype, self.param_dtype, f"{name}_bn{j}")(x)
      x = nn.relu(preact)
    return x, preact

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    if x.ndim != 4:
      raise KDJaxError(f"UNet expects NHWC images [B, H, W, C]; got shape {x.shape}.")
    factor = 2 ** (len(self.widths) - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise KDJaxError(f"UNet with {len(self.widths)} levels needs a height and width divisible by {factor}; got "
                       f"{x.shape[1]}×{x.shape[2]}.")
    stages, preacts, skips = [], [], []
    for i, width in enumerate(self.widths):
      if i:
        x = max_pool_2x2(x, train, self.kernels)
      x, preact = self._double(x, width, train, f"enc{i}")
      stages.append(x)
      preacts.append(preact)
      skips.append(x)
    embedding = global_avg_pool(x, train, self.kernels)
    for i in range(len(self.widths) - 2, -1, -1):
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = jnp.concatenate([x, skips[i]], axis=-1)
      x, preact = self._double(x, self.widths[i], train, f"dec{i}")
      stages.append(x)
      preacts.append(preact)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                     conv_general_dilated=self.kernels.conv_general_dilated, name="head")(x)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts), embedding=embedding)


def unet(num_classes: int, *, widths: Sequence[int] = (16, 32, 64), dtype: Any = jnp.float32,
         param_dtype: Any = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> UNet:
  """A U-Net with the given encoder widths (at least two levels)."""
  widths = tuple(int(w) for w in widths)
  if len(widths) < 2 or any(w <= 0 for w in widths):
    raise KDJaxError(f"unet: widths must be at least two positive ints, got {widths!r}.")
  if int(num_classes) < 1:
    raise KDJaxError(f"unet: num_classes must be >= 1, got {num_classes}.")
  return UNet(int(num_classes), widths, dtype, param_dtype, kernels)


def unet_small(num_classes: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
               kernels: Kernels = DEFAULT_KERNELS) -> UNet:
  """Widths (16, 32, 64): the segmentation teacher."""
  return unet(num_classes, widths=(16, 32, 64), dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def unet_tiny(num_classes: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
              kernels: Kernels = DEFAULT_KERNELS) -> UNet:
  """Widths (8, 16, 32): the segmentation student."""
  return unet(num_classes, widths=(8, 16, 32), dtype=dtype, param_dtype=param_dtype, kernels=kernels)
