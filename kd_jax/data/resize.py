"""MATLAB's bicubic `imresize`, the downscaler that makes the low-resolution images of SR benchmarks.

The LR images of DIV2K, Set5, Set14, B100, Urban100 and Manga109 were made with MATLAB's
`imresize(hr, 1/scale, 'bicubic')` on 8-bit images whose size was first cropped to a multiple of the
scale (`modcrop`). Other bicubic resizers (PIL, OpenCV, `jax.image.resize`) differ in kernel,
antialiasing or border rule, so LR images made with them are not the benchmark's, and PSNR/SSIM measured
on them cannot be compared with the published tables. This module reproduces MATLAB in NumPy float64:

- Kernel: Keys' cubic convolution with a = -0.5,
  `k(t) = 1.5|t|³ - 2.5|t|² + 1` for |t| <= 1, `-0.5|t|³ + 2.5|t|² - 4|t| + 2` for 1 < |t| <= 2, else 0.
- Antialiasing when shrinking (scale s < 1): the kernel is stretched to `s·k(s·t)`, width 4/s.
- Coordinates (1-based, per axis): output pixel x in 1..out samples input position
  `u = x/s + 0.5·(1 - 1/s)`, so that pixel edges line up (0.5 maps to 0.5). The input pixels
  `floor(u - width/2) + 0 .. ceil(width) + 1` contribute with weights `k(u - i)` normalised to sum 1.
- Borders: indices outside 1..in are mirrored with the edge pixel repeated (symmetric padding:
  0 -> 1, -1 -> 2, in+1 -> in), MATLAB's `aux = [1:in, in:-1:1]; indices = aux(mod(indices-1, 2 in) + 1)`.
  Older MATLAB releases clamped instead (replicating the edge pixel); the mirrored rule is that of
  current MATLAB and of BasicSR's port.
- Output size `ceil(in · s)` per axis, or `output_shape` (then s = out/in per axis).
- Separable: one axis, then the other, starting with the axis of the smaller scale factor (MATLAB's
  `dimensionOrder`: `[~, order] = sort(scale)`, a stable sort, so equal scales resize height first).
  In float64 the order changes only rounding; it matters for 8-bit images, which MATLAB rounds back to
  uint8 after each pass: `imresize` here always returns unrounded float64, `bicubic_downscale` does
  MATLAB's two rounded passes.

References: MATLAB Image Processing Toolbox `imresize.m` (`contributions`, `cubic`, `dimensionOrder`);
Keys, "Cubic Convolution Interpolation for Digital Image Processing", IEEE TASSP 29(6), 1981; BasicSR
(XPixelGroup/BasicSR) `basicsr/utils/matlab_functions.py::imresize`, which follows MATLAB but always
resizes height first and computes in float32.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Optional, Tuple

import numpy as np

from kd_jax.errors import KDJaxError

_CUBIC_WIDTH = 4.0  # support of Keys' cubic kernel: [-2, 2]


def _cubic(t: np.ndarray) -> np.ndarray:
  """Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`)."""
  a = np.abs(t)
  a2, a3 = a * a, a * a * a
  near = (1.5 * a3 - 2.5 * a2 + 1.0) * (a <= 1.0)
  far = (-0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0) * ((a > 1.0) & (a <= 2.0))
  return near + far


def _contributions(in_length: int, out_length: int, scale: float,
                   antialias: bool) -> Tuple[np.ndarray, np.ndarray]:
  """Weights [out, P] and 0-based input indices [out, P] of each output pixel along one axis.

  MATLAB's `contributions`: see the module docstring for the formulas. Columns whose weights are all
  zero are kept (they add nothing), unlike MATLAB, which drops them as an optimisation.
  """
  width = _CUBIC_WIDTH
  stretch = scale < 1.0 and antialias
  if stretch:
    width = width / scale
  x = np.arange(1, out_length + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1.0 - 1.0 / scale)
  left = np.floor(u - width / 2.0)
  taps = int(math.ceil(width)) + 2
  indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, may be out of range
  distance = u[:, None] - indices
  # The antialiasing kernel is s·k(s·t); the factor s cancels in the normalisation but is kept for clarity.
  weights = scale * _cubic(scale * distance) if stretch else _cubic(distance)
  weights = weights / weights.sum(axis=1, keepdims=True)
  # Mirror 1-based indices into 1..in with the edge repeated, then make them 0-based.
  period = 2 * in_length
  folded = np.mod(indices.astype(np.int64) - 1, period)
  indices = np.where(folded < in_length, folded, period - 1 - folded)
  return weights, indices


def _resize_axis(image: np.ndarray, axis: int, out_length: int, scale: float, antialias: bool) -> np.ndarray:
  """Resizes float64 `image` along `axis` to `out_length` with the weights of `_contributions`."""
  weights, indices = _contributions(image.shape[axis], out_length, scale, antialias)
  moved = np.moveaxis(image, axis, 0)
  gathered = moved[indices]  # [out, P, ...rest]
  out = np.einsum("op,op...->o...", weights, gathered)
  return np.moveaxis(out, 0, axis)


def imresize(image: np.ndarray, scale: Optional[float] = None, *,
             output_shape: Optional[Tuple[int, int]] = None, antialias: bool = True) -> np.ndarray:
  """MATLAB's `imresize(image, scale, 'bicubic')` (or `imresize(image, output_shape, 'bicubic')`).

  Resizes the height and width of `image` with Keys' cubic kernel (a = -0.5), stretched by 1/scale when
  shrinking with `antialias`, MATLAB's pixel-edge-aligned coordinate mapping `u = x/s + 0.5·(1 - 1/s)`,
  weights normalised to sum 1 and mirrored (symmetric) borders; the axis with the smaller scale factor
  is resized first (height first for equal scales). See the module docstring for the details and
  references.

  Args:
    image: [H, W] or [H, W, C], any real numeric dtype (uint8 images in 0..255, floats in any units).
    scale: one factor for both axes (> 0); the output is `ceil(H·scale) x ceil(W·scale)`. Give either
      `scale` or `output_shape`.
    output_shape: (height, width) of the output; the scale of each axis is then out/in. Use this when
      the exact size matters: `ceil(in·scale)` inherits floating-point error for scales like 0.7.
    antialias: stretch the kernel when shrinking (MATLAB's default, True). No effect when enlarging.

  Returns:
    float64 array [H', W'] or [H', W', C] in the input's value units, neither rounded nor clipped
    (bicubic overshoots slightly near edges). `bicubic_downscale` gives the 8-bit benchmark LR image.
  """
  x = np.asarray(image)
  if x.ndim not in (2, 3) or x.shape[0] < 1 or x.shape[1] < 1:
    raise KDJaxError(f"imresize expects a non-empty [H, W] or [H, W, C] image, got shape {x.shape}.")
  if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
    raise KDJaxError(f"imresize expects a real numeric image (uint8, float, ...), got dtype {x.dtype}; "
                     f"convert it, e.g. image.astype(np.uint8) for a boolean mask.")
  in_shape = x.shape[:2]
  if (scale is None) == (output_shape is None):
    raise KDJaxError("imresize: give exactly one of `scale` (e.g. 1/4 to shrink by 4) or "
                     "`output_shape=(height, width)`.")
  if scale is not None:
    if (isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale)
        or scale <= 0):
      raise KDJaxError(f"imresize: scale must be a finite number > 0 (e.g. 0.25 to shrink by 4), got "
                       f"{scale!r}.")
    scales = (float(scale), float(scale))
    out_shape = tuple(int(math.ceil(float(scale) * n)) for n in in_shape)
  else:
    try:
      out_shape = tuple(operator.index(n) for n in output_shape)
    except TypeError:
      out_shape = ()
    if len(out_shape) != 2 or min(out_shape) < 1:
      raise KDJaxError(f"imresize: output_shape must be two positive integers (height, width), got "
                       f"{output_shape!r}.")
    scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
  out = x.astype(np.float64)
  # MATLAB's dimensionOrder: the axis with the smaller scale first; a stable sort puts height first on ties.
  order = (0, 1) if scales[0] <= scales[1] else (1, 0)
  for axis in order:
    out = _resize_axis(out, axis, out_shape[axis], scales[axis], antialias)
  return out


def _as_scale(scale, name: str) -> int:
  try:
    value = operator.index(scale)
  except TypeError:
    value = 0
  if value < 1:
    raise KDJaxError(f"{name}: scale must be a positive integer (2, 3, 4, ...), got {scale!r}.")
  return value


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
  """Crops the height and width of [H, W] or [H, W, C] `image` down to multiples of `scale`.

  Keeps the top-left corner (drops the last `H mod scale` rows and `W mod scale` columns), as the MATLAB
  benchmark scripts and BasicSR's `mod_crop` do. Returns a view of `image`.
  """
  scale = _as_scale(scale, "modcrop")
  x = np.asarray(image)
  if x.ndim not in (2, 3):
    raise KDJaxError(f"modcrop expects an [H, W] or [H, W, C] image, got shape {x.shape}.")
  h, w = x.shape[0] - x.shape[0] % scale, x.shape[1] - x.shape[1] % scale
  if h == 0 or w == 0:
    raise KDJaxError(f"modcrop: an image of size {x.shape[0]}x{x.shape[1]} is smaller than scale={scale}.")
  return x[:h, :w]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
  """The 8-bit LR image of SR benchmarks: MATLAB's `imresize(hr, 1/scale, 'bicubic')` on a uint8 image.

  This is how the LR images of DIV2K and of Set5/Set14/B100/Urban100/Manga109 were made. The output is
  uint8 of exactly (H/scale) x (W/scale) (x C). It is `clip(round(imresize(hr, 1/scale)), 0, 255)` with
  one refinement that MATLAB makes for integer images: each of the two separable passes returns the
  input's class, so the intermediate image after the first pass (height; both scales are equal) is
  itself rounded and clipped to uint8 before the second pass. The Python ports that match MATLAB on
  uint8 images do the same (fatheral/matlab_imresize `imresizevec`); BasicSR's float `imresize` does
  not, and differs from MATLAB's LR images by one level at a few pixels. Rounding is half away from
  zero, as MATLAB's conversion to uint8 does.

  Args:
    hr: uint8 [H, W, C] (or [H, W]) image whose H and W divide by `scale`; crop it with `modcrop` first.
    scale: the integer downscaling factor (2, 3, 4, ...).
  """
  scale = _as_scale(scale, "bicubic_downscale")
  x = np.asarray(hr)
  if x.dtype != np.uint8:
    raise KDJaxError(f"bicubic_downscale expects a uint8 image in 0..255, got dtype {x.dtype}; for float "
                     f"images use imresize(image, 1 / scale) and quantise as you need.")
  if x.ndim not in (2, 3):
    raise KDJaxError(f"bicubic_downscale expects an [H, W, C] (or [H, W]) image, got shape {x.shape}.")
  h, w = x.shape[:2]
  if h % scale or w % scale or h == 0 or w == 0:
    raise KDJaxError(f"bicubic_downscale: the HR image size {h}x{w} does not divide by scale={scale}; crop it "
                     f"to a multiple of the scale first with modcrop(hr, {scale}) (kd_jax.data.resize.modcrop), "
                     f"as the benchmark scripts do.")
  # (H/scale)/H is the same double as 1/scale, so these are imresize(hr, 1/scale)'s weights, with sizes exact.
  out = x.astype(np.float64)
  for axis, out_length in ((0, h // scale), (1, w // scale)):
    out = _resize_axis(out, axis, out_length, out_length / x.shape[axis], antialias=True)
    out = _to_uint8_levels(out)
  return out.astype(np.uint8)


def _to_uint8_levels(x: np.ndarray) -> np.ndarray:
  """MATLAB's conversion of doubles to uint8 (saturate, round half away from zero), kept as float64."""
  return np.floor(np.clip(x, 0.0, 255.0) + 0.5)


__all__ = ["bicubic_downscale", "imresize", "modcrop"]
