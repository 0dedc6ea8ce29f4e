"""Distillers that read logits: cross-entropy, Hinton KD, DKD, DIST, LS-KD, Energy KD, Energy DKD, ensemble KD,
DGKD, NKD, TTM, WTTM, MLKD and CTKD, and the task's own supervised loss.

Each reads `class_rows(out.logits)`: classification logits [B, C] as they are, per-pixel logits
[B, H, W, C] with every pixel as an example (their means then run over pixels and batch).

Logit standardization (Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024,
arXiv:2403.01427; code sunshangquan/logit-standardization-KD) is the boolean field `standardize` of the
distillers it suits: both sides' logits go through `kd_jax.losses.standardize_logits` (per-sample Z-score,
the one place its formula lives) before the temperature. Where, and why:
  - KD, DKD, MLKD (instance-level terms only, as the code), CTKD: the methods the paper and its code apply it
    to (`--logit-stand` for KD, DKD and MLKD in `tools/train.py`, the `CTKD/` folder's `DistillKL`). The
    paper's recipe pairs it with a base temperature of 2 and a KD weight of 9; `ls_kd` is `kd` with
    `standardize=True` at T = 2.
  - Ensemble KD and DGKD: yes [assume]; each is Hinton KD from one or several teachers, term by term, so the
    paper's argument (the student need not match a teacher's logit range) applies to every term unchanged.
  - DIST: no; its Pearson correlations already compare relations rather than magnitudes, which is what the
    Z-score buys KD, and neither paper combines the two.
  - NKD, TTM, WTTM: no; their formulas weigh raw probabilities on purpose (NKD's teacher target
    probability, TTM's power transform of the teacher with the student at temperature 1, which the method's
    derivation rests on), and no source combines them with the Z-score.
  - Energy KD, Energy DKD: no; their per-sample temperature from the teacher's raw energy is their own
    answer to the per-sample scale, with thresholds fixed on raw energies before training.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import losses
from kd_jax.data import augment, cutout
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
  standardize: bool = False

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(f"kd: temperature must be > 0, got {self.temperature}.")

  def loss(self, variables, student, teacher, batch, ctx):
    zs, zt = standardized(class_rows(student.logits), class_rows(teacher.logits), self.standardize)
    return losses.kd(zs, zt, self.temperature, reduction=self.reduction), {}, {}


def standardized(student_logits: jax.Array, teacher_logits: jax.Array, on: bool, *,
                 eps: float = 1e-7) -> Tuple[jax.Array, jax.Array]:
  """`(Z(z_s), Z(z_t))` with `Z = kd_jax.losses.standardize_logits` (per-sample Z-score) if `on`, else unchanged.

  Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024, arXiv:2403.01427; the reference's
  `normalize` (sunshangquan/logit-standardization-KD, `mdistiller/distillers/KD.py`), eps 1e-7 on the std.
  """
  if not on:
    return student_logits, teacher_logits
  return (losses.standardize_logits(student_logits, eps=eps),
          losses.standardize_logits(jax.lax.stop_gradient(teacher_logits), eps=eps))


def linear_warmup(epoch, warmup_epochs: float) -> jax.Array:
  """mdistiller's loss warm-up `min(epoch / warmup_epochs, 1)` (1-based epoch); 1 when `warmup_epochs` is 0."""
  if not warmup_epochs:
    return jnp.ones((), jnp.float32)
  return jnp.minimum(jnp.asarray(epoch, jnp.float32) / warmup_epochs, 1.0)


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

  `standardize` Z-scores both sides' logits first (logit standardization, arXiv:2403.01427). The paper's
  DKD+LS command is `--logit-stand --base-temp 2 --kd-weight 9`; as its `tools/train.py` reads, that sets
  `ALPHA = 1·9` and then `BETA = ALPHA·9 = 81`, and writes the base temperature to `cfg.KD.TEMPERATURE`, which
  DKD does not read (it keeps `cfg.DKD.T`): set α, β and T in the config explicitly.
  """

  alpha: float = 1.0
  beta: float = 8.0
  temperature: float = 4.0
  warmup_epochs: float = 20.0  # mdistiller CFG.DKD.WARMUP
  standardize: bool = False

  def __post_init__(self):
    require_positive("dkd", temperature=self.temperature)
    if self.alpha < 0 or self.beta < 0:
      raise ValueError(f"dkd: alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}.")
    if self.warmup_epochs < 0:
      raise ValueError(f"dkd: warmup_epochs must be >= 0, got {self.warmup_epochs}.")

  def warmup_factor(self, epoch) -> jax.Array:
    return linear_warmup(epoch, self.warmup_epochs)

  def loss(self, variables, student, teacher, batch, ctx):
    zs, zt = standardized(class_rows(student.logits), class_rows(teacher.logits), self.standardize)
    labels = label_rows(batch["label"])
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
  `0.1·CE + 9·LS-KD` at T = 2. The same computation as `KD(temperature=T, standardize=True)` (`eps` aside,
  which `kd` keeps at the reference's 1e-7)."""

  temperature: float = 2.0
  eps: float = 1e-7

  def __post_init__(self):
    require_positive("ls_kd", temperature=self.temperature)
    if self.eps < 0:
      raise ValueError(f"ls_kd: eps must be >= 0, got {self.eps}.")

  def loss(self, variables, student, teacher, batch, ctx):
    zs, zt = standardized(class_rows(student.logits), class_rows(teacher.logits), True, eps=self.eps)
    return losses.kd(zs, zt, self.temperature), {}, {}


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
  name = "energy_kd"  # the registry name in messages (a class attribute, not a field)

  def __post_init__(self):
    require_positive(self.name, temperature=self.temperature, low_energy_temperature=self.low_energy_temperature,
              high_energy_temperature=self.high_energy_temperature, energy_temperature=self.energy_temperature)
    require_fraction(self.name, low_fraction=self.low_fraction, high_fraction=self.high_fraction)
    if (self.energy_low is not None and self.energy_high is not None
        and not float(self.energy_low) <= float(self.energy_high)):
      raise ValueError(f"{self.name}: energy_low ({self.energy_low}) must be <= energy_high ({self.energy_high}); "
                       "lower low_fraction/high_fraction so the two groups do not overlap.")

  def prepare(self, data):
    return with_energy_thresholds(self, data.teacher_logits)

  def _check_thresholds(self):
    if self.energy_low is None or self.energy_high is None:
      raise KDJaxError(
          f"{self.name}: energy_low and energy_high are not set. A training run fills them from a pass of the "
          "teacher over the training data (Distiller.prepare). They are thresholds of the teacher's energy "
          f"score (T_E = {self.energy_temperature}); to set them yourself compute "
          "kd_jax.losses.energy_thresholds(kd_jax.losses.energy_score(teacher_logits, "
          f"{self.energy_temperature}), {self.low_fraction}, {self.high_fraction}) and set them in the config "
          "(config.loss.<term>.energy_low / energy_high).")

  def init(self, rng, student, teacher, batch):
    self._check_thresholds()
    return {}

  def _temperature_kwargs(self):
    return dict(energy_low=self.energy_low, energy_high=self.energy_high, temperature=self.temperature,
                low_energy_temperature=self.low_energy_temperature,
                high_energy_temperature=self.high_energy_temperature, energy_temperature=self.energy_temperature)

  def _group_fractions(self, teacher_logits):
    energies = losses.energy_score(jax.lax.stop_gradient(teacher_logits), self.energy_temperature)
    return {"low_energy_fraction": jnp.mean(energies < self.energy_low),
            "high_energy_fraction": jnp.mean(energies > self.energy_high)}

  def loss(self, variables, student, teacher, batch, ctx):
    self._check_thresholds()
    zs, zt = class_rows(student.logits), class_rows(teacher.logits)
    value = losses.energy_kd(zs, zt, **self._temperature_kwargs())
    return value, self._group_fractions(zt), {}


