"""Batch-wise cosine and correlation losses on logits: CSKD (with CSWT) and R2KD.

Pure functions of arrays: no Flax, no optax, no config. Logits are [B, C]; `P = softmax(z / T)` row by row
is then a [B, C] matrix whose *rows* are the per-sample class distributions and whose *columns* are the
"batch predictions" of one class over the samples of the batch. Both methods compare student and teacher
with the absolute, uncentred cosine `|cos(a, b)| = |a·b| / (‖a‖‖b‖ + ε)`, ε = 1e-8, exactly as the two
reference codes write it (ε added to the product of the norms, not a clamp).

Because the column (class-wise) terms compare vectors over the batch, these losses depend on the batch
and its size; with B = 1 a column is a single positive number and its cosine is 1, so the class-wise term
is ~0. The teacher logits are constants for the gradient (`stop_gradient`), as in `kd_jax.losses.kd`.
Logits are promoted to float32 (float64 stays float64, `kd_jax.losses.dtypes`).

Papers:
- CSKD: Ham, Kim, Lee, Lee, Kim, "Cosine Similarity Knowledge Distillation for Individual Class
  Information Transfer", 2023, arXiv:2311.14307. Reference: an author-style mdistiller `CSKD` distiller
  (its `cs_loss`, `cs_loss_mat` and CSWT block), found in a public code index; its repository could not be
  identified, so no link can be given.
- R2KD: Kim, Ham, Cho, Kim, "Robustness-Reinforced Knowledge Distillation with Correlation Distance and
  Network Pruning", IEEE TKDE 2024, arXiv:2311.13934. Reference: github.com/Seonghak35/R2KD,
  `mdistiller/distillers/R2KD.py`, `mdistiller/engine/cfg.py` and `tools/train_ours.py`.
"""

from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple, Union

import jax
import jax.numpy as jnp

from kd_jax.losses.dtypes import at_least_float32

RankMode = Literal["reference", "soft", "none"]

COSINE_EPS = 1e-8  # both reference codes: |a·b| / (‖a‖·‖b‖ + 1e-8)


def _check_shapes(name: str, student_logits: jax.Array, teacher_logits: jax.Array) -> None:
  if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
    raise ValueError(f"{name}: student logits {student_logits.shape} and teacher logits "
                     f"{teacher_logits.shape} must have the same shape [B, C].")


def _prepare(student_logits: jax.Array, teacher_logits: jax.Array) -> Tuple[jax.Array, jax.Array]:
  return (at_least_float32(student_logits),
          at_least_float32(jax.lax.stop_gradient(teacher_logits)))


def abs_cosine_similarity(a: jax.Array, b: jax.Array, *, axis: int = -1,
                          eps: float = COSINE_EPS) -> jax.Array:
  """`|Σ a·b| / (‖a‖₂ ‖b‖₂ + eps)` along `axis` (the reduced axis disappears).

  Uncentred ("Eisen") cosine with the absolute value, as in the CSKD and R2KD reference codes. It is
  invariant to a positive (indeed any non-zero) rescaling of `a` or `b` along the other axes: scaling the
  vectors being compared changes nothing (up to the eps).
  """
  dot = jnp.sum(a * b, axis=axis)
  norms = jnp.linalg.norm(a, axis=axis) * jnp.linalg.norm(b, axis=axis)
  return jnp.abs(dot) / (norms + eps)


def _classwise_cosine_distance(p_s: jax.Array, p_t: jax.Array) -> jax.Array:
  """`1 − (1/C) Σ_j |cos(P_s[:, j], P_t[:, j])|`: columns (one class over the batch)."""
  return 1.0 - jnp.mean(abs_cosine_similarity(p_s, p_t, axis=0))


def _samplewise_cosine_distance(p_s: jax.Array, p_t: jax.Array) -> jax.Array:
  """`1 − (1/B) Σ_i |cos(P_s[i], P_t[i])|`: rows (one sample's class distribution)."""
  return 1.0 - jnp.mean(abs_cosine_similarity(p_s, p_t, axis=1))


