"""Augmentation in JAX, applied once per train step so the teacher and the student see the same view."""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from kd_jax.errors import KDJaxError


def augment(rng: jax.Array, images: jax.Array, *, pad: int = 4, flip: bool = True) -> jax.Array:
  """Per-example random crop after zero padding, then random horizontal flip.

  Each image [H, W, C] of `images` [N, H, W, C] is zero-padded by `pad` pixels on every side and an
  H x W window is cut at an offset drawn uniformly from {0, ..., 2 * pad} in each direction; then it is
  mirrored left-right with probability 1/2. The images are expected to be normalised already, so the
  zero padding is the mean colour. `pad` and `flip` are static; `pad=0, flip=False` returns `images`
  unchanged. Deterministic in `rng`; jit-able with `pad`/`flip` bound.
  """
  try:
    pad = operator.index(pad)
  except TypeError:
    pad = -1
  if pad < 0:
    raise KDJaxError(f"augment pad must be a non-negative integer, got {pad!r}.")
  if pad == 0 and not flip:
    return images
  if images.ndim != 4:
    raise KDJaxError(f"augment wants images of shape [N, H, W, C], got {images.shape}.")
  n, h, w, c = images.shape
  crop_rng, flip_rng = jax.random.split(rng)
  if pad:
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * pad + 1)
    crop = lambda image, offset: jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))
    images = jax.vmap(crop)(padded, offsets)
  if flip:
    mirror = jax.random.bernoulli(flip_rng, 0.5, (n,))
    images = jnp.where(mirror[:, None, None, None], images[:, :, ::-1, :], images)
  return images