@dataclasses.dataclass(frozen=True)
class EnergyDKD(EnergyKD):
  """Energy DKD: DKD whose temperature is chosen per sample by the teacher's energy, as `EnergyKD` does for
  KD, with DKD's warm-up: `min(epoch / warmup_epochs, 1)·mean_b T_b²·(α·TCKD_b + β·NCKD_b)`. See
  `kd_jax.losses.energy_dkd` (Kim et al., KBS 2024, arXiv:2311.14334; code Seonghak35/EnergyKD
  `mdistiller/distillers/energyDKD.py`).

  Thresholds, fractions and temperatures as `EnergyKD` (defaults: the paper's rule, low energy → 6, high → 2;
  the reference's `T.LOW = 2.0`, `T.HIGH = 6.0` reverse it). α = 1, β = 8 and a 20-epoch warm-up are the
  reference's `CFG.energyDKD` defaults, with CE at weight 1 (a separate `ce` term here); its only Energy-DKD
  config (vgg13 → vgg8 on CIFAR-100) uses β = 6, energy rates 0.1/0.1 and the repository's temperatures
  (`experiments/cifar100_energy_dkd.py`). Metrics: `tckd`, `nckd` (each with its samples' T_b², unwarmed), the
  warm-up factor and the two energy groups' fractions.
  """

  alpha: float = 1.0
  beta: float = 8.0
  warmup_epochs: float = 20.0  # CFG.energyDKD.WARMUP
  name = "energy_dkd"

  def __post_init__(self):
    super().__post_init__()
    if self.alpha < 0 or self.beta < 0:
      raise ValueError(f"energy_dkd: alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}.")
    if self.warmup_epochs < 0:
      raise ValueError(f"energy_dkd: warmup_epochs must be >= 0, got {self.warmup_epochs}.")

  def loss(self, variables, student, teacher, batch, ctx):
    self._check_thresholds()
    zs, zt, labels = class_rows(student.logits), class_rows(teacher.logits), label_rows(batch["label"])
    kwargs = self._temperature_kwargs()
    factor = linear_warmup(ctx.epoch, self.warmup_epochs)
    value = factor * losses.energy_dkd(zs, zt, labels=labels, alpha=self.alpha, beta=self.beta, **kwargs)
    # Each part alone, with its samples' T_b² (α or β set to 0 leaves the other).
    tckd = losses.energy_dkd(zs, zt, labels=labels, alpha=1.0, beta=0.0, **kwargs)
    nckd = losses.energy_dkd(zs, zt, labels=labels, alpha=0.0, beta=1.0, **kwargs)
    return value, {"tckd": tckd, "nckd": nckd, "warmup": factor, **self._group_fractions(zt)}, {}


