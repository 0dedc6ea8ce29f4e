"""Distillers that run the models on a mixed or augmented copy of the batch (through `Context.forward`)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.data import cutmix, mixup, partner_within
from kd_jax.distillers.base import Distiller, require_fraction, require_positive
from kd_jax.distillers.logit import with_energy_thresholds
from kd_jax.errors import KDJaxError


@dataclasses.dataclass(frozen=True)
class HEDA(Distiller):
  """HE-DA, high-energy data augmentation: KD on CutMix/MixUp images made only from high-energy samples.

  Kim et al., "Maximizing discrimination capability of knowledge distillation with energy function", KBS
  2024, arXiv:2311.14334; code Seonghak35/EnergyKD `energyAUG.py` [code]. Per batch:
    1. select the samples whose teacher energy `E = −T_E·logsumexp(z_t/T_E)` is above `energy_high` (the
       top `high_fraction` of the training set; 0.5 in the reference configs) or below `energy_low`
       (`low_fraction`, 0 there, so none); the reference also always adds the first `include_first = 2`
       samples of the batch (batches are shuffled, so these are two random samples);
    2. mix within that subset: CutMix (Beta(1, 1)) or MixUp (Beta(0.2, 0.2)), partners drawn from the subset;
    3. return `T²·KL(p_t^T ‖ p_s^T)` on the mixed images, averaged over the subset (no CE on them).
  The reference objective is `0.1·CE + 0.9·KD + 0.9·HE-DA` with T = 4: compose it as a `WeightedSum`.
  The thresholds are filled by `prepare` from a teacher pass over the training data. The reference forwards
  the selected subset alone; here the mixed batch keeps the batch's static shape (unselected samples pass
  through unmixed and are masked out of the loss) and the student's BatchNorm takes its batch statistics
  from the selected rows only (`ctx.forward`'s mask), which gives the selected rows the reference's values
  and running-statistics update. It costs one extra student and teacher forward over the whole batch.
  """

  temperature: float = 4.0
  mix: str = "cutmix"
  cutmix_alpha: float = 1.0
  mixup_alpha: float = 0.2
  energy_temperature: float = 4.0
  low_fraction: float = 0.0
  high_fraction: float = 0.5
  include_first: int = 2
  energy_low: Optional[float] = None
  energy_high: Optional[float] = None

  def __post_init__(self):
    if self.mix not in ("cutmix", "mixup"):
      raise ValueError(f"he_da: mix must be 'cutmix' or 'mixup', got {self.mix!r}.")
    require_positive("he_da", temperature=self.temperature, energy_temperature=self.energy_temperature,
              cutmix_alpha=self.cutmix_alpha, mixup_alpha=self.mixup_alpha)
    require_fraction("he_da", low_fraction=self.low_fraction, high_fraction=self.high_fraction)

  def prepare(self, data):
    # With low_fraction 0 the low threshold is the training set's lowest energy, as in the reference
    # (LOW_RATE = 0), so almost no sample falls below it.
    return with_energy_thresholds(self, data.teacher_logits)

  def selection(self, teacher_logits: jax.Array) -> jax.Array:
    """[B] bool: the samples HE-DA mixes."""
    if self.energy_low is None or self.energy_high is None:
      raise KDJaxError("he_da: energy_low/energy_high are not set; a training run fills them from a teacher "
                       "pass over the training data (Distiller.prepare), or set them in config.loss.")
    energies = losses.energy_score(jax.lax.stop_gradient(teacher_logits), self.energy_temperature)
    selected = (energies > self.energy_high) | (energies < self.energy_low)
    return selected.at[:self.include_first].set(True)

  def loss(self, variables, student, teacher, batch, ctx):
    if ctx.forward is None:
      raise ValueError("he_da runs the models on mixed images and needs Context.forward (the train step "
                       "provides it).")
    selected = self.selection(teacher.logits)
    partner_rng, mix_rng = jax.random.split(ctx.rng)
    partner = partner_within(partner_rng, selected)
    if self.mix == "cutmix":
      mixed, lam = cutmix(mix_rng, batch["image"], partner, self.cutmix_alpha)
    else:
      mixed, lam = mixup(mix_rng, batch["image"], partner, self.mixup_alpha)
    mixed_student, mixed_teacher = ctx.forward(mixed, mask=selected)
    per_example = losses.kd(mixed_student.logits, mixed_teacher.logits, self.temperature, reduction="none")
    weight = selected.astype(jnp.float32)
    value = jnp.sum(per_example * weight) / jnp.maximum(jnp.sum(weight), 1.0)
    return value, {"selected_fraction": jnp.mean(weight), "lambda": lam}, {}
