"""Distillers for regression students: the teacher's prediction as a pseudo-label.

The classic objective mixed with the ground truth, `(1 − α)·L(ŷ_s, y) + α·L(ŷ_s, ŷ_t)`, is
`config.loss = {'supervised': {'weight': 1 − α}, 'pseudo_label': {'weight': α, ...}}`: `supervised` is the
regression task's loss on the labeled examples (`kd_jax.tasks.Regression`), this term the teacher's.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from kd_jax import losses
from kd_jax.distillers.base import Distiller, require_positive
from kd_jax.errors import KDJaxError, one_of
from kd_jax.models.outputs import ModelOutput

NORMS = ("l2", "l1")
ON = ("all", "unlabeled")
WEIGHTING = ("none", "ensemble")


@dataclasses.dataclass(frozen=True)
class PseudoLabel(Distiller):
  """`pseudo_label_loss(ŷ_s, mean_k ŷ_k)`: the student regresses onto the teachers' mean prediction.

  See `kd_jax.losses.pseudo_label_loss` (formula, reduction) and `ensemble_confidence`. Predictions are
  compared in the models' units (standardised targets for the regression task), so the teachers must have
  been trained on the student's split (the run checks their recorded target standardisation).

  Attributes:
    norm: 'l2' (squared error, default) or 'l1'.
    on: which examples of the batch carry the term: 'all' (default) or 'unlabeled' (the mask
      1 − batch['labeled'], the semi-supervised reading: ground truth where there is some, the teacher
      elsewhere).
    weighting: 'none' (default) or 'ensemble': each example weighted by the teachers' agreement,
      `exp(−mean_e Var_k(ŷ_k) / tau)` (needs at least 2 teachers: config.teacher.workdir plus
      config.teacher.extra_workdirs).
    tau: the ensemble weighting's scale τ, in squared standardised target units; 0.1 is our choice [assume].
  """

  norm: str = "l2"
  on: str = "all"
  weighting: str = "none"
  tau: float = 0.1

  def __post_init__(self):
    for key, allowed in (("norm", NORMS), ("on", ON), ("weighting", WEIGHTING)):
      if getattr(self, key) not in allowed:
        raise ValueError(f"pseudo_label: {key} must be {one_of(allowed)}, got {getattr(self, key)!r}.")
    require_positive("pseudo_label", tau=self.tau)

  def _predictions(self, teacher) -> jnp.ndarray:
    teachers = (teacher,) if isinstance(teacher, ModelOutput) else tuple(teacher or ())
    if not teachers:
      raise KDJaxError("pseudo_label needs a teacher: set config.teacher.workdir.")
    if self.weighting == "ensemble" and len(teachers) < 2:
      raise KDJaxError(f"pseudo_label: weighting='ensemble' weighs examples by the teachers' disagreement and needs "
                       f"at least 2 teachers, got {len(teachers)}: add config.teacher.extra_workdirs (or set "
                       "weighting='none').")
    return jnp.stack([t.prediction.astype(jnp.float32) for t in teachers])

  def init(self, rng, student, teacher, batch):
    self._predictions(teacher)  # refuses a wrong teacher count before training starts
    return {}

  def loss(self, variables, student, teacher, batch, ctx):
    predictions = self._predictions(teacher)
    metrics = {}
    mask = None
    if self.on == "unlabeled":
      if "labeled" not in batch:
        raise KDJaxError("pseudo_label: on='unlabeled' reads batch['labeled'], which only regression data has; use "
                         "on='all'.")
      mask = 1.0 - batch["labeled"].astype(jnp.float32)
    weights = None
    if self.weighting == "ensemble":
      weights = losses.ensemble_confidence(predictions, self.tau)
      carried = jnp.ones_like(weights) if mask is None else mask
      metrics["confidence"] = jnp.sum(weights * carried) / jnp.maximum(jnp.sum(carried), 1.0)
    value = losses.pseudo_label_loss(student.prediction, jnp.mean(predictions, axis=0), norm=self.norm,
                                     weights=weights, mask=mask)
    return value, metrics, {}