@dataclasses.dataclass(frozen=True)
class EnsembleKD(Distiller):
  """KD from several teachers' averaged softened outputs (Hinton et al. 2015). See `losses.ensemble_kd`.

  `teacher` is a tuple of `ModelOutput`s (the loop passes one per teacher workdir); a single `ModelOutput`
  is accepted and gives plain KD. `weights`, if given, has one entry per teacher.
  """

  temperature: float = 4.0
  average: str = "probs"
  weights: Optional[Tuple[float, ...]] = None
  standardize: bool = False  # logit standardization of the student and of every teacher

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
    zs, zts = _standardized_many(student, teachers, self.standardize)
    value = losses.ensemble_kd(zs, zts, self.temperature, average=self.average, weights=self.weights)
    return value, {}, {}


def _standardized_many(student: ModelOutput, teachers, on: bool):
  """The student's logit rows and a list of every teacher's, Z-scored if `on` (see `standardized`)."""
  zs = class_rows(student.logits)
  pairs = [standardized(zs, class_rows(t.logits), on) for t in teachers]
  return (pairs[0][0] if pairs else zs), [zt for _, zt in pairs]


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
  standardize: bool = False  # logit standardization of the student and of every teacher

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
    zs, zts = _standardized_many(student, teachers, self.standardize)
    value = losses.dgkd(zs, zts, self.temperature, keep=keep, reduction=self.reduction)
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


