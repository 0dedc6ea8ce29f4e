"""Distillers for the batch-wise cosine/correlation losses of `kd_jax.losses.similarity`: CSKD and R2KD."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.data import cutmix, cutout, mixup
from kd_jax.distillers.base import Distiller
from kd_jax.models.outputs import ModelOutput


@dataclasses.dataclass(frozen=True)
class CSKD(Distiller):
  """CSKD: class-wise (batch-prediction) cosine loss at a fixed T, plus the same loss with CSWT temperatures.

  Ham et al., "Cosine Similarity Knowledge Distillation for Individual Class Information Transfer", 2023,
  arXiv:2311.14307. The paper's objective (Eq. 9) is `CE + λ·(L_CS(T) + L_CS(T_i))`; this distiller returns
  the bracket, `L_CS(T) + L_CS(T_i)` (only `L_CS(T)` with `cswt=False`), so a config writes
  `{'ce': {'weight': 1}, 'cskd': {'weight': λ = 1}}` as the reference (CE weight 1, KD weight 1). Metrics:
  `cs_fixed` = `losses.cskd`, `cs_cswt` = `losses.cskd_cswt`, `t_mean` = the batch's mean CSWT temperature.

  Defaults are the reference code's config (see `kd_jax.losses.cskd`): T = 4, α = 2, CSWT range 2–6.
  Not here (extras of the extended reference code, not in the arXiv paper): the weak/strong two-view
  training (the reference also applies CE to the strong view), its median-confidence scalar factor on the
  weak-view terms, and the class-class/batch-batch Gram-matrix cosine terms.
  """

  temperature: float = 4.0
  alpha: float = 2.0
  cswt: bool = True
  t_low: float = 2.0
  t_high: float = 6.0

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(f"cskd: temperature must be > 0, got {self.temperature}.")
    if not 0 < self.t_low <= self.t_high:
      raise ValueError(f"cskd: need 0 < t_low <= t_high, got t_low={self.t_low}, t_high={self.t_high}.")
    if self.alpha < 0:
      raise ValueError(f"cskd: alpha must be >= 0, got {self.alpha}.")

  def loss(self, variables, student, teacher, batch, ctx):
    cs_fixed = losses.cskd(student.logits, teacher.logits, self.temperature, alpha=self.alpha)
    if not self.cswt:
      return cs_fixed, {"cs_fixed": cs_fixed}, {}
    temperatures = losses.cswt_temperatures(student.logits, teacher.logits, t_low=self.t_low, t_high=self.t_high)
    cs_cswt = losses.cskd_cswt(student.logits, teacher.logits, alpha=self.alpha, temperatures=temperatures)
    return cs_fixed + cs_cswt, {"cs_fixed": cs_fixed, "cs_cswt": cs_cswt, "t_mean": jnp.mean(temperatures)}, {}


@dataclasses.dataclass(frozen=True)
class R2KD(Distiller):
  """R2KD correlation distance on the batch: `L_value + L_rank`, against a (pruned-)blended teacher.

  Kim, Ham, Cho, Kim, "Robustness-Reinforced Knowledge Distillation with Correlation Distance and Network
  Pruning", IEEE TKDE 2024, arXiv:2311.13934 (reference Seonghak35/R2KD). See `kd_jax.losses.r2kd`.
  The reference objective is `CE + [L_value + L_rank](x) + [L_value + L_rank](x_aug)`, i.e. weight 1 next to
  CE weight 1 (the factors 2 are inside, `value_weight`/`rank_weight`).

  Teacher: either one `ModelOutput` (plain teacher) or a pair `(teacher, pruned_teacher)`, which is blended
  as `blend_weight·z_T + (1 − blend_weight)·z_Tpruned` (`losses.r2kd_teacher_logits`, 0.7 = `PRUNE.WEIGHT`).
  The pruned teacher is `kd_jax.pruning.prune_by_magnitude(teacher_params, 0.1)`: a run makes it with
  `config.teacher.pruned_copy_rate = 0.1` and runs it with batch statistics (train-mode BatchNorm, as the
  reference does: mdistiller's `Distiller.train()` sets only `teacher` to eval) while the original teacher
  stays in eval mode.

  `augment` adds the reference's second term, the same loss on an augmented copy of the batch (no CE on
  it), evaluated on the models through `Context.forward`: 'mixup' (α = 0.2, partners a permutation of the
  batch), 'cutmix' (α = 1), 'cutout' (one `cutout_size` hole for the whole batch: 8 on CIFAR, 16 on
  Tiny-ImageNet), 'cutmixpick' (CutMix, then only the `pick` = min(B, 64) samples with the highest teacher
  entropy at T = 1 on the unmixed images). The reference's AutoAugment option is not implemented.

  By default the rank term has zero gradient (argsort ranks, as the reference); `rank='soft'` is a
  differentiable deviation. Metrics: `value`, `rank`.
  """

  temperature: float = 4.0
  value_weight: float = 2.0
  rank_weight: float = 2.0
  rank: str = "reference"
  soft_rank_strength: float = 10.0
  blend_weight: float = 0.7
  augment: str = "none"
  mixup_alpha: float = 0.2
  cutmix_alpha: float = 1.0
  cutout_size: int = 8
  pick: int = 64

  def __post_init__(self):
    if self.augment not in ("none", "mixup", "cutmix", "cutout", "cutmixpick"):
      raise ValueError(f"r2kd: augment must be 'none', 'mixup', 'cutmix', 'cutout' or 'cutmixpick', got "
                       f"{self.augment!r} (AutoAugment is not implemented).")
    if not self.temperature > 0:
      raise ValueError(f"r2kd: temperature must be > 0, got {self.temperature}.")
    if self.rank not in ("reference", "soft", "none"):
      raise ValueError(f"r2kd: rank must be 'reference', 'soft' or 'none', got {self.rank!r}.")
    if not self.soft_rank_strength > 0:
      raise ValueError(f"r2kd: soft_rank_strength must be > 0, got {self.soft_rank_strength}.")
    if not 0.0 <= self.blend_weight <= 1.0:
      raise ValueError(f"r2kd: blend_weight must be in [0, 1], got {self.blend_weight}.")

  def teacher_logits(self, teacher):
    """The target logits: a single teacher's, or the blend of a (teacher, pruned_teacher) pair."""
    if isinstance(teacher, ModelOutput):
      return teacher.logits
    if isinstance(teacher, (tuple, list)) and len(teacher) == 2:
      return losses.r2kd_teacher_logits(teacher[0].logits, teacher[1].logits, self.blend_weight)
    got = type(teacher).__name__
    if isinstance(teacher, (tuple, list)):
      got += f" of length {len(teacher)}"
    raise ValueError(f"r2kd: the teacher must be one ModelOutput or a pair (teacher, pruned_teacher), got {got}.")

  def _loss(self, student_logits, teacher):
    return losses.r2kd(student_logits, self.teacher_logits(teacher), self.temperature,
                       value_weight=self.value_weight, rank_weight=self.rank_weight, rank=self.rank,
                       soft_rank_strength=self.soft_rank_strength, return_parts=True)

  def augmented_copy(self, rng: jax.Array, images: jax.Array, teacher) -> jax.Array:
    """The augmented images of the second term (a subset of the batch for 'cutmixpick')."""
    partner_rng, mix_rng = jax.random.split(rng)
    partner = jax.random.permutation(partner_rng, images.shape[0])
    if self.augment == "mixup":
      return mixup(mix_rng, images, partner, self.mixup_alpha)[0]
    if self.augment == "cutout":
      return cutout(mix_rng, images, self.cutout_size)
    mixed = cutmix(mix_rng, images, partner, self.cutmix_alpha)[0]
    if self.augment == "cutmixpick":
      log_p = jax.nn.log_softmax(jax.lax.stop_gradient(self.teacher_logits(teacher)), axis=-1)
      entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
      _, keep = jax.lax.top_k(entropy, min(images.shape[0], self.pick))
      mixed = mixed[keep]
    return mixed

  def loss(self, variables, student, teacher, batch, ctx):
    total, parts = self._loss(student.logits, teacher)
    metrics = dict(parts)
    if self.augment != "none":
      if ctx.forward is None:
        raise ValueError("r2kd with augment needs Context.forward (the train step provides it).")
      aug_student, aug_teacher = ctx.forward(self.augmented_copy(ctx.rng, batch["image"], teacher))
      aug_total, aug_parts = self._loss(aug_student.logits, aug_teacher)
      total = total + aug_total
      metrics.update({f"aug_{k}": v for k, v in aug_parts.items()})
    return total, metrics, {}
