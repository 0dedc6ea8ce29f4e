"""Losses on logits: cross-entropy and Hinton's knowledge distillation.

Pure functions of arrays: no Flax, no optax, no config. Conventions used throughout kd_jax:
logits are [B, C]; a loss is a scalar, averaged over the batch unless a docstring says otherwise.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Reduction = Literal["batchmean", "mean", "none"]


def cross_entropy(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy with integer labels, averaged over the batch.

  `CE = -(1/B) Σ_b Σ_c q_bc log softmax(z_b)_c` with `q = (1-ε)·onehot(y) + ε/C` (ε = label_smoothing).

  Args:
    logits: [B, C] student logits.
    labels: [B] integer class ids.
    label_smoothing: ε in [0, 1); 0 gives the plain cross-entropy.
  """
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if label_smoothing:
    targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.sum(targets * log_p, axis=-1))


def kl_divergence_per_example(student_logits: jax.Array, teacher_logits: jax.Array,
                              temperature: float = 1.0) -> jax.Array:
  """Per-example `KL(p_t^T || p_s^T) = Σ_c p_t log(p_t / p_s)` with `p^T = softmax(z / T)`; shape [B].

  Computed from log-softmax in float32 so that a high temperature or bf16 logits do not lose the small
  probabilities that carry the "dark knowledge".
  """
  log_p_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  log_p_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)


def kd(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0, *,
       reduction: Reduction = "batchmean") -> jax.Array:
  """Hinton knowledge distillation: `T² · KL(softmax(z_t/T) || softmax(z_s/T))`.

  Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015, arXiv:1503.02531.
  The T² factor keeps the gradient magnitude of the soft term comparable across temperatures:
  `∂/∂z_s [T² KL] = T·(p_s^T − p_t^T)` per example, so with the default reduction the gradient is
  `T·(p_s − p_t)/B`.

  The teacher logits are treated as constants (wrapped in `stop_gradient`).

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C].
    temperature: T > 0, the softening temperature.
    reduction: "batchmean" (default, the textbook form used by RepDistiller/mdistiller: sum over classes,
      mean over the batch); "mean" divides by B·C instead, as `torch.nn.KLDivLoss()`'s default does in the
      TAKD and DGKD reference code (C times smaller; use it to reproduce their numbers); "none" returns the
      [B] per-example values (still × T²).
  """
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(f"kd: student logits {student_logits.shape} and teacher logits "
                     f"{teacher_logits.shape} must have the same shape [B, C].")
  per_example = kl_divergence_per_example(
      student_logits, jax.lax.stop_gradient(teacher_logits), temperature) * temperature**2
  if reduction == "batchmean":
    return jnp.mean(per_example)
  if reduction == "mean":
    return jnp.mean(per_example) / student_logits.shape[-1]
  if reduction == "none":
    return per_example
  raise ValueError(f"kd: unknown reduction {reduction!r}; use 'batchmean', 'mean' or 'none'.")
