"""Augmentation in JAX, applied once per train step so the teacher and the student see the same view."""

from __future__ import annotations

import operator
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

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


# ---------------------------------------------------------------------------------------------------------
# AutoAugment (Cubuk, Zoph, Mane, Vasudevan, Le, "AutoAugment: Learning Augmentation Strategies from Data",
# CVPR 2019, arXiv:1805.09501), as the R2KD reference applies it (Seonghak35/R2KD,
# `mdistiller/distillers/R2KD.py::autoaug_data`): torchvision's `AutoAugment` (torchvision/transforms/
# autoaugment.py) called once on the whole uint8 batch, so one sub-policy, one pair of apply decisions and
# one pair of signs are drawn per batch and shared by every image.
# ---------------------------------------------------------------------------------------------------------

# Each sub-policy is two (operation, probability, magnitude bin) steps; bins index `_magnitude_bins`.
AUTOAUGMENT_POLICIES = {
    "cifar10": (
        (("invert", 0.1, None), ("contrast", 0.2, 6)), (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
        (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)), (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
        (("autocontrast", 0.5, None), ("equalize", 0.9, None)), (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
        (("color", 0.4, 3), ("brightness", 0.6, 7)), (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
        (("equalize", 0.6, None), ("equalize", 0.5, None)), (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
        (("color", 0.7, 7), ("translate_x", 0.5, 8)), (("equalize", 0.3, None), ("autocontrast", 0.4, None)),
        (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)), (("brightness", 0.9, 6), ("color", 0.2, 8)),
        (("solarize", 0.5, 2), ("invert", 0.0, None)), (("equalize", 0.2, None), ("autocontrast", 0.6, None)),
        (("equalize", 0.2, None), ("equalize", 0.6, None)), (("color", 0.9, 9), ("equalize", 0.6, None)),
        (("autocontrast", 0.8, None), ("solarize", 0.2, 8)), (("brightness", 0.1, 3), ("color", 0.7, 0)),
        (("solarize", 0.4, 5), ("autocontrast", 0.9, None)), (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
        (("autocontrast", 0.9, None), ("solarize", 0.8, 3)), (("equalize", 0.8, None), ("invert", 0.1, None)),
        (("translate_y", 0.7, 9), ("autocontrast", 0.9, None)),
    ),
    "imagenet": (
        (("posterize", 0.4, 8), ("rotate", 0.6, 9)), (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
        (("equalize", 0.8, None), ("equalize", 0.6, None)), (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
        (("equalize", 0.4, None), ("solarize", 0.2, 4)), (("equalize", 0.4, None), ("rotate", 0.8, 8)),
        (("solarize", 0.6, 3), ("equalize", 0.6, None)), (("posterize", 0.8, 5), ("equalize", 1.0, None)),
        (("rotate", 0.2, 3), ("solarize", 0.6, 8)), (("equalize", 0.6, None), ("posterize", 0.4, 6)),
        (("rotate", 0.8, 8), ("color", 0.4, 0)), (("rotate", 0.4, 9), ("equalize", 0.6, None)),
        (("equalize", 0.0, None), ("equalize", 0.8, None)), (("invert", 0.6, None), ("equalize", 1.0, None)),
        (("color", 0.6, 4), ("contrast", 1.0, 8)), (("rotate", 0.8, 8), ("color", 1.0, 2)),
        (("color", 0.8, 8), ("solarize", 0.8, 7)), (("sharpness", 0.4, 7), ("invert", 0.6, None)),
        (("shear_x", 0.6, 5), ("equalize", 1.0, None)), (("color", 0.4, 0), ("equalize", 0.6, None)),
        (("equalize", 0.4, None), ("solarize", 0.2, 4)), (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
        (("invert", 0.6, None), ("equalize", 1.0, None)), (("color", 0.6, 4), ("contrast", 1.0, 8)),
        (("equalize", 0.8, None), ("equalize", 0.6, None)),
    ),
}
# Operations whose magnitude gets a random sign (torchvision's `signed`).
_SIGNED = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
           "sharpness")
# `lax.switch` branch order; "identity" is what a step whose coin says "skip" runs.
AUTOAUGMENT_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
                   "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize", "invert")
NUM_MAGNITUDE_BINS = 10
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's `rgb_to_grayscale` weights


def autoaugment_value(op: str, level: Optional[int], height: int, width: int) -> float:
  """The unsigned argument an AutoAugment step passes to its operation, for magnitude bin `level` (0..9).

  torchvision's `_augmentation_space(10, ...)` followed by `_apply_op`'s conversions: shear `0.3·l/9`
  (the tangent of the shear angle), translation `int(150/331 · size · l/9)` pixels (truncated, as `int()`
  does), rotation `30·l/9` degrees, brightness/color/contrast/sharpness an enhancement factor offset
  `0.9·l/9` (the factor is `1 ± offset`), posterize `8 − round(l/(9/4))` bits, solarize the threshold
  `1 − l/9` on the [0, 1] pixel scale (255 − 255·l/9 on uint8). Operations without a magnitude give 0.
  """
  if op not in AUTOAUGMENT_OPS:
    raise KDJaxError(f"Unknown AutoAugment operation {op!r}; known: {', '.join(AUTOAUGMENT_OPS)}.")
  if level is None or op in ("identity", "autocontrast", "equalize", "invert"):
    return 0.0
  if not 0 <= level < NUM_MAGNITUDE_BINS:
    raise KDJaxError(f"AutoAugment magnitude bins are 0..{NUM_MAGNITUDE_BINS - 1}, got {level}.")
  fraction = level / (NUM_MAGNITUDE_BINS - 1)
  if op in ("shear_x", "shear_y"):
    return 0.3 * fraction
  if op in ("translate_x", "translate_y"):
    return float(int(150.0 / 331.0 * (width if op == "translate_x" else height) * fraction))
  if op == "rotate":
    return 30.0 * fraction
  if op == "posterize":
    return float(8 - int(np.round(level / ((NUM_MAGNITUDE_BINS - 1) / 4))))
  if op == "solarize":
    return 1.0 - fraction
  return 0.9 * fraction  # brightness, color, contrast, sharpness


def _sample_nearest(images: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """`images[:, round(rows), round(cols), :]` with zero fill outside the image (torchvision's nearest
  `grid_sample` with `fill=None`); `rows`, `cols` are [H, W] source coordinates of each output pixel."""
  _, h, w, _ = images.shape
  r, c = jnp.round(rows).astype(jnp.int32), jnp.round(cols).astype(jnp.int32)
  inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
  picked = images[:, jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1), :]
  return jnp.where(inside[None, :, :, None], picked, 0.0)


def _grid(images: jax.Array) -> Tuple[jax.Array, jax.Array]:
  _, h, w, _ = images.shape
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
  return rows, cols


def _shear_x(x, m):
  rows, cols = _grid(x)  # torchvision shears about the top-left corner: x_in = x + m·(y + ½)
  return _sample_nearest(x, rows, cols + m * (rows + 0.5))


def _shear_y(x, m):
  rows, cols = _grid(x)
  return _sample_nearest(x, rows + m * (cols + 0.5), cols)


def _translate_x(x, pixels):
  rows, cols = _grid(x)  # content moves right by `pixels`
  return _sample_nearest(x, rows, cols - pixels)


def _translate_y(x, pixels):
  rows, cols = _grid(x)
  return _sample_nearest(x, rows - pixels, cols)


def _rotate(x, degrees):
  """Counter-clockwise by `degrees` about the image centre (torchvision's `F.rotate`)."""
  _, h, w, _ = x.shape
  rows, cols = _grid(x)
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  theta = jnp.deg2rad(degrees)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  xo, yo = cols - cx, rows - cy
  return _sample_nearest(x, sin * xo + cos * yo + cy, cos * xo - sin * yo + cx)


def _blend(x, other, factor):
  """torchvision's `_blend`: `factor·x + (1 − factor)·other`, clipped to the pixel range."""
  return jnp.clip(factor * x + (1.0 - factor) * other, 0.0, 1.0)


def _grayscale(x):
  if x.shape[-1] == 1:
    return x
  return jnp.sum(x * jnp.asarray(_GRAY, x.dtype), axis=-1, keepdims=True)


def _brightness(x, offset):
  return _blend(x, jnp.zeros_like(x), 1.0 + offset)


def _color(x, offset):
  if x.shape[-1] == 1:  # torchvision leaves one-channel images unchanged
    return x
  return _blend(x, _grayscale(x), 1.0 + offset)


def _contrast(x, offset):
  mean = jnp.mean(_grayscale(x), axis=(1, 2, 3), keepdims=True)
  return _blend(x, mean, 1.0 + offset)


def _sharpness(x, offset):
  """Blend with the image smoothed by [[1, 1, 1], [1, 5, 1], [1, 1, 1]]/13 inside a one-pixel border."""
  _, h, w, _ = x.shape
  if h <= 2 or w <= 2:
    return x
  window = sum(x[:, 1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
  smooth = x.at[:, 1:-1, 1:-1].set((window + 4.0 * x[:, 1:-1, 1:-1]) / 13.0)
  return _blend(x, smooth, 1.0 + offset)


# Added before truncating to a level: float32 denormalisation leaves a level k at k − ~1e-4 at worst, which
# plain truncation would turn into k − 1; a thousandth of a level absorbs that and changes nothing else.
_LEVEL_TOLERANCE = 1e-3


def _levels(x):
  """The 8-bit levels 0..255 the reference's uint8 conversion gives (it truncates `255·x`)."""
  return jnp.clip(jnp.floor(x * 255.0 + _LEVEL_TOLERANCE), 0, 255).astype(jnp.int32)


def _posterize(x, bits):
  step = jnp.exp2(8.0 - bits)
  return jnp.floor(_levels(x) / step) * step / 255.0


def _solarize(x, threshold):
  return jnp.where(x >= threshold, 1.0 - x, x)


def _autocontrast(x, _):
  low = jnp.min(x, axis=(1, 2), keepdims=True)
  high = jnp.max(x, axis=(1, 2), keepdims=True)
  flat = high <= low
  return jnp.where(flat, x, jnp.clip((x - low) / jnp.where(flat, 1.0, high - low), 0.0, 1.0))


def _equalize_channel(levels: jax.Array) -> jax.Array:
  """One channel's equalised levels (torchvision's `_scale_channel`): `step = ⌊(n − n_top)/255⌋` with n_top
  the count of the brightest level present; level v maps to `⌊(cdf(v − 1) + ⌊step/2⌋)/step⌋` (0 for v = 0),
  clipped to 255; nothing changes when step is 0."""
  hist = jnp.bincount(levels, length=256)
  top = jnp.max(levels)
  step = jnp.floor((levels.size - hist[top]) / 255.0)
  safe = jnp.where(step > 0, step, 1.0)
  lut = jnp.floor((jnp.cumsum(hist) + jnp.floor(step / 2.0)) / safe)
  lut = jnp.clip(jnp.concatenate([jnp.zeros((1,), lut.dtype), lut[:-1]]), 0, 255)
  return jnp.where(step > 0, lut[levels], levels)


def _equalize(x, _):
  n, h, w, c = x.shape
  levels = jnp.transpose(_levels(x), (0, 3, 1, 2)).reshape(n * c, h * w)
  out = jax.vmap(_equalize_channel)(levels).reshape(n, c, h, w)
  return jnp.transpose(out, (0, 2, 3, 1)).astype(x.dtype) / 255.0


def _invert(x, _):
  return 1.0 - x


_BRANCHES = {"identity": lambda x, _: x, "shear_x": _shear_x, "shear_y": _shear_y, "translate_x": _translate_x,
             "translate_y": _translate_y, "rotate": _rotate, "brightness": _brightness, "color": _color,
             "contrast": _contrast, "sharpness": _sharpness, "posterize": _posterize, "solarize": _solarize,
             "autocontrast": _autocontrast, "equalize": _equalize, "invert": _invert}


def autoaugment_op(op: str, images: jax.Array, value: float | jax.Array) -> jax.Array:
  """One AutoAugment operation on [N, H, W, C] float images on the [0, 1] pixel scale (1 = 255 in uint8).

  `value` is the signed argument of `autoaugment_value` (angle in degrees, shear tangent, pixels,
  enhancement offset, bits, threshold). Formulas (torchvision's tensor ops, `torchvision/transforms/
  _functional_tensor.py`): invert `1 − x`; solarize `x ≥ t ? 1 − x : x`; posterize keeps the top `bits` bits
  of the 8-bit level; autocontrast maps each image's channel range onto [0, 1]; equalize per image and
  channel on the 8-bit levels (see `_equalize_channel`); brightness, color, contrast and sharpness blend
  with black, the grey image (0.2989 R + 0.587 G + 0.114 B; one-channel images are left alone), the mean
  grey level and the 3×3-smoothed image, by the factor `1 + value`, clipped to [0, 1]; rotate (about the
  centre, counter-clockwise), shear (about the top-left corner) and translate map each output pixel back
  to its nearest source pixel and fill with 0.

  Approximations against the reference, which runs these ops on uint8 images: values stay floats between
  operations (the reference rounds or truncates to 8 bits after each one, an error below 1/255); equalize
  and posterize read the 8-bit levels `⌊255·x + 0.001⌋` (the reference's `mul(255).type(uint8)` truncates;
  the thousandth of a level absorbs float32 round-off of the denormalisation); the
  grey image of color/contrast and the smoothed image of sharpness are not rounded to 8 bits; nearest
  sampling rounds half to even, as `grid_sample` does.
  """
  if op not in _BRANCHES:
    raise KDJaxError(f"Unknown AutoAugment operation {op!r}; known: {', '.join(AUTOAUGMENT_OPS)}.")
  if images.ndim != 4:
    raise KDJaxError(f"AutoAugment wants images of shape [N, H, W, C]; got {images.shape}.")
  return _BRANCHES[op](images, jnp.asarray(value, jnp.float32))


def _policy_tables(policy: str, height: int, width: int):
  """[P, 2] op indices, probabilities, and signed-op flags, and the [P, 2] unsigned values, as numpy."""
  if policy not in AUTOAUGMENT_POLICIES:
    raise KDJaxError(f"Unknown AutoAugment policy {policy!r}; known: {', '.join(sorted(AUTOAUGMENT_POLICIES))}.")
  steps = AUTOAUGMENT_POLICIES[policy]
  ops = np.array([[AUTOAUGMENT_OPS.index(op) for op, _, _ in sub] for sub in steps], np.int32)
  probs = np.array([[p for _, p, _ in sub] for sub in steps], np.float32)
  signed = np.array([[op in _SIGNED for op, _, _ in sub] for sub in steps], bool)
  values = np.array([[autoaugment_value(op, level, height, width) for op, _, level in sub] for sub in steps],
                    np.float32)
  return ops, probs, signed, values


def auto_augment(rng: jax.Array, images: jax.Array, *, policy: str = "cifar10",
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> jax.Array:
  """AutoAugment with one sub-policy per batch, as the R2KD reference applies it.

  Cubuk et al., CVPR 2019, arXiv:1805.09501; the policies are torchvision's `AutoAugmentPolicy.CIFAR10`
  ('cifar10', which the R2KD reference uses on CIFAR-100) and `IMAGENET` (its Tiny-ImageNet choice). From
  `rng`: one sub-policy uniformly among the 25, then for each of its two steps a coin `u ~ U[0, 1)` (the
  step runs when `u ≤ p`) and a sign (each signed magnitude is negated with probability ½); every image of
  the batch gets the same steps, since the reference calls torchvision's transform once on the whole batch
  tensor. The operations are `autoaugment_op` (see there for the formulas and the approximations).

  Args:
    rng: the key for this batch's draw.
    images: [N, H, W, C] float images, normalised `(x − mean)/std` when `mean`/`std` are given (they are
      mapped to the [0, 1] pixel scale, clipped to it, augmented and normalised back, as the reference's
      denormalise / uint8 / normalise round trip), else already on the [0, 1] pixel scale.
    policy: 'cifar10' or 'imagenet'.
    mean, std: per-channel (or one shared) normalisation constants on the [0, 1] pixel scale; both or neither.
  """
  if images.ndim != 4:
    raise KDJaxError(f"auto_augment wants images of shape [N, H, W, C]; got {images.shape}.")
  if (mean is None) != (std is None):
    raise KDJaxError("auto_augment: give both mean and std (the data's normalisation) or neither.")
  ops, probs, signed, values = _policy_tables(policy, images.shape[1], images.shape[2])
  x = images.astype(jnp.float32)
  if mean is not None:
    mean_a, std_a = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    if np.any(np.asarray(std) <= 0):
      raise KDJaxError(f"auto_augment: std must be positive, got {tuple(std)}.")
    x = x * std_a + mean_a
  x = jnp.clip(x, 0.0, 1.0)
  pick_rng, coin_rng, sign_rng = jax.random.split(rng, 3)
  sub = jax.random.randint(pick_rng, (), 0, ops.shape[0])
  coins = jax.random.uniform(coin_rng, (2,))
  negative = jax.random.bernoulli(sign_rng, 0.5, (2,))
  branches = [_BRANCHES[name] for name in AUTOAUGMENT_OPS]
  for step in range(2):
    run = coins[step] <= jnp.asarray(probs)[sub, step]
    value = jnp.asarray(values)[sub, step]
    value = jnp.where(jnp.asarray(signed)[sub, step] & negative[step], -value, value)
    x = jax.lax.switch(jnp.where(run, jnp.asarray(ops)[sub, step], 0), branches, x, value)
  if mean is not None:
    x = (x - mean_a) / std_a
  return x.astype(images.dtype)