# ---------------------------------------------------------------------------------------------------------
# CSKD and CSWT
# ---------------------------------------------------------------------------------------------------------


def cskd(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0, *,
         alpha: float = 2.0) -> jax.Array:
  """CSKD class-wise cosine loss: `α·T²·(1 − (1/C) Σ_j |cos(P_s[:, j], P_t[:, j])|)`.

  Ham, Kim, Lee, Lee, Kim, "Cosine Similarity Knowledge Distillation for Individual Class Information
  Transfer", 2023, arXiv:2311.14307. `P = softmax(z / T)` over classes, row by row; the cosine is taken per
  class *across the batch* (the paper's "batch predictions"), with the absolute value and ε = 1e-8 of the
  reference code. The loss is a batch statistic, not a mean of per-sample terms: it depends on B (with B = 1
  it is ~0), which is why the reference trains with batch 64.

  Defaults follow the reference code's config (the mdistiller `CSKD` distiller named in the module
  docstring): T = 4 (`CSKD.TEMPERATURE`),
  α = 2 (`cs_loss(..., alpha=2.0)`); the distiller's weight next to CE weight 1 is 1 (`KD_WEIGHT`).

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; a constant for the gradient.
    temperature: T > 0, the softening temperature.
    alpha: α, the loss scale inside the term (2 in the reference).
  """
  _check_shapes("cskd", student_logits, teacher_logits)
  zs, zt = _prepare(student_logits, teacher_logits)
  p_s = jax.nn.softmax(zs / temperature, axis=-1)
  p_t = jax.nn.softmax(zt / temperature, axis=-1)
  return alpha * temperature**2 * _classwise_cosine_distance(p_s, p_t)


def cswt_temperatures(student_logits: jax.Array, teacher_logits: jax.Array, *, t_low: float = 2.0,
                      t_high: float = 6.0, eps: float = 1e-6) -> jax.Array:
  """CSWT, cosine-similarity weighted temperature: one temperature per sample, shape [B].

  Ham et al. 2023, arXiv:2311.14307 (CSWT). With `s_i = |cos(softmax(z_s,i), softmax(z_t,i))|` at T = 1
  (rows, ε = 1e-8) and the min/max over the batch,

    `T_i = t_low + (t_high − t_low) · (s_max − s_i) / (s_max − s_min)`,

  so the most similar sample gets exactly `t_low` and the least similar exactly `t_high`: a sample the
  student already matches is sharpened, one it does not is softened. This is the reference code's
  `(high − low)/(s_min − s_max)·(s − s_max) + low`, rearranged. The result is stop-gradiented (the reference
  computes it from detached predictions), so it is a constant for the optimiser.

  Degenerate batch (documented choice; the reference divides by zero there): when `s_max − s_min ≤ eps`
  (all samples equally similar up to float32 round-off, e.g. B = 1 or student == teacher) there is nothing
  to rank, and every sample gets the midpoint `(t_low + t_high) / 2`. `eps = 1e-6` is a few float32 ulps of
  a cosine near 1; pass `eps=0.0` to guard only exact equality.

  Defaults: `t_low = 2`, `t_high = 6` from the reference config (`CSKD.CSWT.LOW_T/HIGH_T`).
  """
  _check_shapes("cswt_temperatures", student_logits, teacher_logits)
  zs, zt = _prepare(student_logits, teacher_logits)
  zs = jax.lax.stop_gradient(zs)
  s = abs_cosine_similarity(jax.nn.softmax(zs, axis=-1), jax.nn.softmax(zt, axis=-1), axis=-1)
  s_max, s_min = jnp.max(s), jnp.min(s)
  spread = s_max - s_min
  degenerate = spread <= eps
  fraction = (s_max - s) / jnp.where(degenerate, 1.0, spread)  # in [0, 1]; exactly 0 at s_max, 1 at s_min
  temperatures = jnp.where(degenerate, 0.5 * (t_low + t_high), t_low + (t_high - t_low) * fraction)
  return jax.lax.stop_gradient(temperatures)


