"""Augmentation in JAX, applied once per train step so the teacher and the student see the same view."""

from __future__ import annotations

import operator
from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp

from kd_jax.errors import KDJaxError


def augment(rng: jax.Array, images: jax.Array, *, pad: int = 4, flip: bool = True) -> jax.Array:
  """Per-example random crop after zero padding, then random horizontal flip.

  Each image [H, W, C] of `images` [N, H, W, C] is zero-padded by `pad` pixels on every side and an
  H x W window is cut at an offset drawn uniformly from {0, ..., 2 * pad} in each direction; then it is
  mirrored left-right with probability 1/2. The images are expected to be normalised already, so the
  zero padding is the mean colour. `pad` and `flip` are static; `pad=0, flip=False` returns `images`
  unchanged. Deterministic in `rng`; jit-able with `pad`/`flip` bound. `augment_jointly` applies the same
  crop and flip to an input and its spatial targets.
  """
  return augment_jointly(rng, {"image": images}, pad=pad, flip=flip)["image"]


def augment_jointly(rng: jax.Array, arrays: Mapping[str, jax.Array], *, pad: int = 4, flip: bool = True,
                    scales: Optional[Mapping[str, int]] = None,
                    fill: Optional[Mapping[str, Any]] = None) -> Dict[str, jax.Array]:
  """`augment`'s crop and flip, drawn once per example and applied to every array of `arrays` alike.

  Every array is [N, H·s, W·s, ...] where `s = scales.get(name, 1)`: an input and its segmentation mask
  (s = 1), or a low-resolution input and its high-resolution target (s = the upscaling factor). Offsets
  are drawn on the s = 1 grid, as `augment` draws them, and multiplied by `s`; each array is padded by
  `pad·s` with `fill.get(name, 0)` (an ignore label for masks). Arrays of rank 3 ([N, H, W] masks) are
  handled as rank 4 with one channel. With a single array this is `augment` bit for bit.
  """
  try:
    pad = operator.index(pad)
  except TypeError:
    pad = -1
  if pad < 0:
    raise KDJaxError(f"augment pad must be a non-negative integer, got {pad!r}.")
  arrays = dict(arrays)
  if pad == 0 and not flip:
    return arrays
  scales, fill = dict(scales or {}), dict(fill or {})
  shapes = {}
  for name, x in arrays.items():
    s = scales.get(name, 1)
    if x.ndim not in (3, 4) or x.shape[1] % s or x.shape[2] % s:
      raise KDJaxError(f"augment wants arrays of shape [N, H, W, C] (or [N, H, W]) whose height and width "
                       f"divide by their scale; got {name!r} of shape {x.shape} with scale {s}.")
    shapes[name] = (x.shape[1] // s, x.shape[2] // s)
  if len(set(shapes.values())) != 1:
    raise KDJaxError(f"augment_jointly: the arrays do not cover the same area at their scales: {shapes}.")
  n = next(iter(arrays.values())).shape[0]
  crop_rng, _ = jax.random.split(rng)
  if pad:
    offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * pad + 1)
    for name, x in arrays.items():
      s = scales.get(name, 1)
      squeeze = x.ndim == 3
      x = x[..., None] if squeeze else x
      _, h, w, c = x.shape
      padded = jnp.pad(x, ((0, 0), (pad * s, pad * s), (pad * s, pad * s), (0, 0)),
                       constant_values=fill.get(name, 0))
      crop = lambda image, offset, h=h, w=w, c=c: jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))
      x = jax.vmap(crop)(padded, offsets * s)
      arrays[name] = x[..., 0] if squeeze else x
  if flip:
    mirror = flip_decisions(rng, n)
    for name, x in arrays.items():
      arrays[name] = jnp.where(mirror.reshape((n,) + (1,) * (x.ndim - 1)), x[:, :, ::-1], x)
  return arrays


