"""Losses for regression students: pseudo-label distillation (the teacher's prediction as the target) and the
confidence of an ensemble of teachers.

Pure functions of arrays: no Flax, no optax, no config. A prediction is [B, ...] (a vector [B, D] or a dense
map [B, H, W, C]); every loss is a scalar, a (weighted) mean over the examples of per-example means over
their elements.
"""

from __future__ import annotations

from typing import Literal, Optional

import jax
import jax.numpy as jnp

from kd_jax.losses.dtypes import at_least_float32

Norm = Literal["l2", "l1"]


def pseudo_label_loss(student: jax.Array, teacher_targets: jax.Array, *, norm: Norm = "l2",
                      weights: Optional[jax.Array] = None, mask: Optional[jax.Array] = None,
                      eps: float = 1e-8) -> jax.Array:
  """Pseudo-label distillation for regression: the student regresses onto the teacher's predictions.

      e_b = (1/E) Σ_e |s_be − t_be|^p        (p = 2 for norm 'l2', 1 for 'l1'; E elements per example)
      L   = Σ_b w_b m_b e_b / max(Σ_b w_b m_b, eps)

  i.e. the mean over examples, weighted by `weights` w and restricted by `mask` m (both default to 1), of the
  per-example mean squared (or absolute) difference. With w = m = 1 it is the plain MSE (MAE) between the
  two predictions; the normalisation by Σ w m keeps the loss a weighted mean, so the weights set the examples'
  relative importance and the term's overall scale stays that of its config weight (an ensemble that is
  uncertain everywhere still distils at full weight) [assume]. A mask or weights that are all 0 give 0.

  Teacher predictions as regression targets are the generic form of KD for regression and dense prediction
  (METHODS.md item 16): pseudo-labels on unlabeled examples (semi-supervised depth maps, trajectories), and,
  next to the ground-truth loss, the output term of the `(1 − α)·L(y) + α·L(teacher)` objective. The item
  names no single paper or reference code, so the form above is ours [assume].

  Args:
    student: [B, ...] student predictions.
    teacher_targets: [B, ...] the targets (a teacher's prediction, or an ensemble's mean); constants
      (`stop_gradient`).
    norm: 'l2' (squared error, default) or 'l1' (absolute error).
    weights: [B] per-example weights (e.g. `ensemble_confidence`); constants (`stop_gradient`).
    mask: [B] 0/1, which examples carry the term (e.g. 1 − labeled); constants.
    eps: lower bound of the normaliser.
  """
  if student.shape != teacher_targets.shape:
    raise ValueError(f"pseudo_label_loss: student {student.shape} and teacher targets {teacher_targets.shape} "
                     "must have the same shape.")
  if norm not in ("l2", "l1"):
    raise ValueError(f"pseudo_label_loss: norm must be 'l2' or 'l1', got {norm!r}.")
  s = at_least_float32(student)
  t = jax.lax.stop_gradient(at_least_float32(teacher_targets)).astype(s.dtype)
  diff = s - t
  per_element = jnp.square(diff) if norm == "l2" else jnp.abs(diff)
  per_example = jnp.mean(per_element.reshape(per_element.shape[0], -1), axis=1)
  w = jnp.ones_like(per_example)
  if weights is not None:
    w = w * jax.lax.stop_gradient(jnp.asarray(weights, s.dtype))
  if mask is not None:
    w = w * jax.lax.stop_gradient(jnp.asarray(mask, s.dtype))
  return jnp.sum(w * per_example) / jnp.maximum(jnp.sum(w), eps)


def ensemble_confidence(teacher_predictions: jax.Array, tau: float) -> jax.Array:
  """Per-example confidence of an ensemble of K teachers, from their disagreement: [K, B, ...] → [B].

      v_b = (1/E) Σ_e Var_k(t_kbe)      (population variance over the K teachers, mean over elements)
      w_b = exp(−v_b / τ)

  w is 1 where the teachers agree and decays with their variance, τ setting the scale (in squared units
  of the predictions: standardised targets for kd_jax's regression models). The variance of an ensemble's
  predictions as the uncertainty of its mean follows Lakshminarayanan, Pritzel, Blundell, "Simple and
  Scalable Predictive Uncertainty Estimation using Deep Ensembles", NIPS 2017, arXiv:1612.01474; weighting
  pseudo-labels by a decreasing function of it is standard in uncertainty-aware pseudo-labelling; the
  exponential form and τ are our choice [assume]. Constants for the gradient (`stop_gradient`).

  Args:
    teacher_predictions: [K, B, ...] with K ≥ 2.
    tau: τ > 0.
  """
  if teacher_predictions.ndim < 2 or teacher_predictions.shape[0] < 2:
    raise ValueError(f"ensemble_confidence needs the predictions of at least 2 teachers stacked as [K, B, ...]; "
                     f"got shape {teacher_predictions.shape}.")
  if not tau > 0:
    raise ValueError(f"ensemble_confidence: tau must be > 0, got {tau}.")
  p = jax.lax.stop_gradient(at_least_float32(teacher_predictions))
  variance = jnp.var(p, axis=0)
  per_example = jnp.mean(variance.reshape(variance.shape[0], -1), axis=1)
  return jnp.exp(-per_example / tau)