def strong_view(rng: jax.Array, images: jax.Array, *, pad: int = 0, flip: bool = True,
                cutout_fraction: float = 0.5) -> jax.Array:
  """MLKD's strong view of a batch, from what `kd_jax.data.augment` offers: crop and flip, then per-image Cutout.

  `augment(images, pad, flip)` draws a fresh crop (zero padding `pad`) and mirror per image; then each image
  gets one `cutout` square of side `u·cutout_fraction·min(H, W)`, `u ~ U(0, 1)` drawn per image, at a uniform
  centre, filled with 0 (the mean colour of normalised images).

  The reference (Jin-Ying/Multi-Level-Logit-Distillation; `get_cifar100_train_transform_strong` in the
  logit-standardization copy, `mdistiller/dataset/cifar100.py`) builds its strong view from the raw image:
  RandomCrop(32, padding 4) and flip drawn independently of the weak view's, then RandAugment(2, 10): two of 14
  PIL operations (auto-contrast, brightness, colour, contrast, equalize, identity, posterize, rotate,
  sharpness, shear x/y, solarize, translate x/y) at random magnitudes, then Cutout of side `U(0, 0.5)·W` in
  grey (125, 123, 114). Departures here: the photometric and geometric RandAugment operations are not
  available, so the view is weaker; it is made from the batch's weak view, so a second crop (`pad` > 0) would
  compound the first (`pad = 0` by default; a second flip is an independent flip, as the reference's); the
  Cutout square is the even side `2·⌊s/2⌋` around an integer centre (`kd_jax.data.augment._box`).
  """
  crop_rng, size_rng, cut_rng = jax.random.split(rng, 3)
  images = augment(crop_rng, images, pad=pad, flip=flip)
  if not cutout_fraction:
    return images
  n, h, w, _ = images.shape
  sizes = jax.random.uniform(size_rng, (n,)) * cutout_fraction * min(h, w)
  one = lambda key, image, size: cutout(key, image[None], size)[0]
  return jax.vmap(one)(jax.random.split(cut_rng, n), images, sizes)


def _single_teacher(name: str, teacher) -> ModelOutput:
  if not isinstance(teacher, ModelOutput):
    raise KDJaxError(f"{name} reads one teacher; this run gives it {len(teacher)}. Pick one with "
                     f"config.loss.<term>.teacher = index.")
  return teacher


@dataclasses.dataclass(frozen=True)
class MLKD(Distiller):
  """Multi-level logit distillation on a weak and a strong view: instance-level KD at several temperatures,
  class-level (C×C) and batch-level (B×B) Gram-matrix alignment, with the teacher-confidence masks.

  Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023; reference Jin-Ying/Multi-Level-Logit-Distillation
  `mdistiller/distillers/KD_ours.py` [code]. The weak view is the batch the step trained on; the strong view
  is `strong_view(ctx.rng, batch['image'])` (see there for how it departs from the reference's RandAugment),
  run through both models with `ctx.forward`. The value is

      kd_weight · Σ mlkd_parts(weak, strong) + strong_ce_weight · CE(z_s^strong, y)

  (`kd_jax.losses.mlkd_parts` has the four terms, their masks and the reference's quirks). The reference's
  objective is `0.1·(CE(weak) + CE(strong)) + 0.9·Σ parts`: give the weak view's CE as the run's `ce` term
  at 0.1 and this term weight 1 (`experiments/digits_mlkd.py`). Defaults are the reference's: temperatures
  (4, 3, 5, 2, 6) (its `cfg.KD.TEMPERATURE` = 4 first), KD weight 0.9, CE weight 0.1, the 50th percentile.
  `standardize` is the logit-standardization variant (instance terms only, as its code); its recipe is base
  temperature 2, i.e. `temperatures=(2, 3, 5, 2, 6)`, and `kd_weight=9`.

  The extra student pass runs in train mode and, as the reference's strong pass, updates the BatchNorm
  running statistics after the weak pass (`Context.forward`). Metrics: the four parts (unweighted) and
  `strong_ce`.
  """

  temperatures: Tuple[float, ...] = (4.0, 3.0, 5.0, 2.0, 6.0)
  kd_weight: float = 0.9
  strong_ce_weight: float = 0.1
  percentile: float = 50.0
  standardize: bool = False
  reference_strong_sum: bool = True
  strong_pad: int = 0
  strong_flip: bool = True
  cutout_fraction: float = 0.5

  def __post_init__(self):
    temperatures = tuple(float(t) for t in self.temperatures)
    if not temperatures or not all(t > 0 for t in temperatures):
      raise KDJaxError(f"mlkd: temperatures must be a non-empty tuple of positive numbers, got {self.temperatures!r}.")
    object.__setattr__(self, "temperatures", temperatures)
    if self.kd_weight < 0 or self.strong_ce_weight < 0:
      raise KDJaxError(f"mlkd: kd_weight and strong_ce_weight must be >= 0, got {self.kd_weight} and "
                       f"{self.strong_ce_weight}.")
    if not 0.0 <= self.percentile <= 100.0:
      raise KDJaxError(f"mlkd: percentile must be in [0, 100], got {self.percentile}.")
    if not 0.0 <= self.cutout_fraction <= 1.0:
      raise KDJaxError(f"mlkd: cutout_fraction must be in [0, 1] (a fraction of the image side), got "
                       f"{self.cutout_fraction}.")
    if isinstance(self.strong_pad, bool) or not isinstance(self.strong_pad, int) or self.strong_pad < 0:
      raise KDJaxError(f"mlkd: strong_pad must be an integer >= 0, got {self.strong_pad!r}.")

  def loss(self, variables, student, teacher, batch, ctx):
    if ctx.forward is None or ctx.rng is None:
      raise KDJaxError("mlkd runs the models on a strong view of the batch and needs Context.forward and the "
                       "step's key (the train step provides both).")
    teacher = _single_teacher("mlkd", teacher)
    if student.logits.ndim != 2:
      raise KDJaxError(f"mlkd needs classification logits [B, C], got {student.logits.shape}: its batch-level "
                       "term compares every pair of examples.")
    strong_student, strong_teacher = ctx.forward(strong_view(
        ctx.rng, batch["image"], pad=self.strong_pad, flip=self.strong_flip, cutout_fraction=self.cutout_fraction))
    strong_teacher = _single_teacher("mlkd", strong_teacher)
    parts = losses.mlkd_parts(student.logits, teacher.logits, strong_student.logits, strong_teacher.logits,
                              temperatures=self.temperatures, percentile=self.percentile,
                              standardize=self.standardize, reference_strong_sum=self.reference_strong_sum)
    strong_ce = losses.cross_entropy(strong_student.logits, batch["label"])
    value = self.kd_weight * sum(parts.values()) + self.strong_ce_weight * strong_ce
    return value, {**parts, "strong_ce": strong_ce}, {}


