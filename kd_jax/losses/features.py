"""Losses on intermediate features. Pure functions of arrays; NHWC features, [B, D] embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fitnet(student_feature: jax.Array, teacher_feature: jax.Array) -> jax.Array:
  """FitNet hint loss: mean squared error between the regressed student feature and the teacher's.

  Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, arXiv:1412.6550.
  `L = (1/N) Σ (r(f_s) − f_t)²` averaged over every element (batch, space and channels), as
  `nn.MSELoss()` does in RepDistiller's `HintLoss`; the paper writes ½·‖·‖² summed per example, which is
  the same up to a constant factor absorbed by the loss weight (RepDistiller uses weight 100).

  Args:
    student_feature: the student feature *after* its regressor r, same shape as the teacher's.
    teacher_feature: the teacher's hint feature; treated as a constant (stop_gradient).
  """
  if student_feature.shape != teacher_feature.shape:
    raise ValueError(f"fitnet: regressed student feature {student_feature.shape} must match the teacher "
                     f"feature {teacher_feature.shape}; pass the student feature through a regressor.")
  diff = student_feature.astype(jnp.float32) - jax.lax.stop_gradient(teacher_feature).astype(jnp.float32)
  return jnp.mean(jnp.square(diff))
