"""Distillers that read logits: cross-entropy, Hinton KD, DKD, DIST, LS-KD, Energy KD, ensemble KD, DGKD, NKD,
TTM and WTTM, and the task's own supervised loss.

Each reads `class_rows(out.logits)`: classification logits [B, C] as they are, per-pixel logits
[B, H, W, C] with every pixel as an example (their means then run over pixels and batch).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import losses
from kd_jax.distillers.base import Distiller, class_rows, label_rows, require_fraction, require_positive
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.tasks import get_task


@dataclasses.dataclass(frozen=True)
class CrossEntropy(Distiller):
  """The supervised term `CE(z_s, y)`; reads no teacher. See `kd_jax.losses.cross_entropy`."""

  label_smoothing: float = 0.0
  needs_teacher = False

  def loss(self, variables, student, teacher, batch, ctx):
    return losses.cross_entropy(class_rows(student.logits), label_rows(batch["label"]),
                                label_smoothing=self.label_smoothing), {}, {}


@dataclasses.dataclass(frozen=True)
class Supervised(Distiller):
  """The task's supervised loss on the student's prediction (`ctx.task.loss`): cross-entropy for
  classification, mean squared error for ratings, L2 or L1 on the labeled examples for regression, L1 for
  super-resolution; reads no teacher. `ce` is the classification one with
  label smoothing as an option."""

  needs_teacher = False

  def loss(self, variables, student, teacher, batch, ctx):
    task = ctx.task or get_task("classification")
    return task.loss(student.prediction, batch), {}, {}


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

  def loss(self, variables, student, teacher, batch, ctx):
    value = losses.kd(class_rows(student.logits), class_rows(teacher.logits), self.temperature, reduction=self.reduction)
    return value, {}, {}


def with_energy_thresholds(distiller, teacher_train_logits):
  """`distiller` with `energy_low`/`energy_high` filled from the teacher's energies over the training data.

  The reference's `cal_energy` pass, here over every training example, un-augmented, so it is
  deterministic: `energy_thresholds(energy_score(z_t, T_E), low_fraction, high_fraction)`.
  """
  if distiller.energy_low is not None and distiller.energy_high is not None:
    return distiller
  energies = np.asarray(losses.energy_score(teacher_train_logits(), distiller.energy_temperature))
  low, high = losses.energy_thresholds(energies, distiller.low_fraction, distiller.high_fraction)
  return dataclasses.replace(distiller, energy_low=float(low), energy_high=float(high))


@dataclasses.dataclass(frozen=True)
class DKD(Distiller):
  """Decoupled KD, `min(epoch / warmup_epochs, 1) · (α·TCKD + β·NCKD)·T²`. See `kd_jax.losses.dkd`
  (arXiv:2203.08679); every default is mdistiller's `CFG.DKD` (megvii-research/mdistiller,
  `mdistiller/engine/cfg.py`): α 1, β 8, T 4, CE weight 1 (a separate `ce` term here) and `WARMUP` 20 epochs.

  The warm-up follows mdistiller exactly (`DKD.forward_train`: `min(kwargs["epoch"] / self.warmup, 1.0)`):
  `epoch` is 1-based and constant within an epoch, so the first epoch is weighted 1/warmup_epochs and epoch
  `warmup_epochs` onwards 1. The 20 epochs belong to mdistiller's 240-epoch CIFAR-100 schedule: a run of
  fewer than 20 epochs never reaches the full DKD weight, so scale it to a shorter schedule
  (`experiments/digits_dkd.py` sets 3 of 30 epochs); 0 turns the warm-up off.
  """

  alpha: float = 1.0
  beta: float = 8.0
  temperature: float = 4.0
  warmup_epochs: float = 20.0  # mdistiller CFG.DKD.WARMUP

  def __post_init__(self):
    require_positive("dkd", temperature=self.temperature)
    if self.alpha < 0 or self.beta < 0:
      raise ValueError(f"dkd: alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}.")
    if self.warmup_epochs < 0:
      raise ValueError(f"dkd: warmup_epochs must be >= 0, got {self.warmup_epochs}.")

  def warmup_factor(self, epoch) -> jax.Array:
    if not self.warmup_epochs:
      return jnp.ones((), jnp.float32)
    return jnp.minimum(jnp.asarray(epoch, jnp.float32) / self.warmup_epochs, 1.0)

  def loss(self, variables, student, teacher, batch, ctx):
    zs, zt, labels = class_rows(student.logits), class_rows(teacher.logits), label_rows(batch["label"])
    tckd, nckd = losses.dkd_parts(zs, zt, labels=labels, temperature=self.temperature)
    t2 = self.temperature**2
    factor = self.warmup_factor(ctx.epoch)
    value = factor * losses.dkd(zs, zt, labels=labels, alpha=self.alpha,
                                beta=self.beta, temperature=self.temperature)
    return value, {"tckd": t2 * jnp.mean(tckd), "nckd": t2 * jnp.mean(nckd), "warmup": factor}, {}


@dataclasses.dataclass(frozen=True)
class DIST(Distiller):
  """DIST, `T²·(β·L_inter + γ·L_intra)` with Pearson-correlation relation losses. See `kd_jax.losses.dist`
  (arXiv:2205.10536). Defaults β = γ = T = 1 are the official ImageNet setting; CIFAR-100 uses T = 4."""

  beta: float = 1.0
  gamma: float = 1.0
  temperature: float = 1.0

  def __post_init__(self):
    require_positive("dist", temperature=self.temperature)
    if self.beta < 0 or self.gamma < 0:
      raise ValueError(f"dist: beta and gamma must be >= 0, got beta={self.beta}, gamma={self.gamma}.")

  def loss(self, variables, student, teacher, batch, ctx):
    return losses.dist(class_rows(student.logits), class_rows(teacher.logits), beta=self.beta, gamma=self.gamma,
                       temperature=self.temperature), {}, {}


@dataclasses.dataclass(frozen=True)
class LogitStandardizedKD(Distiller):
  """KD on per-sample Z-scored logits, `T²·KL(softmax(Z(z_t)/T) || softmax(Z(z_s)/T))`.
  See `kd_jax.losses.logit_standardized_kd` (arXiv:2403.01427); the reference recipe is
  `0.1·CE + 9·LS-KD` at T = 2."""

  temperature: float = 2.0
  eps: float = 1e-7

  def __post_init__(self):
    require_positive("ls_kd", temperature=self.temperature)
    if self.eps < 0:
      raise ValueError(f"ls_kd: eps must be >= 0, got {self.eps}.")

  def loss(self, variables, student, teacher, batch, ctx):
    return losses.logit_standardized_kd(class_rows(student.logits), class_rows(teacher.logits), self.temperature, eps=self.eps), {}, {}


@dataclasses.dataclass(frozen=True)
class EnergyKD(Distiller):
  """Energy KD: per-sample temperature chosen by the teacher's energy. See `kd_jax.losses.energy_kd`
  (Kim et al., KBS 2024, arXiv:2311.14334; code Seonghak35/EnergyKD).

  `energy_low`/`energy_high` are the thresholds of the teacher's energies (`energy_temperature` = T_E) over
  the training set, computed once before training with `kd_jax.losses.energy_thresholds(energies,
  low_fraction, high_fraction)`; the fractions are fields here so the loop that fills the thresholds reads
  them from the distiller (reference: 0.2/0.2; 0.3/0.3 for resnet56→resnet20). The distiller refuses to run
  without them.

  Temperature defaults follow the paper's stated rule (low energy → 6, middle 4, high energy → 2); the
  reference code's defaults are `low_energy_temperature=2.0, high_energy_temperature=6.0` (Seonghak35/EnergyKD
  `mdistiller/engine/cfg.py`, `energyKD.T.LOW/HIGH`). The reference objective is `0.1·CE + 0.9·energy_kd`.
  """

  energy_low: Optional[float] = None
  energy_high: Optional[float] = None
  temperature: float = 4.0
  low_energy_temperature: float = 6.0
  high_energy_temperature: float = 2.0
  energy_temperature: float = 4.0
  low_fraction: float = 0.2
  high_fraction: float = 0.2

  def __post_init__(self):
    require_positive("energy_kd", temperature=self.temperature, low_energy_temperature=self.low_energy_temperature,
              high_energy_temperature=self.high_energy_temperature, energy_temperature=self.energy_temperature)
    require_fraction("energy_kd", low_fraction=self.low_fraction, high_fraction=self.high_fraction)
    if (self.energy_low is not None and self.energy_high is not None
        and not float(self.energy_low) <= float(self.energy_high)):
      raise ValueError(f"energy_kd: energy_low ({self.energy_low}) must be <= energy_high ({self.energy_high}); "
                       "lower low_fraction/high_fraction so the two groups do not overlap.")

  def prepare(self, data):
    return with_energy_thresholds(self, data.teacher_logits)

  def _check_thresholds(self):
    if self.energy_low is None or self.energy_high is None:
      raise KDJaxError(
          "energy_kd: energy_low and energy_high are not set. A training run fills them from a pass of the "
          "teacher over the training data (Distiller.prepare). They are thresholds of the teacher's energy "
          f"score (T_E = {self.energy_temperature}); to set them yourself compute "
          "kd_jax.losses.energy_thresholds(kd_jax.losses.energy_score(teacher_logits, "
          f"{self.energy_temperature}), {self.low_fraction}, {self.high_fraction}) and set them in the config "
          "(config.loss.<term>.energy_low / energy_high).")

  def init(self, rng, student, teacher, batch):
    self._check_thresholds()
    return {}

  def loss(self, variables, student, teacher, batch, ctx):
    self._check_thresholds()
    zs, zt = class_rows(student.logits), class_rows(teacher.logits)
    value = losses.energy_kd(
        zs, zt, energy_low=self.energy_low, energy_high=self.energy_high,
        temperature=self.temperature, low_energy_temperature=self.low_energy_temperature,
        high_energy_temperature=self.high_energy_temperature, energy_temperature=self.energy_temperature)
    energies = losses.energy_score(jax.lax.stop_gradient(zt), self.energy_temperature)
    metrics = {"low_energy_fraction": jnp.mean(energies < self.energy_low),
               "high_energy_fraction": jnp.mean(energies > self.energy_high)}
    return value, metrics, {}


@dataclasses.dataclass(frozen=True)
class EnsembleKD(Distiller):
  """KD from several teachers' averaged softened outputs (Hinton et al. 2015). See `losses.ensemble_kd`.

  `teacher` is a tuple of `ModelOutput`s (the loop passes one per teacher workdir); a single `ModelOutput`
  is accepted and gives plain KD. `weights`, if given, has one entry per teacher.
  """

  temperature: float = 4.0
  average: str = "probs"
  weights: Optional[Tuple[float, ...]] = None

  def __post_init__(self):
    require_positive("ensemble_kd", temperature=self.temperature)
    if self.average not in ("probs", "logits"):
      raise ValueError(f"ensemble_kd: average must be 'probs' or 'logits', got {self.average!r}.")
    if self.weights is not None:
      weights = tuple(float(w) for w in self.weights)
      if not weights or any(w < 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"ensemble_kd: weights must be non-negative with a positive sum, got {weights}.")
      object.__setattr__(self, "weights", weights)

  def loss(self, variables, student, teacher, batch, ctx):
    teachers = (teacher,) if isinstance(teacher, ModelOutput) else tuple(teacher)
    if self.weights is not None and len(self.weights) != len(teachers):
      raise ValueError(f"ensemble_kd: {len(self.weights)} weights for {len(teachers)} teachers.")
    value = losses.ensemble_kd(class_rows(student.logits), [class_rows(t.logits) for t in teachers], self.temperature,
                               average=self.average, weights=self.weights)
    return value, {}, {}


@dataclasses.dataclass(frozen=True)
class DGKD(Distiller):
  """Densely guided KD from every teacher the run has, optionally with stochastic teaching. See
  `losses.dgkd` and `losses.teacher_keep_mask`.

  The teachers are the run's (`config.teacher.workdir`, then `extra_workdirs`): for DGKD the original
  teacher and every teacher assistant trained before this model. `drop_num` > 0 drops that many KD terms per
  step (the reference code's form, used for the final student), `survival` < 1 keeps each term with that
  probability (the paper's); the step's key decides which, so a resumed run drops the same ones.
  Metrics: `kept`, the number of teachers whose term counted this step, and `kept/teacher<k>` (1 or 0) for
  each.
  """

  temperature: float = 5.0
  reduction: str = "batchmean"
  drop_num: int = 0
  survival: float = 1.0

  def __post_init__(self):
    require_positive("dgkd", temperature=self.temperature)
    if self.reduction not in ("batchmean", "mean"):
      raise ValueError(f"dgkd: reduction must be 'batchmean' or 'mean', got {self.reduction!r}.")
    if isinstance(self.drop_num, bool) or not isinstance(self.drop_num, int) or self.drop_num < 0:
      raise ValueError(f"dgkd: drop_num must be an integer >= 0, got {self.drop_num!r}.")
    if not 0.0 < self.survival <= 1.0:
      raise ValueError(f"dgkd: survival must be in (0, 1], got {self.survival}.")
    if self.drop_num and self.survival < 1.0:
      raise ValueError("dgkd: give drop_num (the code's form) or survival (the paper's), not both.")

  def loss(self, variables, student, teacher, batch, ctx):
    teachers = (teacher,) if isinstance(teacher, ModelOutput) else tuple(teacher)
    if self.drop_num >= len(teachers):
      raise ValueError(f"dgkd: drop_num={self.drop_num} would drop every one of the {len(teachers)} teacher(s); "
                       "it must be smaller than the number of teachers (config.teacher.workdir plus "
                       "config.teacher.extra_workdirs).")
    keep = None
    if (self.drop_num or self.survival < 1.0) and ctx.train:
      if ctx.rng is None:
        raise ValueError("dgkd: stochastic teaching needs the step's key (ctx.rng).")
      keep = losses.teacher_keep_mask(ctx.rng, len(teachers), drop_num=self.drop_num, survival=self.survival)
    value = losses.dgkd(class_rows(student.logits), [class_rows(t.logits) for t in teachers], self.temperature,
                        keep=keep, reduction=self.reduction)
    if keep is None:
      keep = jnp.ones((len(teachers),), jnp.float32)
    return value, {"kept": jnp.sum(keep), **{f"kept/teacher{k}": keep[k] for k in range(len(teachers))}}, {}


@dataclasses.dataclass(frozen=True)
class NKD(Distiller):
  """Normalized KD, `−mean p_t,y·log p_s,y + γ·T²·(non-target cross-entropy)`. See `kd_jax.losses.nkd`
  (arXiv:2303.13005; reference yzd-v/cls_KD `mmcls/models/dis_losses/nkd.py`).

  Defaults T = 1, γ = 1.5 are `NKDLoss`'s and the reference's ImageNet configs'; its CIFAR-100 config uses
  T = 3, γ = 3.5. The reference trains with `CE + NKD` (both weight 1; CE is a separate `ce` term here).
  Metrics: `target` and `non_target`, the two parts of the value (the latter with its γ·T²).
  """

  temperature: float = 1.0
  gamma: float = 1.5

  def __post_init__(self):
    require_positive("nkd", temperature=self.temperature)
    if self.gamma < 0:
      raise ValueError(f"nkd: gamma must be >= 0, got {self.gamma}.")

  def loss(self, variables, student, teacher, batch, ctx):
    zs, zt, labels = class_rows(student.logits), class_rows(teacher.logits), label_rows(batch["label"])
    value = losses.nkd(zs, zt, labels, temperature=self.temperature, gamma=self.gamma)
    target = losses.nkd(zs, zt, labels, temperature=self.temperature, gamma=0.0)
    return value, {"target": target, "non_target": value - target}, {}


@dataclasses.dataclass(frozen=True)
class TTM(Distiller):
  """Transformed teacher matching, `mean_b KL(p_t^l / Σ p_t^l ‖ softmax(z_s))`. See `kd_jax.losses.ttm`
  (arXiv:2402.11148; reference zkxufo/TTM `distiller_zoo/ttm.py`). The reference trains with
  `CE + β·TTM`; its README example is l = 0.1, β = 45 (vgg13 → vgg8 on CIFAR-100)."""

  exponent: float = 0.1

  def __post_init__(self):
    require_positive("ttm", exponent=self.exponent)

  def loss(self, variables, student, teacher, batch, ctx):
    return losses.ttm(class_rows(student.logits), class_rows(teacher.logits), self.exponent), {}, {}


@dataclasses.dataclass(frozen=True)
class WTTM(Distiller):
  """Weighted TTM, `mean_b (Σ_c p_t,c^l)·KL(p̃_t ‖ softmax(z_s))`. See `kd_jax.losses.wttm`
  (arXiv:2402.11148; reference zkxufo/TTM `distiller_zoo/wttm.py`). The reference trains with `CE + β·WTTM`.
  Metric: `weight`, the batch mean of the per-example weight `Σ_c p_t,c^l` (1 for a one-hot teacher,
  `C^(1−l)` for a uniform one)."""

  exponent: float = 0.2

  def __post_init__(self):
    require_positive("wttm", exponent=self.exponent)

  def loss(self, variables, student, teacher, batch, ctx):
    zt = jax.lax.stop_gradient(class_rows(teacher.logits)).astype(jnp.float32)
    weight = jnp.mean(jnp.exp(jax.nn.logsumexp(self.exponent * jax.nn.log_softmax(zt, axis=-1), axis=-1)))
    return losses.wttm(class_rows(student.logits), class_rows(teacher.logits), self.exponent), {"weight": weight}, {}
