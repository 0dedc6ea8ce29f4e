"""Feature-map discriminators for online adversarial distillation (AFD) and adversarial feature losses.

Chung, Park, Kim & Kwak, "Feature-map-level Online Adversarial Knowledge Distillation", ICML 2020
(arXiv:2002.01775): each network has a discriminator that tells its own last-stage feature map (fake)
from a peer's (real). No official code was released; the paper describes a small convolutional
discriminator, which this is: blocks of a 3×3 stride-2 convolution, BatchNorm and LeakyReLU(0.2), then a
global average pool and a linear layer to one score per example. A `[B, D]` feature is read as a 1×1 map.
"""

from __future__ import annotations

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.models.resnet_cifar import Dtype


class FeatureDiscriminator(nn.Module):
  """Scores [B] (unbounded; least-squares GAN losses read them directly) for feature maps [B, H, W, C].

  Attributes:
    widths: output channels of each conv block, input side first.
    negative_slope: LeakyReLU slope (0.2 as in DCGAN-style discriminators).
  """

  widths: Tuple[int, ...] = (64, 128)
  negative_slope: float = 0.2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.reshape(x.shape[0], 1, 1, -1) if x.ndim == 2 else x
    for i, width in enumerate(self.widths):
      x = nn.Conv(width, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                  param_dtype=self.param_dtype, conv_general_dilated=self.kernels.conv_general_dilated,
                  name=f"conv{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"bn{i}")(x)
      x = nn.leaky_relu(x, self.negative_slope)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype, name="score")(x)[:, 0].astype(jnp.float32)


class TransferLayer(nn.Module):
  """A 1×1 convolution to `features` channels: maps networks' feature maps of different widths to one width
  before they meet a discriminator (AFD's transfer layer). `[B, D]` features go through a linear map.

  No bias: the discriminator's first convolution feeds BatchNorm, which removes any constant offset, so a
  bias here would get only rounding noise as its gradient (which Adam would turn into steps)."""

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim == 2:
      return nn.Dense(self.features, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                      name="linear")(x)
    return nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                   conv_general_dilated=self.kernels.conv_general_dilated, name="conv")(x)


def feature_discriminator(widths: Tuple[int, ...] = (64, 128), dtype: Any = jnp.float32,
                          param_dtype: Any = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> FeatureDiscriminator:
  return FeatureDiscriminator(tuple(widths), dtype=dtype, param_dtype=param_dtype, kernels=kernels)