def flip_decisions(rng: jax.Array, n: int) -> jax.Array:
  """Which of `n` images `augment(rng, images, flip=True, pad=...)` mirrors: [n] bool, whatever `pad` is.

  Exposed so a step that reads cached teacher outputs of both views (original and mirrored) can pick the
  one the augmentation chose without re-running it.
  """
  _, flip_rng = jax.random.split(rng)
  return jax.random.bernoulli(flip_rng, 0.5, (n,))


def partner_within(rng: jax.Array, mask: jax.Array) -> jax.Array:
  """Mixing partners drawn among the masked examples only: a random permutation of the indices where
  `mask` is True, the identity elsewhere. Static shapes, so it runs inside a jitted step whatever the
  subset's size (HE-DA mixes within the high-energy subset of each batch)."""
  n = mask.shape[0]
  big = jnp.asarray(n, jnp.float32)
  # Both orders list the masked indices first; their tails (unmasked, ascending) coincide, so unmasked
  # examples keep themselves as partners.
  in_order = jnp.argsort(jnp.where(mask, jnp.arange(n, dtype=jnp.float32), big + jnp.arange(n)))
  shuffled = jnp.argsort(jnp.where(mask, jax.random.uniform(rng, (n,)), big + jnp.arange(n)))
  return jnp.arange(n).at[in_order].set(shuffled)


def mixup(rng: jax.Array, images: jax.Array, partner: jax.Array, alpha: float = 0.2):
  """MixUp (Zhang et al. 2018, arXiv:1710.09412): `λ·x + (1−λ)·x[partner]`, λ ~ Beta(α, α), one λ per batch.
  Returns `(mixed, λ)`."""
  lam = jax.random.beta(rng, alpha, alpha)
  return lam * images + (1.0 - lam) * images[partner], lam


def _box(rng: jax.Array, h: int, w: int, box_h: jax.Array, box_w: jax.Array) -> jax.Array:
  """[H, W] bool: a box of about `box_h × box_w` pixels around a uniform centre, clipped to the image."""
  y_rng, x_rng = jax.random.split(rng)
  cy, cx = jax.random.randint(y_rng, (), 0, h), jax.random.randint(x_rng, (), 0, w)
  half_h, half_w = (box_h / 2).astype(jnp.int32), (box_w / 2).astype(jnp.int32)
  rows, cols = jnp.arange(h), jnp.arange(w)
  return (((rows >= cy - half_h) & (rows < cy + half_h))[:, None]
          & ((cols >= cx - half_w) & (cols < cx + half_w))[None, :])


def cutmix(rng: jax.Array, images: jax.Array, partner: jax.Array, alpha: float = 1.0):
  """CutMix (Yun et al. 2019, arXiv:1905.04899): paste one box of `x[partner]` into every image.

  λ ~ Beta(α, α); the box has sides `√(1−λ)·(H, W)` around a uniform centre, clipped to the image (one box
  for the whole batch, as the reference implementations do). Returns `(mixed, λ)` with λ recomputed as the
  fraction of each image left unchanged.
  """
  lam_rng, box_rng = jax.random.split(rng)
  _, h, w, _ = images.shape
  cut = jnp.sqrt(1.0 - jax.random.beta(lam_rng, alpha, alpha))
  inside = _box(box_rng, h, w, cut * h, cut * w)
  mixed = jnp.where(inside[None, :, :, None], images[partner], images)
  return mixed, 1.0 - jnp.mean(inside)


def cutout(rng: jax.Array, images: jax.Array, size: int = 8) -> jax.Array:
  """Cutout (DeVries & Taylor 2017, arXiv:1708.04552): zero one `size × size` square (clipped at the border)
  at a uniform centre, the same square for the whole batch as in the R2KD reference."""
  _, h, w, _ = images.shape
  inside = _box(rng, h, w, jnp.asarray(size, jnp.float32), jnp.asarray(size, jnp.float32))
  return jnp.where(inside[None, :, :, None], 0.0, images)