def cskd_cswt(student_logits: jax.Array, teacher_logits: jax.Array, *, t_low: float = 2.0,
              t_high: float = 6.0, alpha: float = 2.0,
              temperatures: Optional[jax.Array] = None) -> jax.Array:
  """CSKD class-wise cosine loss with per-sample CSWT temperatures: `α·(mean_i T_i)²·(1 − (1/C) Σ_j |cos|)`.

  Ham et al. 2023, arXiv:2311.14307. Row i of both student and teacher is softened with its own `T_i`
  (`P[i] = softmax(z_i / T_i)`), then the class-wise (per column, across the batch) absolute cosine of
  `cskd` is taken; the T² factor becomes the squared *mean* temperature, as in the reference `cs_loss_mat`.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; a constant for the gradient.
    t_low, t_high: CSWT range (2 and 6 in the reference config); used when `temperatures` is None.
    alpha: α (2 in the reference).
    temperatures: optional [B] precomputed `T_i` (stop-gradiented). The reference computes them on the
      weak view and reuses them for the strong view; pass them here to do the same.
  """
  _check_shapes("cskd_cswt", student_logits, teacher_logits)
  if temperatures is None:
    temperatures = cswt_temperatures(student_logits, teacher_logits, t_low=t_low, t_high=t_high)
  t = jax.lax.stop_gradient(jnp.asarray(temperatures, jnp.float32))
  if t.shape != student_logits.shape[:1]:
    raise ValueError(f"cskd_cswt: temperatures {t.shape} must have shape [B] = {student_logits.shape[:1]}.")
  zs, zt = _prepare(student_logits, teacher_logits)
  p_s = jax.nn.softmax(zs / t[:, None], axis=-1)
  p_t = jax.nn.softmax(zt / t[:, None], axis=-1)
  return alpha * jnp.mean(t) ** 2 * _classwise_cosine_distance(p_s, p_t)


# ---------------------------------------------------------------------------------------------------------
# The extended CSKD code's extras (not in arXiv:2311.14307): the median-confidence factors and the
# class-class / batch-batch Gram-matrix cosine terms (MLKD-style).
# ---------------------------------------------------------------------------------------------------------


def fraction_at_or_below_median(values: jax.Array) -> jax.Array:
  """`mean_i 1{v_i ≤ median(v)}`, a scalar in (0, 1], for a 1-D `values`.

  The median is numpy's `percentile(v, 50)` (the mean of the two middle values for an even count), as the
  extended CSKD code computes it. For distinct values this is ½ (even count) or (n + 1)/(2n) (odd count);
  ties at the median raise it. Stop-gradiented: a constant for the optimiser.
  """
  v = jax.lax.stop_gradient(jnp.asarray(values))
  if v.ndim != 1:
    raise ValueError(f"fraction_at_or_below_median: values must be 1-D, got shape {v.shape}.")
  return jnp.mean((v <= jnp.median(v)).astype(jnp.float32))


