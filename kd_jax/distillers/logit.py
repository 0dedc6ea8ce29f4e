"""Distillers that read logits: the cross-entropy term and Hinton KD."""

from __future__ import annotations

import dataclasses

from kd_jax import losses
from kd_jax.distillers.base import Distiller


@dataclasses.dataclass(frozen=True)
class CrossEntropy(Distiller):
  """The supervised term `CE(z_s, y)`; reads no teacher. See `kd_jax.losses.cross_entropy`."""

  label_smoothing: float = 0.0
  needs_teacher = False

  def loss(self, variables, student, teacher, batch, *, rng, train, step):
    return losses.cross_entropy(student.logits, batch["label"], label_smoothing=self.label_smoothing), {}, {}


@dataclasses.dataclass(frozen=True)
class KD(Distiller):
  """Hinton KD on logits, `T²·KL(p_t^T || p_s^T)`. See `kd_jax.losses.kd` (arXiv:1503.02531).

  The classic objective `(1−α)·CE + α·KD` is a `WeightedSum` of `CrossEntropy` and this term.
  """

  temperature: float = 4.0
  reduction: str = "batchmean"

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(f"kd: temperature must be > 0, got {self.temperature}.")

  def loss(self, variables, student, teacher, batch, *, rng, train, step):
    value = losses.kd(student.logits, teacher.logits, self.temperature, reduction=self.reduction)
    return value, {}, {}
