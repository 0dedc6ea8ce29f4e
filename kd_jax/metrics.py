"""Metrics beyond accuracy: PSNR and SSIM as SR papers report them, and DGKD's error overlap (at the end).

The published numbers of SR methods (EDSR, RCAN, SwinIR, and the KD-for-SR papers that distil them) come
from BasicSR's `basicsr/metrics/psnr_ssim.py` (`calculate_psnr`, `calculate_ssim`, `_ssim`) or the MATLAB
scripts it reproduces. Both evaluate a super-resolved image `sr` against its ground truth `hr` as:

1. Quantise to 8 bits: the network output is clipped to [0, 1], scaled by 255 and rounded
   (`tensor2img` in BasicSR, `im2uint8` in MATLAB), because SR results are saved and judged as 8-bit
   images. A metric on the unrounded output would read ~0.01-0.05 dB off the tables.
2. Convert to luma: `Y = 16 + 65.481 R + 128.553 G + 24.966 B` for RGB in [0, 1], i.e. ITU-R BT.601 as
   MATLAB's `rgb2ycbcr` computes it, giving Y in [16, 235] in 0..255 units. Y is kept as a float, NOT
   rounded back to integers (BasicSR's `to_y_channel` returns "float type without round").
3. Shave `crop_border = scale` pixels from every side (the border of an upscaled image depends on how
   the network pads, so benchmarks ignore it).
4. PSNR = `10·log10(255² / MSE)` per image, with MSE over the remaining pixels (and channels);
   SSIM per Wang et al. 2004 with an 11x11 Gaussian window, σ = 1.5, 'valid' filtering.

Everything here is JAX in float32 and jit-compatible: `scale` and `y_channel` must be static (Python
values), and the shape checks run at trace time. Each metric returns one value per image, shape [N]
float32, so an evaluation step can sum them and the host divides once (the mean over a split is the mean
of per-image values, as the SR tables report it). Images are NHWC floats, nominally in [0, 1].

References:
- Wang, Bovik, Sheikh, Simoncelli, "Image Quality Assessment: From Error Visibility to Structural
  Similarity", IEEE TIP 13(4), 2004 (SSIM; reference MATLAB code ssim_index.m).
- BasicSR (XPixelGroup/BasicSR), `basicsr/metrics/psnr_ssim.py`, `basicsr/metrics/metric_util.py`
  (`to_y_channel`), `basicsr/utils/matlab_functions.py` (`rgb2ycbcr`); conventions above were checked
  against these files.
- ITU-R BT.601: https://en.wikipedia.org/wiki/YCbCr#ITU-R_BT.601_conversion
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.errors import KDJaxError

# BT.601 luma for RGB in [0, 1] -> Y in 0..255 units (MATLAB rgb2ycbcr / BasicSR rgb2ycbcr(y_only=True)).
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0

# SSIM constants of Wang et al. 2004 for an 8-bit dynamic range L = 255: C1 = (K1 L)², C2 = (K2 L)².
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2


def _gaussian_taps(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> np.ndarray:
  """The normalised 1-D Gaussian `g_k ∝ exp(-(k - (size-1)/2)² / (2σ²))`, as cv2.getGaussianKernel(11, 1.5).

  The 2-D window of BasicSR's `_ssim` is `outer(g, g)`, so filtering with it equals filtering rows then
  columns with `g` (separable).
  """
  k = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-(k ** 2) / (2.0 * sigma ** 2))
  return g / g.sum()


# ----------------------------------------------------------------------------------------------------
# Preprocessing.


def quantize(images: jax.Array) -> jax.Array:
  """8-bit quantisation as SR evaluation does it: `round(clip(x, 0, 1) · 255) / 255`.

  Returns float32 values in {0, 1/255, ..., 1}, same shape as `images`. `jnp.round` rounds half to
  even (as NumPy's `.round()` in BasicSR's `tensor2img` does; MATLAB's `im2uint8` rounds half away from
  zero); the two differ only for values exactly halfway between two 8-bit levels.
  """
  x = jnp.asarray(images).astype(jnp.float32)
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0) / 255.0


def rgb_to_y(images: jax.Array) -> jax.Array:
  """BT.601 luma `Y = 16 + 65.481 R + 128.553 G + 24.966 B` of RGB in [0, 1], in 0..255 units, [N, H, W, 1].

  This is MATLAB's `rgb2ycbcr` (and BasicSR's `rgb2ycbcr(img, y_only=True)` scaled by 255): Y lies in
  [16, 235] and is not rounded. Channels must be in RGB order (BasicSR's metrics read BGR images with
  OpenCV and use `bgr2ycbcr`; the result is the same). A 1-channel input is taken as luma already and
  returned as `x · 255`.

  Args:
    images: [N, H, W, 3] RGB or [N, H, W, 1] grey images, floats in [0, 1].
  """
  x = jnp.asarray(images).astype(jnp.float32)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise KDJaxError(f"rgb_to_y expects images of shape [N, H, W, 3] (RGB) or [N, H, W, 1] (grey), got "
                     f"shape {x.shape}.")
  if x.shape[-1] == 1:
    return x * 255.0
  wr, wg, wb = _Y_WEIGHTS
  # An explicit weighted sum rather than a matmul, so that no backend lowers it at reduced precision.
  y = x[..., 0] * wr + x[..., 1] * wg + x[..., 2] * wb + _Y_OFFSET
  return y[..., None]


def shave(images: jax.Array, border: int) -> jax.Array:
  """Removes exactly `border` pixels from every side of [N, H, W, C] images; `border=0` returns them as is.

  Raises KDJaxError if `border` is negative or not an integer, or leaves no pixel.
  """
  border = _as_border(border, "shave")
  x = jnp.asarray(images)
  if x.ndim != 4:
    raise KDJaxError(f"shave expects images of shape [N, H, W, C], got shape {x.shape}.")
  if border == 0:
    return x
  if x.shape[1] <= 2 * border or x.shape[2] <= 2 * border:
    raise KDJaxError(f"shave: a border of {border} pixels per side leaves nothing of images of size "
                     f"{x.shape[1]}x{x.shape[2]}; use larger images or a smaller border.")
  return x[:, border:-border, border:-border, :]


def _as_border(border, name: str) -> int:
  try:
    border = operator.index(border)
  except TypeError:
    raise KDJaxError(f"{name}: the border (scale) must be a non-negative Python integer, got {border!r}; "
                     f"pass it as a static argument when jitting.") from None
  if border < 0:
    raise KDJaxError(f"{name}: the border (scale) must be non-negative, got {border}.")
  return border


def _check(sr, hr, scale, name: str, min_size: int) -> int:
  """Trace-time checks of a metric's arguments; returns `scale` as an int."""
  scale = _as_border(scale, name)
  if not hasattr(sr, "shape") or not hasattr(hr, "shape"):
    raise KDJaxError(f"{name}: sr and hr must be arrays, got {type(sr).__name__} and {type(hr).__name__}.")
  if sr.shape != hr.shape:
    raise KDJaxError(f"{name}: sr and hr must have the same shape, got {sr.shape} and {hr.shape}. "
                     f"Crop hr to sr's size (modcrop) before evaluating.")
  if len(sr.shape) != 4:
    raise KDJaxError(f"{name} expects [N, H, W, C] images, got shape {sr.shape}; add a batch axis for a "
                     f"single image.")
  for label, x in (("sr", sr), ("hr", hr)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise KDJaxError(f"{name}: {label} must be a float array in [0, 1], got dtype {x.dtype}; divide 8-bit "
                       f"images by 255 first.")
  _, h, w, _ = sr.shape
  if h - 2 * scale < min_size or w - 2 * scale < min_size:
    raise KDJaxError(f"{name}: images of size {h}x{w} are too small: after shaving scale={scale} pixels per "
                     f"side at least {min_size}x{min_size} pixels must remain (the SSIM window is "
                     f"{_SSIM_WINDOW}x{_SSIM_WINDOW}); evaluate on larger images.")
  return scale


def _prepare(sr: jax.Array, hr: jax.Array, scale: int, y_channel: bool) -> tuple[jax.Array, jax.Array]:
  """Quantises, converts to 0..255 units (Y if asked and RGB) and shaves `scale` pixels per side."""
  sr, hr = quantize(sr), quantize(hr)
  if y_channel and sr.shape[-1] == 3:
    sr, hr = rgb_to_y(sr), rgb_to_y(hr)
  else:
    sr, hr = sr * 255.0, hr * 255.0
  return shave(sr, scale), shave(hr, scale)


# ----------------------------------------------------------------------------------------------------
# Metrics.


def psnr(sr: jax.Array, hr: jax.Array, *, scale: int, y_channel: bool = True) -> jax.Array:
  """Peak signal-to-noise ratio per image as SR benchmarks report it, [N] float32 in dB.

  `PSNR = 10·log10(255² / MSE)`, `MSE = mean over H, W, C of (Y_sr - Y_hr)²` after quantising both
  images to 8 bits, converting to BT.601 luma Y (0..255 units, unrounded) when `y_channel` and C == 3
  (otherwise all channels, in 0..255 units), and shaving `scale` pixels from every side. This is
  BasicSR's `calculate_psnr(img, img2, crop_border=scale, test_y_channel=True)` on `tensor2img` outputs.

  Identical images give +inf (BasicSR's `calculate_psnr` returns `float('inf')` too), so the mean of
  PSNR over a split that contains such an image is +inf; no epsilon is added, since one would bias every
  other value.

  Args:
    sr: [N, H, W, C] super-resolved images, floats nominally in [0, 1] (clipped before quantising).
    hr: [N, H, W, C] ground truth of the same shape.
    scale: the upscaling factor; also the border shaved per side (0 shaves nothing). Static.
    y_channel: evaluate on the Y channel of RGB images (the SR convention). Static.
  """
  scale = _check(sr, hr, scale, "psnr", min_size=1)
  return _psnr(sr, hr, scale, bool(y_channel))


# Jitted bodies: compiled once per shape when called eagerly (an eager SSIM would dispatch hundreds of
# small ops); inlined when the caller is itself jitted.
@functools.partial(jax.jit, static_argnums=(2, 3))
def _psnr(sr: jax.Array, hr: jax.Array, scale: int, y_channel: bool) -> jax.Array:
  a, b = _prepare(sr, hr, scale, y_channel)
  mse = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
  # 255²/0 = +inf and log10(+inf) = +inf: identical images give +inf without a special case.
  return (10.0 * jnp.log10(255.0 ** 2 / mse)).astype(jnp.float32)


def _filter_valid(x: jax.Array, taps: list[float]) -> jax.Array:
  """Separable 'valid' filtering of [N, H, W, C] with the 1-D `taps` along H then W (no padding).

  Written as a weighted sum of shifted slices rather than a convolution: on accelerators XLA may run a
  float32 convolution in TF32/bf16 passes by default, and SSIM's `E[x²] - E[x]²` cannot afford that.
  """
  k = len(taps)
  h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
  rows = sum(taps[i] * x[:, i:i + h, :, :] for i in range(k))
  return sum(taps[j] * rows[:, :, j:j + w, :] for j in range(k))


def ssim(sr: jax.Array, hr: jax.Array, *, scale: int, y_channel: bool = True) -> jax.Array:
  """Structural similarity (Wang et al. 2004) per image as SR benchmarks report it, [N] float32.

  Same preprocessing as `psnr` (8-bit quantisation, BT.601 Y when `y_channel` and C == 3, `scale` pixels
  shaved per side), then, as BasicSR's `_ssim` (`basicsr/metrics/psnr_ssim.py`) computes it per
  channel x, y in 0..255 units:

    μx = w * x,  σx² = w * x² - μx²,  σxy = w * (x·y) - μx·μy   (w: 11x11 Gaussian, σ = 1.5, sum 1)
    SSIM map = ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2)),
    C1 = (0.01·255)², C2 = (0.03·255)²,

  with 'valid' filtering (no padding: the map is 10 pixels smaller than the shaved image in H and W,
  i.e. BasicSR's `filter2D(...)[5:-5, 5:-5]`), and the result is the mean of the map. For several
  channels (no Y conversion) it is the mean over channels of the per-channel SSIM, as BasicSR's
  `calculate_ssim` does. Identical images give 1.

  Computed in float32. The images are shifted by a per-image, per-channel constant (the mean of `hr`)
  before the second moments are filtered: variances and covariances do not change under a common
  shift, and values near 0 instead of up to 255 keep `E[x²] - E[x]²` from losing digits to cancellation.

  Args:
    sr: [N, H, W, C] super-resolved images, floats nominally in [0, 1]; H, W >= 2·scale + 11.
    hr: [N, H, W, C] ground truth of the same shape.
    scale: the upscaling factor; also the border shaved per side (0 shaves nothing). Static.
    y_channel: evaluate on the Y channel of RGB images (the SR convention). Static.
  """
  scale = _check(sr, hr, scale, "ssim", min_size=_SSIM_WINDOW)
  return _ssim(sr, hr, scale, bool(y_channel))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _ssim(sr: jax.Array, hr: jax.Array, scale: int, y_channel: bool) -> jax.Array:
  x, y = _prepare(sr, hr, scale, y_channel)
  taps = [float(t) for t in _gaussian_taps()]
  shift = jnp.mean(y, axis=(1, 2), keepdims=True)
  xs, ys = x - shift, y - shift
  # The five filtered maps in one pass: [μx, μy, E[x²], E[y²], E[xy]] (shifted), stacked on a new axis.
  moments = jnp.stack([xs, ys, xs * xs, ys * ys, xs * ys], axis=-1)
  n, h, w, c, _ = moments.shape
  margin = _SSIM_WINDOW - 1  # 'valid' filtering loses 5 pixels per side
  filtered = _filter_valid(moments.reshape(n, h, w, c * 5), taps).reshape(n, h - margin, w - margin, c, 5)
  mu_xs, mu_ys = filtered[..., 0], filtered[..., 1]
  sigma_x = filtered[..., 2] - mu_xs * mu_xs
  sigma_y = filtered[..., 3] - mu_ys * mu_ys
  sigma_xy = filtered[..., 4] - mu_xs * mu_ys
  mu_x, mu_y = mu_xs + shift, mu_ys + shift
  numerator = (2.0 * mu_x * mu_y + _SSIM_C1) * (2.0 * sigma_xy + _SSIM_C2)
  denominator = (mu_x * mu_x + mu_y * mu_y + _SSIM_C1) * (sigma_x + sigma_y + _SSIM_C2)
  ssim_map = numerator / denominator
  return jnp.mean(ssim_map, axis=(1, 2, 3)).astype(jnp.float32)


__all__ = ["psnr", "quantize", "rgb_to_y", "shave", "ssim"]


def error_overlap(student_wrong: np.ndarray, others_wrong: np.ndarray) -> dict:
  """How many of the student's test errors its teachers also make (DGKD's "error avalanche" measure).

  Son et al., "Densely Guided Knowledge Distillation using Multiple Teacher Assistants", ICCV 2021,
  arXiv:2009.08825, explain DGKD's gain over TAKD by errors passed down a chain: a student that learns from
  one assistant inherits that assistant's mistakes, one that learns from every larger model less so. The
  paper's exact normalisation is not in the sources kd_jax was built from [assume]; here, with `E_s` the
  examples the student gets wrong and `E_k` those model k gets wrong:
    - `per_model[k] = |E_s ∩ E_k| / |E_s|`, the fraction of the student's errors model k shares;
    - `any = |E_s ∩ ∪_k E_k| / |E_s|` and `all = |E_s ∩ ∩_k E_k| / |E_s|`.
  All are NaN when the student makes no error.

  Args:
    student_wrong: [N] booleans, True where the student's prediction is wrong.
    others_wrong: [K, N] booleans for the K other models (teacher, assistants), same examples.
  """
  student_wrong = np.asarray(student_wrong, bool)
  others_wrong = np.asarray(others_wrong, bool).reshape(-1, student_wrong.shape[0])
  errors = int(student_wrong.sum())
  rate = (lambda shared: float(shared) / errors) if errors else (lambda shared: float("nan"))
  return {"student_errors": errors,
          "per_model": [rate((student_wrong & wrong).sum()) for wrong in others_wrong],
          "any": rate((student_wrong & others_wrong.any(0)).sum()),
          "all": rate((student_wrong & others_wrong.all(0)).sum())}


def ndcg_per_user(scores, relevance, *, k: int = 10, mask=None) -> np.ndarray:
  """NDCG@k of every user (row) [U], NaN for users it is not defined for; see `ndcg_at_k`."""
  scores = np.asarray(scores, np.float64)
  relevance = np.asarray(relevance, np.float64)
  if scores.ndim != 2 or scores.shape != relevance.shape:
    raise KDJaxError(f"ndcg_at_k wants scores and relevance of one shape [users, items]; got {scores.shape} and "
                     f"{relevance.shape}.")
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise KDJaxError(f"ndcg_at_k: k must be a positive integer, got {k!r}.")
  mask = np.ones(scores.shape, bool) if mask is None else np.asarray(mask, bool)
  if mask.shape != scores.shape:
    raise KDJaxError(f"ndcg_at_k: mask has shape {mask.shape}, scores {scores.shape}; they must match.")
  if np.any(~np.isfinite(relevance[mask])) or np.any(relevance[mask] < 0):
    raise KDJaxError("ndcg_at_k: relevance must be finite and >= 0 for every candidate item (mask True); mark "
                     "unknown items False in `mask` instead of giving them NaN.")
  if np.any(np.isnan(scores[mask])):
    raise KDJaxError("ndcg_at_k: scores are NaN for some candidate items.")
  k = min(int(k), scores.shape[1])
  # Non-candidates sort last (score -inf, relevance 0); among equal scores the lower item index ranks first.
  ranked = np.argsort(-np.where(mask, scores, -np.inf), axis=1, kind="stable")[:, :k]
  gains = np.where(mask, relevance, 0.0)
  discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
  dcg = np.sum(np.take_along_axis(gains, ranked, axis=1) * discounts, axis=1)
  idcg = np.sum(-np.sort(-gains, axis=1)[:, :k] * discounts, axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(idcg > 0, dcg / idcg, np.nan)


def ndcg_at_k(scores, relevance, *, k: int = 10, mask=None) -> float:
  """Normalised discounted cumulative gain at k, averaged over users (Järvelin & Kekäläinen, "Cumulated
  Gain-Based Evaluation of IR Techniques", ACM TOIS 20(4), 2002), as explicit-feedback recommender papers
  report it (NDCG@10).

  For user u, the candidate items (`mask[u]` True; all items without a mask) are sorted by `scores[u]`,
  highest first (ties: the lower item index first), and with π_r the item at rank r:

      DCG@k(u) = Σ_{r=1..k} rel(u, π_r) / log2(r + 1),    NDCG@k(u) = DCG@k(u) / IDCG@k(u),

  where the gain is the relevance itself (linear gain, e.g. the rating; not 2^rel − 1) and IDCG@k(u) is the
  DCG of the candidates sorted by their relevance (the ideal ordering). Users whose candidates carry no
  relevance (IDCG = 0: no relevant item, or no candidate) are left out of the mean. Items that must not be
  ranked, such as a user's training items when evaluating on held-out ones, are excluded with `mask`: they
  neither take a rank nor enter the ideal ordering. NaN is returned when no user qualifies.

  Host-side NumPy in float64 (scores and relevance may be NumPy or JAX arrays); not traceable.

  Args:
    scores: [users, items] predicted scores (e.g. predicted ratings).
    relevance: [users, items] graded relevance, finite and >= 0 where `mask` is True (anything elsewhere).
    k: the cut-off, a positive integer (more than the item count means all items).
    mask: [users, items] booleans, True for the items a user's ranking includes; None = all.

  Raises:
    KDJaxError: mismatched shapes, k < 1, NaN or negative relevance (or NaN scores) among candidates.
  """
  per_user = ndcg_per_user(scores, relevance, k=k, mask=mask)
  valid = per_user[~np.isnan(per_user)]
  return float(np.mean(valid)) if valid.size else float("nan")


__all__ += ["ndcg_at_k", "ndcg_per_user"]


# ---------------------------------------------------------------------------------------------------------
# Semantic segmentation: the confusion matrix and the mean intersection over union.


def confusion_matrix(pred_labels, labels, *, num_classes: int, ignore_index: int = 255, weights=None) -> jax.Array:
  """Pixel counts `M[t, p]` of label t predicted as p: [num_classes, num_classes] int32, JAX (jit-able).

  `pred_labels` and `labels` are integer arrays of the same shape (numpy or jax, e.g. [B, H, W]). Pixels whose
  label is `ignore_index`, or any label outside [0, num_classes), count nowhere; so do pixels whose `weights`
  (same shape, or broadcastable to it: 0/1 or bool) is 0, which is how an evaluation batch leaves out its
  padding rows. Counts are integers, so matrices of batches add up exactly to the matrix of the whole split
  (int32: exact up to 2³¹ − 1 pixels per cell). A prediction outside [0, num_classes) counts for its label's
  row nowhere (it cannot be a class; it lowers no IoU denominator).
  """
  num_classes = operator.index(num_classes)
  pred = jnp.asarray(pred_labels).astype(jnp.int32).reshape(-1)
  true = jnp.asarray(labels).astype(jnp.int32).reshape(-1)
  if pred.shape != true.shape:
    raise KDJaxError(f"confusion_matrix: predictions {jnp.shape(pred_labels)} and labels {jnp.shape(labels)} "
                     "must have the same shape.")
  valid = (true != ignore_index) & (true >= 0) & (true < num_classes) & (pred >= 0) & (pred < num_classes)
  if weights is not None:
    valid = valid & (jnp.broadcast_to(jnp.asarray(weights), jnp.shape(labels)).reshape(-1) > 0)
  cell = jnp.where(valid, true * num_classes + pred, 0)
  counts = jnp.zeros((num_classes * num_classes,), jnp.int32).at[cell].add(valid.astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def iou_from_confusion(confusion) -> tuple[float, np.ndarray]:
  """(mIoU, per-class IoU) of a confusion matrix `M[t, p]`: IoU_c = M[c,c] / (Σ_p M[c,p] + Σ_t M[t,c] − M[c,c]).

  A class that appears neither in the labels nor in the predictions (union 0) has IoU NaN and is left out of
  the mean (as mmseg's `nanmean`); mIoU is NaN only when no class appears at all.
  """
  m = np.asarray(confusion, np.float64)
  tp = np.diag(m)
  union = m.sum(axis=0) + m.sum(axis=1) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)
  present = ~np.isnan(iou)
  return (float(np.mean(iou[present])) if present.any() else float("nan")), iou


def mean_iou(pred_labels, labels, *, num_classes: int, ignore_index: int = 255) -> tuple[float, np.ndarray]:
  """Mean intersection over union of a whole split: `(mIoU, per-class IoU [num_classes])`.

  One confusion matrix over every pixel of the split (`confusion_matrix`, pixels labelled `ignore_index`
  excluded), then `iou_from_confusion`: IoU per class from the summed counts, NOT a mean of per-image IoUs.
  Classes absent from both the predictions and the labels have IoU NaN and are excluded from the mean.
  """
  return iou_from_confusion(np.asarray(confusion_matrix(pred_labels, labels, num_classes=num_classes,
                                                        ignore_index=ignore_index)))