def cskd_confidence_factors(teacher_logits: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """The extended CSKD code's two "50th-percentile confidence mask" factors, `(sample_factor, class_factor)`.

  With `p = softmax(z_t)` (T = 1, weak view): `sample_factor = fraction_at_or_below_median(max_c p_ic)` over
  the B samples, `class_factor = fraction_at_or_below_median(Σ_i p_ic)` over the C classes. In the code the
  masks multiply *scalar* losses and are then averaged (`(cs_loss(...) * mask).mean()`), so each acts as one
  scalar factor (about ½), not as a per-sample selection: `sample_factor` scales the weak view's class-wise
  cosine terms and batch-batch Gram terms, `class_factor` the class-class Gram terms.
  """
  if teacher_logits.ndim != 2:
    raise ValueError(f"cskd_confidence_factors: teacher logits must be [B, C], got {teacher_logits.shape}.")
  p = jax.nn.softmax(at_least_float32(jax.lax.stop_gradient(teacher_logits)), axis=-1)
  return fraction_at_or_below_median(jnp.max(p, axis=-1)), fraction_at_or_below_median(jnp.sum(p, axis=0))


def cskd_gram(student_logits: jax.Array, teacher_logits: jax.Array,
              temperature: Union[float, jax.Array] = 4.0, *, kind: Literal["class", "batch"] = "class") -> jax.Array:
  """Gram-matrix cosine distance of the extended CSKD code: `1 − mean_rows |cos(G_s[r], G_t[r])|`.

  `P = softmax(z / T)` row by row (T a scalar, or a [B] vector of per-sample CSWT temperatures: the code's
  `cc_loss_mat`/`bc_loss_mat`); `G = Pᵀ P` ([C, C], class-class: the code's `cc_loss`) or `G = P Pᵀ`
  ([B, B], batch-batch: `bc_loss`); the absolute uncentred cosine (ε = 1e-8) between corresponding rows of
  the student's and the teacher's G, averaged over rows. No α and no T² factor, as in that code. MLKD-style
  class and batch correlation terms (Jin et al., CVPR 2023); the CSKD paper (arXiv:2311.14307) does not
  have them.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; a constant for the gradient.
    temperature: T > 0, or a [B] array of per-sample temperatures (stop-gradiented).
    kind: "class" (Pᵀ P) or "batch" (P Pᵀ).
  """
  _check_shapes("cskd_gram", student_logits, teacher_logits)
  if kind not in ("class", "batch"):
    raise ValueError(f"cskd_gram: kind must be 'class' or 'batch', got {kind!r}.")
  t = jax.lax.stop_gradient(jnp.asarray(temperature, jnp.float32))
  if t.ndim == 1:
    if t.shape != student_logits.shape[:1]:
      raise ValueError(f"cskd_gram: temperatures {t.shape} must have shape [B] = {student_logits.shape[:1]}.")
    t = t[:, None]
  elif t.ndim != 0:
    raise ValueError(f"cskd_gram: temperature must be a scalar or [B], got shape {t.shape}.")
  zs, zt = _prepare(student_logits, teacher_logits)
  p_s, p_t = jax.nn.softmax(zs / t, axis=-1), jax.nn.softmax(zt / t, axis=-1)
  gram = (lambda p: p.T @ p) if kind == "class" else (lambda p: p @ p.T)
  return 1.0 - jnp.mean(abs_cosine_similarity(gram(p_s), gram(p_t), axis=1))


# ---------------------------------------------------------------------------------------------------------
# R2KD
# ---------------------------------------------------------------------------------------------------------


def _hard_ranks(x: jax.Array) -> jax.Array:
  """Ranks 1..C of each row (smallest → 1), from a double argsort; ties go by index (stable sort).

  Integer-valued and computed under stop_gradient: no gradient flows through them, exactly as the
  reference's `argsort(argsort(.))` has none.
  """
  x = jax.lax.stop_gradient(x)
  return (jnp.argsort(jnp.argsort(x, axis=-1), axis=-1) + 1).astype(jnp.float32)


def soft_ranks(x: jax.Array, strength: float = 10.0) -> jax.Array:
  """Differentiable ranks of each row: `r_i = 1 + Σ_{j≠i} sigmoid(strength·(x_i − x_j))`.

  A pairwise-sigmoid relaxation of the hard rank (smallest → 1, largest → C): as `strength → ∞` it tends to
  `1 + #{j : x_j < x_i}` (ties count ½ each). Costs O(B·C²) memory and time (fine for C = 100; ~1 GB at
  B = 256, C = 1000 in float32).
  """
  diff = x[..., :, None] - x[..., None, :]                      # [..., C, C]: x_i − x_j
  pairwise = jax.nn.sigmoid(strength * diff)
  return 0.5 + jnp.sum(pairwise, axis=-1)                        # the j = i term contributes sigmoid(0) = ½


def _spearman_rows(rank_s: jax.Array, rank_t: jax.Array) -> jax.Array:
  """Per-row Spearman ρ: cosine of the centred ranks (scaled by C(C+1)/2 and ε = 1e-8, as the reference)."""
  c = rank_s.shape[-1]
  scale = c * (c + 1) / 2.0
  rs, rt = rank_s / scale, rank_t / scale
  rs = rs - jnp.mean(rs, axis=-1, keepdims=True)
  rt = rt - jnp.mean(rt, axis=-1, keepdims=True)
  dot = jnp.sum(rs * rt, axis=-1)
  return dot / (jnp.linalg.norm(rs, axis=-1) * jnp.linalg.norm(rt, axis=-1) + COSINE_EPS)


def r2kd_value_loss(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0, *,
                    weight: float = 2.0) -> jax.Array:
  """R2KD value (correlation-distance) loss, rows and columns of the softened probabilities:

    `w·T²·[(1 − mean_i |cos(p_s,i, p_t,i)|) + (1 − mean_j |cos(P_s[:,j], P_t[:,j])|)]`

  Kim, Ham, Cho, Kim, "Robustness-Reinforced Knowledge Distillation with Correlation Distance and Network
  Pruning", IEEE TKDE 2024, arXiv:2311.13934. Absolute *uncentred* (Eisen) cosine between the T-softened
  probabilities: the first term compares rows (samples), the second columns (each class over the batch).
  Default `weight = 2` and T = 4 are the reference's `R2KD.LOSS.VALUE_WEIGHT` and `R2KD.TEMPERATURE`.
  """
  _check_shapes("r2kd", student_logits, teacher_logits)
  zs, zt = _prepare(student_logits, teacher_logits)
  p_s = jax.nn.softmax(zs / temperature, axis=-1)
  p_t = jax.nn.softmax(zt / temperature, axis=-1)
  return weight * temperature**2 * (_samplewise_cosine_distance(p_s, p_t) + _classwise_cosine_distance(p_s, p_t))


def r2kd_rank_loss(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0, *,
                   weight: float = 2.0, rank: RankMode = "reference",
                   soft_rank_strength: float = 10.0) -> jax.Array:
  """R2KD rank loss: `w·(1 − mean_i ρ_i)`, ρ_i the Spearman correlation of row i's class probabilities.

  Kim et al., arXiv:2311.13934. No T² factor (as in the reference). Ranks are 1..C within each row of
  `softmax(z / T)`; ρ_i is the cosine of the centred ranks. Default `weight = 2` is the reference's
  `R2KD.LOSS.RANK_WEIGHT`.

  Args:
    rank: how ranks are made.
      - "reference" (default, faithful): hard ranks from a double argsort. They are piecewise constant, so
        the term has **exactly zero gradient**: it moves nothing and only shows up in the logs, as in the
        reference code. Ties are broken by class index (stable sort); the reference's torch argsort gives
        no such guarantee. Like the reference it ranks the probabilities, so T matters only through
        probabilities that round to equal values in float32.
      - "soft" (a **deviation from the reference**, opt-in): differentiable pairwise-sigmoid ranks
        (`soft_ranks`) of the log-probabilities `log softmax(z / T)`. The log keeps the ranking of the
        probabilities the reference ranks but puts the differences on the logit/T scale, so one strength
        suits any number of classes. Tends to the hard ranks as the strength grows.
      - "none": the term is 0.
    soft_rank_strength: the sigmoid's slope for rank="soft" (10 is our choice, not from the paper).
  """
  _check_shapes("r2kd", student_logits, teacher_logits)
  zs, zt = _prepare(student_logits, teacher_logits)
  if rank == "none":
    return jnp.zeros((), jnp.float32)
  if rank == "reference":
    rank_s = _hard_ranks(jax.nn.softmax(zs / temperature, axis=-1))
    rank_t = _hard_ranks(jax.nn.softmax(zt / temperature, axis=-1))
  elif rank == "soft":
    rank_s = soft_ranks(jax.nn.log_softmax(zs / temperature, axis=-1), soft_rank_strength)
    rank_t = soft_ranks(jax.nn.log_softmax(zt / temperature, axis=-1), soft_rank_strength)
  else:
    raise ValueError(f"r2kd: unknown rank mode {rank!r}; use 'reference', 'soft' or 'none'.")
  return weight * (1.0 - jnp.mean(_spearman_rows(rank_s, rank_t)))


def r2kd(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0, *,
         value_weight: float = 2.0, rank_weight: float = 2.0, rank: RankMode = "reference",
         soft_rank_strength: float = 10.0,
         return_parts: bool = False) -> Union[jax.Array, Tuple[jax.Array, Dict[str, jax.Array]]]:
  """R2KD correlation distance: `L = L_value + L_rank` on one batch.

  Kim, Ham, Cho, Kim, "Robustness-Reinforced Knowledge Distillation with Correlation Distance and Network
  Pruning", IEEE TKDE 2024, arXiv:2311.13934 (reference: Seonghak35/R2KD).

    `L_value = 2·T²·[(1 − mean_i |cos(p_s,i, p_t,i)|) + (1 − mean_j |cos(P_s[:,j], P_t[:,j])|)]`
    `L_rank  = 2·(1 − mean_i ρ_i)`  (Spearman ρ of each row's probabilities)

  with `P = softmax(z / T)`, the absolute uncentred cosine (ε = 1e-8) and T = 4; the weights 2 and 2 and
  T = 4 are the reference config's (`R2KD.LOSS.VALUE_WEIGHT`, `RANK_WEIGHT`, `TEMPERATURE`); R2KD adds this
  to CE with weight 1. By default the rank term has zero gradient (argsort ranks), as in the reference; see
  `r2kd_rank_loss` for `rank="soft"` (a deviation) and `rank="none"`.

  The teacher logits of R2KD are the blend `r2kd_teacher_logits(z_T, z_Tpruned)`, and the full objective
  adds the same loss on an augmented copy of the batch; both are assembled outside this function.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; a constant for the gradient.
    temperature: T > 0.
    value_weight, rank_weight: the weights inside the two terms.
    rank: "reference" | "soft" | "none".
    soft_rank_strength: slope of the soft rank (rank="soft" only).
    return_parts: also return `{"value": L_value, "rank": L_rank}`.
  """
  value = r2kd_value_loss(student_logits, teacher_logits, temperature, weight=value_weight)
  rank_term = r2kd_rank_loss(student_logits, teacher_logits, temperature, weight=rank_weight, rank=rank,
                             soft_rank_strength=soft_rank_strength)
  total = value + rank_term
  if return_parts:
    return total, {"value": value, "rank": rank_term}
  return total


def r2kd_teacher_logits(teacher_logits: jax.Array, pruned_teacher_logits: jax.Array,
                        weight: float = 0.7) -> jax.Array:
  """R2KD's teacher target: `w·z_T + (1 − w)·z_Tpruned`, a blend of logits (not probabilities).

  Kim et al., arXiv:2311.13934: the pruned copy (`kd_jax.compression.pruning.prune_by_magnitude`, 10% per layer, no
  fine-tuning) perturbs the teacher's targets, which the paper credits for making strong augmentation help.
  `w = 0.7` is the reference's `PRUNE.WEIGHT`. In the reference the pruned copy runs in train mode
  (batch-statistics BatchNorm) while the original teacher runs in eval mode (Seonghak35/R2KD: the pruned
  copy is a submodule of the distiller, which mdistiller's `Distiller.train()` puts in train mode; only
  `teacher` is set to eval). Both inputs are constants for the gradient.
  """
  if teacher_logits.shape != pruned_teacher_logits.shape:
    raise ValueError(f"r2kd_teacher_logits: teacher logits {teacher_logits.shape} and pruned-teacher logits "
                     f"{pruned_teacher_logits.shape} must have the same shape.")
  blended = weight * at_least_float32(teacher_logits) + (1.0 - weight) * at_least_float32(pruned_teacher_logits)
  return jax.lax.stop_gradient(blended)
