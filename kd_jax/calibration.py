"""Teacher calibration: temperature scaling, ECE (with its over/under-confident parts), ACE, diagrams.

Why this module exists. Kim, Park, Lee, Kwak, "The Role of Teacher Calibration in Knowledge
Distillation", IEEE Access 2025, arXiv:2508.20224, report that a teacher's calibration error predicts
its student's accuracy far better than the teacher's accuracy does, and that lowering the teacher's
calibration error with a post-hoc calibration method improves KD and the methods built on it.
(No code was published and the exact recalibration procedure could not be confirmed, so kd_jax uses the
reading below: Guo et al.'s temperature scaling of the teacher.)

How it is used (the config switch is added by the training code, not here):

1. After the frozen teacher is loaded, its logits on the **validation split** (carved from the training
   data; the test split is only ever reported) are collected once on the host, and
   `T_cal = fit_temperature(val_logits, val_labels)` is fitted by minimising the NLL of
   `softmax(z_t / T_cal)` (Guo et al. 2017's temperature scaling). The split is a config choice: the
   paper's second possible reading calibrates on the training set, which KD is applied to.
2. With the switch on, every logit distiller sees the *calibrated teacher*: the teacher logits are
   replaced by `z_t / T_cal` before the distiller applies its own temperature, so Hinton KD becomes
   `T_kd² · KL(softmax(z_t / (T_cal·T_kd)) ‖ softmax(z_s / T_kd))`, and DKD, DIST, ... work unchanged
   on top. `T_cal` is a constant (no gradient; the teacher is frozen). Note: a method that standardises
   the teacher logits per example (KD with logit standardisation) cancels any scalar `T_cal`, so there
   the switch changes nothing.
   A fitted `T_cal` at a bound of the search range is no calibration (a split the teacher classifies
   perfectly wants `T → 0`, i.e. one-hot targets): `fit_temperature(..., at_bound="raise")` refuses it and
   the run stops, or keeps `T = 1` and says so in its results (`config.teacher.calibration_at_bound`).
3. The run records the teacher's calibration before and after, e.g.
   `calibration_metrics(val_logits, val_labels)` and
   `calibration_metrics(val_logits, val_labels, temperature=T_cal)` (ECE, its over-/under-confident
   parts, ACE, NLL, accuracy), and may write `reliability_diagram` PNGs of both.

Metrics run once on the host, so everything here is NumPy in float64; inputs may be NumPy or JAX arrays
(any float dtype, bf16 included). Nothing here is jitted or traced.

References:
- Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017,
  arXiv:1706.04599: temperature scaling, ECE with M equal-width confidence bins, reliability diagrams.
- Nixon, Dusenberry, Zhang, Jerfel, Tran, "Measuring Calibration in Deep Learning", CVPR-W 2019,
  arXiv:1904.01685: ACE, class-wise calibration error over adaptive (equal-count) ranges.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from kd_jax.errors import KDJaxError

ArrayLike = Any  # a NumPy or JAX array (anything np.asarray accepts)


class TemperatureAtBoundError(KDJaxError):
  """`fit_temperature(..., at_bound="raise")`: the NLL is minimised at a bound of the search range.

  Such a temperature is an artefact of the range, not a calibration: at the lower bound the held-out split
  is classified perfectly (the NLL keeps falling as T → 0, and dividing by T_min turns the soft targets into
  one-hot labels); at the upper bound the logits carry no information about the labels (T → ∞, uniform
  targets). Attributes: `temperature` (the bound), `bound` ("lower" or "upper"), `accuracy` (of the
  held-out logits) and `num_examples`, for callers that reword the message or fall back to T = 1.
  """

  def __init__(self, message: str, *, temperature: float, bound: str, accuracy: float, num_examples: int):
    super().__init__(message)
    self.temperature, self.bound, self.accuracy, self.num_examples = temperature, bound, accuracy, num_examples


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618..., the golden-section ratio


# ----------------------------------------------------------------------------------------------------
# Input checks and small helpers.


def _as_logits(logits: ArrayLike, name: str = "logits") -> np.ndarray:
  z = np.asarray(logits).astype(np.float64)
  if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 2:
    raise KDJaxError(f"{name}: expected a [N, C] array with N >= 1 examples and C >= 2 classes, "
                     f"got shape {z.shape}.")
  if not np.all(np.isfinite(z)):
    raise KDJaxError(f"{name}: contains NaN or infinite values; check the teacher's forward pass.")
  return z


def _as_probs(probs: ArrayLike, name: str) -> np.ndarray:
  p = _as_logits(probs, f"{name}: probs")
  if np.any(p < 0.0) or np.any(p > 1.0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
    raise KDJaxError(f"{name}: probs must be probabilities in [0, 1] whose rows sum to 1 (got values "
                     f"in [{p.min():.3g}, {p.max():.3g}], row sums in [{p.sum(1).min():.4g}, "
                     f"{p.sum(1).max():.4g}]). If these are logits, pass softmax(logits) instead, or use "
                     f"calibration_metrics(logits, labels).")
  return p


def _as_labels(labels: ArrayLike, num_examples: int, num_classes: int, name: str) -> np.ndarray:
  y = np.asarray(labels)
  if y.shape != (num_examples,):
    raise KDJaxError(f"{name}: labels must have shape [N] = ({num_examples},) to match the "
                     f"[N, C] = ({num_examples}, {num_classes}) predictions, got shape {y.shape}.")
  if not np.issubdtype(y.dtype, np.integer):
    raise KDJaxError(f"{name}: labels must be integer class ids, got dtype {y.dtype}.")
  if y.min() < 0 or y.max() >= num_classes:
    raise KDJaxError(f"{name}: labels must lie in [0, {num_classes}), got values in "
                     f"[{y.min()}, {y.max()}].")
  return y.astype(np.int64)


def _check_num_bins(num_bins: int, name: str) -> int:
  if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
    raise KDJaxError(f"{name}: num_bins must be an integer >= 1, got {num_bins!r}.")
  return int(num_bins)


def _log_softmax(z: np.ndarray) -> np.ndarray:
  """Row-wise log-softmax of a float64 [N, C] array, shifted by the row max for stability."""
  shifted = z - z.max(axis=1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
  """`softmax(z / T)` in float64, row-wise."""
  return np.exp(_log_softmax(_as_logits(logits) / temperature))


def _nll(z: np.ndarray, labels: np.ndarray, temperature: float) -> float:
  """Mean negative log-likelihood `-(1/N) Σ_i log softmax(z_i / T)_{y_i}`."""
  log_p = _log_softmax(z / temperature)
  return float(-np.mean(log_p[np.arange(z.shape[0]), labels]))


# ----------------------------------------------------------------------------------------------------
# Temperature scaling.


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *, init: float = 1.0, max_iter: int = 100,
                    tol: float = 1e-6, t_min: float = 1e-3, t_max: float = 1e3,
                    at_bound: str = "warn") -> float:
  """Temperature scaling: the `T > 0` that minimises the held-out NLL of `softmax(z / T)`.

  `T* = argmin_T  -(1/N) Σ_i log softmax(z_i / T)_{y_i}`

  Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017,
  arXiv:1706.04599, Section 4.2. `T > 1` softens an over-confident model, `T < 1` sharpens an
  under-confident one; dividing by `T` never changes the argmax, so accuracy is unchanged. Fit it on a
  held-out (validation) split, never on the test split.

  Method. The search runs over `u = log T`, so `T` stays positive and a factor-of-ten error in `init`
  costs only a few steps. The NLL is convex in `β = 1/T` (a log-sum-exp of functions linear in β minus
  a linear term), and `u = -log β` is monotone, so the NLL is unimodal in `u`. That makes a bracketing
  search exact and deterministic, with no learning rate to tune: starting at `log(init)`, steps that
  double in length walk downhill until the NLL rises, which brackets the minimiser; golden-section
  search then shrinks the bracket until it is narrower than `tol` (in `log T`, i.e. a relative
  precision of about `tol` on `T`). The search is confined to `[t_min, t_max]`; if the minimum sits at a
  bound (logits that separate the labels perfectly want `T → 0`; logits that carry no information
  want `T → ∞`), the result is the bound, not a calibration: `at_bound` says what happens then. The two
  cases with no minimiser at all are decided exactly before any search: every label holding its row's
  largest logit (the NLL falls all the way to T → 0; numerically it underflows to a flat 0 on which a search
  would stop anywhere), and a non-negative slope `mean_i (mean_c z_ic − z_iy)` of the NLL in β at β = 0 (by
  convexity it never falls, so T → ∞).

  Args:
    logits: [N, C] held-out logits (NumPy or JAX, any float dtype; computed in float64).
    labels: [N] integer class ids.
    init: starting temperature (> 0); any value in `[t_min, t_max]` converges to the same answer.
    max_iter: the most golden-section iterations (each shrinks the bracket by 0.618; ~40 reach 1e-6).
    tol: stop when the bracket on `log T` is narrower than this.
    t_min, t_max: the search range for `T`.
    at_bound: "warn" (default) returns the bound with a `RuntimeWarning`; "raise" raises
      `TemperatureAtBoundError` (a `KDJaxError`), which is what a training run uses
      (`config.teacher.calibration_at_bound`, see `kd_jax.train.teachers.calibrate_teachers`).

  Returns:
    The fitted temperature as a Python float.
  """
  z = _as_logits(logits, "fit_temperature")
  y = _as_labels(labels, z.shape[0], z.shape[1], "fit_temperature")
  if not (0.0 < t_min < t_max) or not math.isfinite(t_max):
    raise KDJaxError(f"fit_temperature: need 0 < t_min < t_max < inf, got t_min={t_min}, t_max={t_max}.")
  if not (init > 0.0 and math.isfinite(init)):
    raise KDJaxError(f"fit_temperature: init must be a finite temperature > 0, got {init}.")
  if max_iter < 1 or not tol > 0.0:
    raise KDJaxError(f"fit_temperature: need max_iter >= 1 and tol > 0, got {max_iter}, {tol}.")
  if at_bound not in ("warn", "raise"):
    raise KDJaxError(f"fit_temperature: at_bound must be 'warn' or 'raise', got {at_bound!r}.")
  if np.all(z == z[:, :1]):
    raise KDJaxError("fit_temperature: every row of logits is constant, so softmax(z / T) is uniform "
                     "for every T and the temperature is undefined.")

  lo, hi = math.log(t_min), math.log(t_max)
  cache: dict[float, float] = {}

  def f(u: float) -> float:
    if u not in cache:
      cache[u] = _nll(z, y, math.exp(u))
    return cache[u]

  label_logit = z[np.arange(z.shape[0]), y]
  if np.all(label_logit >= z.max(axis=1)):
    # Every label holds its row's largest logit: each example's NLL `log Σ_c exp((z_c − z_y)/T)` only falls
    # as T → 0, so there is no minimiser. Decided here, not by the search: in float64 the NLL of confident
    # logits underflows to exactly 0 below some T, and on that flat stretch the search would stop at an
    # arbitrary T inside the range, unnoticed.
    u = lo
  elif np.mean(z.mean(axis=1) - label_logit) >= 0.0:
    # The NLL is convex in β = 1/T with slope mean_i (mean_c z_ic − z_iy) at β = 0: a slope ≥ 0 means it
    # only rises with β, so the infimum is at T → ∞ (the logits say nothing about the labels).
    u = hi
  else:
    a, b = _bracket_unimodal(f, min(max(math.log(init), lo), hi), lo, hi)
    u = _golden_section(f, a, b, max_iter=max_iter, tol=tol)
    # The bracket's end points are candidates too: a minimiser outside the range puts the minimum at a bound.
    u = min((u, a, b), key=f)
  if u - lo < 2 * tol or hi - u < 2 * tol:
    bound = "lower" if u - lo < 2 * tol else "upper"
    accuracy = float(np.mean(z.argmax(axis=1) == y))
    if bound == "upper":
      why = ("the logits carry no information about the labels, so the NLL keeps falling as T → ∞ and T_max "
             "would make the probabilities uniform")
    elif accuracy == 1.0:  # every log-probability of the label → 0 as T → 0: no finite minimiser exists
      why = (f"the logits classify all {len(y)} examples correctly, so the NLL keeps falling as T → 0 and "
             "T_min would turn the probabilities into one-hot labels")
    elif np.all(label_logit >= z.max(axis=1)):  # right up to ties, which argmax breaks against the label
      why = (f"every example's label holds (or ties for) its largest logit, so the NLL keeps falling as T → 0 "
             "and T_min would turn the probabilities into one-hot labels")
    else:  # finite minimiser below t_min: logits on a tiny scale
      why = (f"the NLL still falls at T_min although the logits classify only {accuracy:.1%} of the {len(y)} "
             "examples correctly (logits on a very small scale?), and T_min would make them nearly one-hot")
    message = (f"fit_temperature: the NLL is minimised at the {bound} search bound T = {math.exp(u):.4g} "
               f"(range [{t_min:g}, {t_max:g}]): {why}. These logits give temperature scaling no "
               "information; fit it on a larger or different held-out split.")
    if at_bound == "raise":
      raise TemperatureAtBoundError(message, temperature=float(math.exp(u)), bound=bound, accuracy=accuracy,
                                    num_examples=len(y))
    warnings.warn(message, RuntimeWarning, stacklevel=2)
  return float(math.exp(u))


def _bracket_unimodal(f, u0: float, lo: float, hi: float, step: float = 0.25) -> tuple[float, float]:
  """An interval `[a, b] ⊆ [lo, hi]` that holds the minimiser of a unimodal `f`, found from `u0`.

  Walks downhill with steps that double in length; stops at the first rise (the minimiser lies
  between the point before the last and the new one) or at a bound.
  """
  right = min(u0 + step, hi)
  if right > u0 and f(right) < f(u0):
    direction, prev, cur = 1.0, u0, right  # f decreases to the right: the minimiser is > u0
  else:
    direction, prev, cur = -1.0, right, u0  # f does not decrease to the right: minimiser <= right
  while True:
    if cur == (hi if direction > 0 else lo):
      return min(prev, cur), max(prev, cur)
    step *= 2.0
    nxt = min(max(cur + direction * step, lo), hi)
    if f(nxt) >= f(cur):
      return min(prev, nxt), max(prev, nxt)
    prev, cur = cur, nxt


def _golden_section(f, a: float, b: float, *, max_iter: int, tol: float) -> float:
  """Golden-section search for the minimiser of a unimodal `f` on `[a, b]`; returns the best point."""
  c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
  for _ in range(max_iter):
    if b - a < tol:
      break
    if f(c) <= f(d):
      b, d = d, c
      c = b - _GOLDEN * (b - a)
    else:
      a, c = c, d
      d = a + _GOLDEN * (b - a)
  return min((a, b, c, d), key=f)


# ----------------------------------------------------------------------------------------------------
# Calibration errors.


def _confidence_bins(probs: np.ndarray, labels: np.ndarray,
                     num_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-bin (count, accuracy, mean confidence) of the top-label predictions; empty bins give 0, 0.

  Bin m (0-based) is the right-closed interval `(m/M, (m+1)/M]`, as in Guo et al.'s reference code
  (`conf > lower and conf <= upper`); a confidence of exactly 0 (impossible for a softmax) goes to bin 0.
  """
  confidence = probs.max(axis=1)
  correct = (probs.argmax(axis=1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  # searchsorted(side="left") returns i with edges[i-1] < conf <= edges[i]: the right-closed bin i-1.
  index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
  counts = np.bincount(index, minlength=num_bins).astype(np.float64)
  safe = np.maximum(counts, 1.0)
  accuracy = np.bincount(index, weights=correct, minlength=num_bins) / safe
  mean_conf = np.bincount(index, weights=confidence, minlength=num_bins) / safe
  return counts, accuracy, mean_conf


def ece_split(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> dict[str, float]:
  """Expected calibration error and its over-/under-confident parts, with equal-width bins.

  With top-label confidence `conf_i = max_c p_ic`, prediction `ŷ_i = argmax_c p_ic` (the first index
  on ties) and `M` bins `B_m = {i : conf_i ∈ (m/M, (m+1)/M]}` (right-closed, as in Guo et al.'s
  reference code):

    acc(B_m)  = (1/|B_m|) Σ_{i∈B_m} 1{ŷ_i = y_i}      conf(B_m) = (1/|B_m|) Σ_{i∈B_m} conf_i
    ECE       = Σ_m |B_m|/N · |acc(B_m) − conf(B_m)|
    ECE_over  = Σ_m |B_m|/N · max(conf(B_m) − acc(B_m), 0)    (bins where the model is over-confident)
    ECE_under = Σ_m |B_m|/N · max(acc(B_m) − conf(B_m), 0)    (bins where it is under-confident)

  so `ECE = ECE_over + ECE_under`; empty bins contribute nothing.

  ECE: Naeini et al. 2015, as used by Guo et al., "On Calibration of Modern Neural Networks",
  arXiv:1706.04599, Eq. (3). The split: Kim et al., "The Role of Teacher Calibration in Knowledge
  Distillation", arXiv:2508.20224.

  Args:
    probs: [N, C] predicted probabilities (rows sum to 1; pass softmax(logits), not logits).
    labels: [N] integer class ids.
    num_bins: M >= 1 (15 as in Guo et al. and the teacher-calibration paper).

  Returns:
    `{"ece": ..., "over": ..., "under": ...}` as Python floats, fractions in [0, 1] (not percent).
  """
  num_bins = _check_num_bins(num_bins, "ece")
  p = _as_probs(probs, "ece")
  y = _as_labels(labels, p.shape[0], p.shape[1], "ece")
  counts, accuracy, mean_conf = _confidence_bins(p, y, num_bins)
  weight = counts / p.shape[0]
  gap = mean_conf - accuracy
  over = float(np.sum(weight * np.maximum(gap, 0.0)))
  under = float(np.sum(weight * np.maximum(-gap, 0.0)))
  return {"ece": over + under, "over": over, "under": under}


def ece(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> float:
  """Expected calibration error `Σ_m |B_m|/N · |acc(B_m) − conf(B_m)|`, equal-width right-closed bins.

  See `ece_split` for the exact definitions (top-label confidence, bin convention) and the references.
  Guo et al., "On Calibration of Modern Neural Networks", 2017, arXiv:1706.04599.

  Args:
    probs: [N, C] predicted probabilities (pass softmax(logits), not logits).
    labels: [N] integer class ids.
    num_bins: M >= 1.
  """
  return ece_split(probs, labels, num_bins)["ece"]


def ace(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> float:
  """Adaptive calibration error: class-wise calibration over equal-count ranges.

  Nixon, Dusenberry, Zhang, Jerfel, Tran, "Measuring Calibration in Deep Learning", 2019,
  arXiv:1904.01685:

    ACE = 1/(K·R) Σ_{k=1..K} Σ_{r=1..R} |acc(r, k) − conf(r, k)|

  For each class k, the N predicted probabilities `p_ik` are sorted (stable sort, ties keep the input
  order) and cut into R contiguous ranges with equal numbers of examples; when R does not divide N the
  range sizes differ by one (the first `N mod R` ranges get one more, as `np.array_split` does). In
  range r of class k, `acc(r, k) = mean 1{y_i = k}` and `conf(r, k) = mean p_ik` over its examples.
  Every class and every prediction counts, not just the top label, and every range weighs the same.
  If N < R, each example is its own range (R = N).

  Args:
    probs: [N, C] predicted probabilities (pass softmax(logits), not logits).
    labels: [N] integer class ids.
    num_bins: R >= 1, the number of ranges per class (15 in the teacher-calibration paper's reading).

  Returns:
    ACE as a Python float in [0, 1].
  """
  num_bins = _check_num_bins(num_bins, "ace")
  p = _as_probs(probs, "ace")
  y = _as_labels(labels, p.shape[0], p.shape[1], "ace")
  n, num_classes = p.shape
  is_class = (y[:, None] == np.arange(num_classes)[None, :]).astype(np.float64)
  order = np.argsort(p, axis=0, kind="stable")
  p_sorted = np.take_along_axis(p, order, axis=0)
  y_sorted = np.take_along_axis(is_class, order, axis=0)
  num_ranges = min(num_bins, n)
  sizes = np.full(num_ranges, n // num_ranges) + (np.arange(num_ranges) < n % num_ranges)
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  conf = np.add.reduceat(p_sorted, starts, axis=0) / sizes[:, None]  # [R, K]
  acc = np.add.reduceat(y_sorted, starts, axis=0) / sizes[:, None]
  return float(np.mean(np.abs(acc - conf)))


def calibration_metrics(logits: ArrayLike, labels: ArrayLike, *, temperature: float = 1.0,
                        num_bins: int = 15) -> dict[str, float]:
  """Everything a run logs about a (teacher's) calibration, for `softmax(logits / temperature)`.

  Returns `{"nll", "accuracy", "ece", "ece_over", "ece_under", "ace"}` as Python floats (fractions, not
  percent); `ece*` use `num_bins` equal-width bins (`ece_split`) and `ace` uses `num_bins` equal-count
  ranges per class (`ace`). Call it with `temperature=1` and with the fitted `T_cal` to record the
  teacher before and after temperature scaling.
  """
  z = _as_logits(logits, "calibration_metrics")
  y = _as_labels(labels, z.shape[0], z.shape[1], "calibration_metrics")
  if not (temperature > 0.0 and math.isfinite(temperature)):
    raise KDJaxError(f"calibration_metrics: temperature must be finite and > 0, got {temperature}.")
  probs = np.exp(_log_softmax(z / temperature))
  split = ece_split(probs, y, num_bins)
  return {
      "nll": _nll(z, y, temperature),
      "accuracy": float(np.mean(probs.argmax(axis=1) == y)),
      "ece": split["ece"],
      "ece_over": split["over"],
      "ece_under": split["under"],
      "ace": ace(probs, y, num_bins),
  }


# ----------------------------------------------------------------------------------------------------
# Reliability diagram.


def reliability_diagram(probs: ArrayLike, labels: ArrayLike, path: str | os.PathLike, *,
                        num_bins: int = 15, title: str | None = None) -> str:
  """Writes a reliability diagram with a confidence histogram below it as a PNG; returns the path.

  Top panel (Guo et al. 2017, Fig. 1, bottom row): per-bin accuracy as bars over the M equal-width
  confidence bins used by `ece`, the diagonal of perfect calibration, and the gap between each bin's
  accuracy and its mean confidence shaded (hatched): red above a bar where the bin is over-confident
  (mean confidence > accuracy), green inside it where it is under-confident. The legend gives ECE and
  its over/under split.
  Bottom panel: the fraction of examples per confidence bin, with the mean confidence and the accuracy
  marked. Uses matplotlib's Agg canvas directly (no pyplot, no display, no global backend change).

  Args:
    probs: [N, C] predicted probabilities.
    labels: [N] integer class ids.
    path: the PNG file to write; its parent directory is created if needed.
    num_bins: M >= 1.
    title: optional figure title.
  """
  num_bins = _check_num_bins(num_bins, "reliability_diagram")
  p = _as_probs(probs, "reliability_diagram")
  y = _as_labels(labels, p.shape[0], p.shape[1], "reliability_diagram")
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  counts, accuracy, mean_conf = _confidence_bins(p, y, num_bins)
  split = ece_split(p, y, num_bins)
  width = 1.0 / num_bins
  centers = (np.arange(num_bins) + 0.5) * width
  full = counts > 0

  fig = Figure(figsize=(5.0, 6.5), layout="constrained")
  FigureCanvasAgg(fig)
  top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
  top.bar(centers[full], accuracy[full], width=width, color="tab:blue", edgecolor="black",
          linewidth=0.6, label="Accuracy")
  gap = mean_conf - accuracy
  for side, color, label in ((gap > 0, "tab:red", "Over-confidence gap"),
                             (gap < 0, "tab:green", "Under-confidence gap")):
    shown = full & side
    if np.any(shown):
      top.bar(centers[shown], gap[shown], bottom=accuracy[shown], width=width, color=color, alpha=0.3,
              edgecolor=color, hatch="//", linewidth=0.6, label=label)
  top.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="Perfect calibration")
  top.set_xlim(0.0, 1.0)
  top.set_ylim(0.0, 1.0)
  top.set_ylabel("Accuracy")
  ece_text = (f"ECE = {100 * split['ece']:.2f}%  (over {100 * split['over']:.2f}, "
              f"under {100 * split['under']:.2f})")
  top.legend(loc="best", framealpha=0.9, title=ece_text, title_fontsize="small", fontsize="small")
  if title:
    top.set_title(title)

  bottom.bar(centers, counts / p.shape[0], width=width, color="tab:blue", edgecolor="black",
             linewidth=0.6)
  bottom.axvline(float(p.max(axis=1).mean()), color="tab:red", linestyle="--", label="Mean confidence")
  bottom.axvline(float(np.mean(p.argmax(axis=1) == y)), color="black", linestyle=":", label="Accuracy")
  bottom.set_xlabel("Confidence")
  bottom.set_ylabel("Fraction of examples")
  bottom.legend(loc="best", framealpha=0.9, fontsize="small")

  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format="png", dpi=100)
  return path