class TemperatureMLP(nn.Module):
  """CTKD's instance-wise temperature module: `[z_t, z_s] → Dense(hidden) → ReLU → Dense(1)`, one raw value
  per sample (the distiller maps it into the temperature range)."""

  hidden: int = 256

  @nn.compact
  def __call__(self, logits_pair: jax.Array) -> jax.Array:
    x = nn.relu(nn.Dense(self.hidden)(logits_pair))
    return nn.Dense(1)(x)[:, 0]


@dataclasses.dataclass(frozen=True)
class CTKD(Distiller):
  """Curriculum temperature KD: Hinton KD at a learned temperature that is trained to *increase* the loss,
  through a gradient-reversal layer whose strength λ grows over the first epochs.

  Li, Li, Yang, Zhao, Song, Luo, Li, Yang, "Curriculum Temperature for Knowledge Distillation", AAAI 2023,
  arXiv:2211.16231; reference zhengli97/CTKD (`models/temp_global.py`, `helper/loops.py`,
  `train_student.py`, `scripts/run_cifar_distill.sh`) [code]. Per step:

      T = t_start + t_range · sigmoid(GRL_λ(θ)),   λ = ctkd_lambda(epoch; λ_min, λ_max, lambda_epochs)
      value = T²·KL(softmax(z_t/T) || softmax(z_s/T))   (batch mean; `kd`)

  `GRL_λ` (`kd_jax.losses.gradient_reversal`) is the identity forward and multiplies the gradient by −λ, so
  the run's optimiser, which descends the total loss in the student's parameters, ascends this term in θ:
  the temperature makes distillation harder as λ rises (easy to hard). θ are this distiller's `params`,
  trained with the student by the run's optimiser (the reference puts them in the same SGD, weight decay
  included).

  `form`: "global" (the paper's main form and the released code's `Global_T`: θ is one scalar, initialised to
  1 as `torch.ones(1)`) or "instance" (θ is a small MLP on the concatenated teacher and student logits giving
  one T_b per sample, and the loss is `kd_per_sample_temperature`). The instance module's code is not in the
  repository (its README links it on cloud drives and gives only the per-sample loss, `Σ_b T_b²·KL_b / B`);
  its architecture here, `TemperatureMLP` with `hidden` units, and the stop_gradient on its inputs (the
  module must not move the student's logits) are [assume].

  Defaults are the reference script's: `--t_start 1 --t_end 20` (`t_range` here: the code computes
  `t_start + t_end·sigmoid(·)`, so T ∈ (1, 21)), `--cosine_decay 1 --decay_max 0 --decay_min -1
  --decay_loops 10` (λ from 0 to 1 over 10 epochs; see `ctkd_lambda`), with `-r 0.1 -a 0.9`: `0.1·CE +
  0.9·ctkd`. `standardize` is the logit-standardization variant (the logit-standardization repository's
  `CTKD/distiller_zoo/KD.py`: Z-scored logits divided by the learned T).
  Metrics: `temperature` (mean over the batch) and `lambda`.
  """

  form: str = "global"
  t_start: float = 1.0
  t_range: float = 20.0
  init_value: float = 1.0
  lambda_min: float = 0.0
  lambda_max: float = 1.0
  lambda_epochs: float = 10.0
  hidden: int = 256
  standardize: bool = False

  def __post_init__(self):
    if self.form not in ("global", "instance"):
      raise KDJaxError(f"ctkd: form must be 'global' or 'instance', got {self.form!r}.")
    if not self.t_start > 0 or not self.t_range >= 0:
      raise KDJaxError(f"ctkd: the temperature range needs t_start > 0 and t_range >= 0, got t_start="
                       f"{self.t_start}, t_range={self.t_range}.")
    if not self.lambda_epochs > 0:
      raise KDJaxError(f"ctkd: lambda_epochs must be > 0, got {self.lambda_epochs}.")
    if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1:
      raise KDJaxError(f"ctkd: hidden must be a positive integer, got {self.hidden!r}.")

  @staticmethod
  def _pair(student_logits, teacher_logits):
    # Teacher first, as the reference calls its module (`mlp_net(logit_t, logit_s, ...)`).
    return jax.lax.stop_gradient(jnp.concatenate([teacher_logits, student_logits], axis=-1).astype(jnp.float32))

  def init(self, rng, student, teacher, batch):
    if self.form == "global":
      return {"params": {"temperature": jnp.full((), self.init_value, jnp.float32)}}
    zs, zt = class_rows(student.logits), class_rows(_single_teacher("ctkd", teacher).logits)
    return {"params": TemperatureMLP(self.hidden).init(rng, self._pair(zs, zt))["params"]}

  def temperature(self, params, student_logits: jax.Array, teacher_logits: jax.Array,
                  epoch) -> Tuple[jax.Array, jax.Array]:
    """`(T, λ)`: the temperature (a scalar, or [B] for the instance form) and the epoch's reversal strength."""
    lam = losses.ctkd_lambda(epoch, lambda_min=self.lambda_min, lambda_max=self.lambda_max,
                             epochs=self.lambda_epochs)
    if self.form == "global":
      raw = params["temperature"]
    else:
      raw = TemperatureMLP(self.hidden).apply({"params": params}, self._pair(student_logits, teacher_logits))
    return self.t_start + self.t_range * jax.nn.sigmoid(losses.gradient_reversal(raw, lam)), lam

  def loss(self, variables, student, teacher, batch, ctx):
    if "params" not in variables:
      raise KDJaxError("ctkd owns a trainable temperature: build its variables with CTKD.init (the train "
                       "state does) and pass them in.")
    zs, zt = class_rows(student.logits), class_rows(_single_teacher("ctkd", teacher).logits)
    temps, lam = self.temperature(variables["params"], zs, zt, ctx.epoch)
    zs, zt = standardized(zs, zt, self.standardize)
    if self.form == "global":
      value = losses.kd(zs, zt, temps)
    else:
      value = losses.kd_per_sample_temperature(zs, zt, temps)
    return value, {"temperature": jnp.mean(temps), "lambda": lam}, {}
