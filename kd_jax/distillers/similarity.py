"""Distillers for the batch-wise cosine/correlation losses of `kd_jax.losses.similarity`: CSKD and R2KD."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.data import cutmix, cutout, mixup
from kd_jax.data.augment import AUTOAUGMENT_POLICIES, auto_augment
from kd_jax.distillers.base import Distiller
from kd_jax.errors import KDJaxError, one_of
from kd_jax.losses.similarity import cskd_confidence_factors, cskd_gram
from kd_jax.models.outputs import ModelOutput

R2KD_AUGMENTS = ("none", "mixup", "cutmix", "cutout", "autoaug", "cutmixpick")


CSKD_STRONG_VIEWS = ("none", "autoaug")


def _normalisation(name: str, mean, std) -> Tuple[Optional[Tuple[float, ...]], Optional[Tuple[float, ...]]]:
  """`(mean, std)` as float tuples (None stays None); a non-positive std raises."""
  mean = None if mean is None else tuple(float(v) for v in mean)
  std = None if std is None else tuple(float(v) for v in std)
  if std is not None and min(std) <= 0:
    raise KDJaxError(f"{name}: image_std must be positive, got {std}.")
  return mean, std


@dataclasses.dataclass(frozen=True)
class CSKD(Distiller):
  """CSKD: class-wise (batch-prediction) cosine loss at a fixed T, plus the same loss with CSWT temperatures.

  Ham et al., "Cosine Similarity Knowledge Distillation for Individual Class Information Transfer", 2023,
  arXiv:2311.14307. The paper's objective (Eq. 9) is `CE + λ·(L_CS(T) + L_CS(T_i))`; this distiller returns
  the bracket, `L_CS(T) + L_CS(T_i)` (only `L_CS(T)` with `cswt=False`), so a config writes
  `{'ce': {'weight': 1}, 'cskd': {'weight': λ = 1}}` as the reference (CE weight 1, KD weight 1). Defaults are
  the reference code's config (see `kd_jax.losses.cskd`): T = 4, α = 2, CSWT range 2–6.

  The extended reference code (an author-style mdistiller `CSKD` distiller; its repository could not be
  identified) always adds three extras the arXiv paper does not have; each is an option here, off by default
  (the paper's Eq. 9; METHODS.md item 8 treats them as optional), all three on reproduce that code:
  - `strong_view='autoaug'`: a strong view of the batch (drawn inside the step with
    `kd_jax.data.augment.auto_augment`, policy `autoaug_policy`; `image_mean`/`image_std` give the data's
    normalisation) on which the same two cosine terms are added, teacher on the strong view too, the CSWT
    temperatures reused from the weak view (the code's `T_mat`), no confidence factor; plus
    `strong_ce_weight · CE(z_s^strong, y)`, the code's CE on both views. The term's weight λ multiplies it
    too, so `strong_ce_weight = w_CE / λ` (1 with the reference's weights) matches the code. The code's
    strong view comes from its data loader (an MLKD-style strong augmentation that could not be read);
    AutoAugment here is our choice [assume].
  - `confidence_factor=True`: the weak view's cosine terms and batch-batch Gram terms are scaled by the
    fraction of samples whose teacher confidence is at or below the batch median, the class-class Gram terms
    by the fraction of classes at or below the median class mass (`losses.similarity.cskd_confidence_factors`:
    scalars ~½, not per-sample masks, as METHODS.md's second check notes).
  - `gram=True`: adds `cskd_gram(kind='class')` and `cskd_gram(kind='batch')` of the weak view at T and at the
    CSWT temperatures (the latter only with `cswt`), with no α or T² factor, as the code's `cc_loss`,
    `cc_loss_mat`, `bc_loss`, `bc_loss_mat`.
  Metrics: `cs_fixed`, `cs_cswt`, `t_mean` (the batch's mean CSWT temperature), and with the extras
  `sample_factor`, `class_factor`, `gram_class`, `gram_batch`, `strong_cs`, `strong_ce`.
  """

  temperature: float = 4.0
  alpha: float = 2.0
  cswt: bool = True
  t_low: float = 2.0
  t_high: float = 6.0
  strong_view: str = "none"
  strong_ce_weight: float = 1.0
  confidence_factor: bool = False
  gram: bool = False
  autoaug_policy: str = "cifar10"
  image_mean: Optional[Tuple[float, ...]] = None
  image_std: Optional[Tuple[float, ...]] = None

  def __post_init__(self):
    if not self.temperature > 0:
      raise KDJaxError(f"cskd: temperature must be > 0, got {self.temperature}.")
    if not 0 < self.t_low <= self.t_high:
      raise KDJaxError(f"cskd: need 0 < t_low <= t_high, got t_low={self.t_low}, t_high={self.t_high}.")
    if self.alpha < 0 or self.strong_ce_weight < 0:
      raise KDJaxError(f"cskd: alpha and strong_ce_weight must be >= 0, got alpha={self.alpha}, "
                       f"strong_ce_weight={self.strong_ce_weight}.")
    if self.strong_view not in CSKD_STRONG_VIEWS:
      raise KDJaxError(f"cskd: strong_view must be {one_of(CSKD_STRONG_VIEWS)}, got {self.strong_view!r}.")
    if self.autoaug_policy not in AUTOAUGMENT_POLICIES:
      raise KDJaxError(f"cskd: autoaug_policy must be {one_of(sorted(AUTOAUGMENT_POLICIES))}, got "
                       f"{self.autoaug_policy!r}.")
    mean, std = _normalisation("cskd", self.image_mean, self.image_std)
    object.__setattr__(self, "image_mean", mean)
    object.__setattr__(self, "image_std", std)
    if self.strong_view == "autoaug" and (mean is None or std is None):
      raise KDJaxError("cskd: strong_view='autoaug' works on pixel values, so it needs the data's normalisation: "
                       "set image_mean and image_std (per channel, on the [0, 1] pixel scale).")

  def _cosine_terms(self, student_logits, teacher_logits, temperatures):
    fixed = losses.cskd(student_logits, teacher_logits, self.temperature, alpha=self.alpha)
    if temperatures is None:
      return fixed, jnp.zeros((), jnp.float32)
    return fixed, losses.cskd_cswt(student_logits, teacher_logits, alpha=self.alpha, temperatures=temperatures)

  def _gram_terms(self, student_logits, teacher_logits, temperatures, kind):
    value = cskd_gram(student_logits, teacher_logits, self.temperature, kind=kind)
    if temperatures is not None:
      value = value + cskd_gram(student_logits, teacher_logits, temperatures, kind=kind)
    return value

  def loss(self, variables, student, teacher, batch, ctx):
    zs, zt = student.logits, teacher.logits
    temperatures = None
    if self.cswt:
      temperatures = losses.cswt_temperatures(zs, zt, t_low=self.t_low, t_high=self.t_high)
    cs_fixed, cs_cswt = self._cosine_terms(zs, zt, temperatures)
    metrics = {"cs_fixed": cs_fixed}
    if self.cswt:
      metrics.update(cs_cswt=cs_cswt, t_mean=jnp.mean(temperatures))
    sample_factor = class_factor = jnp.ones((), jnp.float32)
    if self.confidence_factor:
      sample_factor, class_factor = cskd_confidence_factors(zt)
      metrics.update(sample_factor=sample_factor, class_factor=class_factor)
    total = sample_factor * (cs_fixed + cs_cswt)
    if self.gram:
      gram_class = self._gram_terms(zs, zt, temperatures, "class")
      gram_batch = self._gram_terms(zs, zt, temperatures, "batch")
      metrics.update(gram_class=gram_class, gram_batch=gram_batch)
      total = total + class_factor * gram_class + sample_factor * gram_batch
    if self.strong_view != "none":
      if ctx.forward is None or ctx.rng is None:
        raise KDJaxError("cskd with a strong view needs Context.forward and Context.rng (the train step "
                         "provides both).")
      strong = auto_augment(ctx.rng, batch["image"], policy=self.autoaug_policy, mean=self.image_mean,
                            std=self.image_std)
      strong_student, strong_teacher = ctx.forward(strong)
      strong_cs = sum(self._cosine_terms(strong_student.logits, strong_teacher.logits, temperatures))
      strong_ce = losses.cross_entropy(strong_student.logits, batch["label"])
      metrics.update(strong_cs=strong_cs, strong_ce=strong_ce)
      total = total + strong_cs + self.strong_ce_weight * strong_ce
    return total, metrics, {}


@dataclasses.dataclass(frozen=True)
class R2KD(Distiller):
  """R2KD correlation distance on the batch: `L_value + L_rank`, against a (pruned-)blended teacher.

  Kim, Ham, Cho, Kim, "Robustness-Reinforced Knowledge Distillation with Correlation Distance and Network
  Pruning", IEEE TKDE 2024, arXiv:2311.13934 (reference Seonghak35/R2KD). See `kd_jax.losses.r2kd`.
  The reference objective is `CE + [L_value + L_rank](x) + [L_value + L_rank](x_aug)`, i.e. weight 1 next to
  CE weight 1 (the factors 2 are inside, `value_weight`/`rank_weight`).

  Teacher: either one `ModelOutput` (plain teacher) or a pair `(teacher, pruned_teacher)`, which is blended
  as `blend_weight·z_T + (1 − blend_weight)·z_Tpruned` (`losses.r2kd_teacher_logits`, 0.7 = `PRUNE.WEIGHT`).
  The pruned teacher is `kd_jax.compression.pruning.prune_by_magnitude(teacher_params, 0.1)`: a run makes it with
  `config.teacher.pruned_copy_rate = 0.1` and runs it with batch statistics (train-mode BatchNorm, as the
  reference does: mdistiller's `Distiller.train()` sets only `teacher` to eval) while the original teacher
  stays in eval mode.

  `augment` adds the reference's second term, the same loss on an augmented copy of the batch (no CE on
  it), evaluated on the models through `Context.forward`: 'mixup' (α = 0.2, partners a permutation of the
  batch), 'cutmix' (α = 1), 'cutout' (one `cutout_size` hole for the whole batch: 8 on CIFAR, 16 on
  Tiny-ImageNet), 'autoaug' (`kd_jax.data.augment.auto_augment`: one AutoAugment sub-policy of
  `autoaug_policy` per batch, 'cifar10' on CIFAR-100 and 'imagenet' on Tiny-ImageNet in the reference; it
  works on pixel values, so `image_mean`/`image_std` must give the data's normalisation), 'cutmixpick'
  (CutMix, then only the `pick` = min(B, 64) samples whose *original* teacher, in eval mode, has the
  highest entropy at T = 1 on the unmixed images: the reference's `cutmixpick_data(image, target,
  self.teacher)` ranks by `self.teacher`, not by the pruned blend). The reference keeps the picked samples
  in ascending entropy order and this code in descending; the loss does not depend on the order, so at
  B ≤ pick (the reference's batch 64) cutmixpick keeps every sample and equals 'cutmix'.

  By default the rank term has zero gradient (argsort ranks, as the reference); `rank='soft'` is a
  differentiable deviation. Metrics: `value`, `rank` (and `aug_value`, `aug_rank` with an augmentation).
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
  autoaug_policy: str = "cifar10"
  image_mean: Optional[Tuple[float, ...]] = None
  image_std: Optional[Tuple[float, ...]] = None

  def __post_init__(self):
    if self.augment not in R2KD_AUGMENTS:
      raise KDJaxError(f"r2kd: augment must be {one_of(R2KD_AUGMENTS)}, got {self.augment!r}.")
    if self.autoaug_policy not in AUTOAUGMENT_POLICIES:
      raise KDJaxError(f"r2kd: autoaug_policy must be {one_of(sorted(AUTOAUGMENT_POLICIES))}, got "
                       f"{self.autoaug_policy!r}.")
    mean, std = _normalisation("r2kd", self.image_mean, self.image_std)
    object.__setattr__(self, "image_mean", mean)
    object.__setattr__(self, "image_std", std)
    if self.augment == "autoaug" and (mean is None or std is None):
      raise KDJaxError("r2kd: augment='autoaug' works on pixel values, so it needs the data's normalisation: "
                       "set image_mean and image_std (per channel, on the [0, 1] pixel scale; the reference's "
                       "CIFAR-100 values are (0.5071, 0.4867, 0.4408) and (0.2675, 0.2565, 0.2761)).")
    if not self.temperature > 0:
      raise KDJaxError(f"r2kd: temperature must be > 0, got {self.temperature}.")
    if self.rank not in ("reference", "soft", "none"):
      raise KDJaxError(f"r2kd: rank must be 'reference', 'soft' or 'none', got {self.rank!r}.")
    if not self.soft_rank_strength > 0:
      raise KDJaxError(f"r2kd: soft_rank_strength must be > 0, got {self.soft_rank_strength}.")
    if not 0.0 <= self.blend_weight <= 1.0:
      raise KDJaxError(f"r2kd: blend_weight must be in [0, 1], got {self.blend_weight}.")

  def teacher_logits(self, teacher):
    """The target logits: a single teacher's, or the blend of a (teacher, pruned_teacher) pair."""
    if isinstance(teacher, ModelOutput):
      return teacher.logits
    if isinstance(teacher, (tuple, list)) and len(teacher) == 2:
      return losses.r2kd_teacher_logits(teacher[0].logits, teacher[1].logits, self.blend_weight)
    got = type(teacher).__name__
    if isinstance(teacher, (tuple, list)):
      got += f" of length {len(teacher)}"
    raise KDJaxError(f"r2kd: the teacher must be one ModelOutput or a pair (teacher, pruned_teacher), got {got}.")

  def _loss(self, student_logits, teacher):
    return losses.r2kd(student_logits, self.teacher_logits(teacher), self.temperature,
                       value_weight=self.value_weight, rank_weight=self.rank_weight, rank=self.rank,
                       soft_rank_strength=self.soft_rank_strength, return_parts=True)

  def pick_order(self, teacher) -> jax.Array:
    """Indices of the `min(B, pick)` samples 'cutmixpick' keeps, highest entropy first.

    `H_i = −Σ_c p_ic log p_ic` with `p = softmax(z_T)` (T = 1) of the original teacher alone, on the unmixed
    batch, as the reference's `get_entropy_batch(image, model_t)` with `model_t = self.teacher` (eval mode).
    """
    original = teacher if isinstance(teacher, ModelOutput) else teacher[0]
    self.teacher_logits(teacher)  # validates the teacher structure
    log_p = jax.nn.log_softmax(jax.lax.stop_gradient(original.logits).astype(jnp.float32), axis=-1)
    entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    return jax.lax.top_k(entropy, min(entropy.shape[0], self.pick))[1]

  def augmented_copy(self, rng: jax.Array, images: jax.Array, teacher) -> jax.Array:
    """The augmented images of the second term (a subset of the batch for 'cutmixpick')."""
    partner_rng, mix_rng = jax.random.split(rng)
    partner = jax.random.permutation(partner_rng, images.shape[0])
    if self.augment == "mixup":
      return mixup(mix_rng, images, partner, self.mixup_alpha)[0]
    if self.augment == "cutout":
      return cutout(mix_rng, images, self.cutout_size)
    if self.augment == "autoaug":
      return auto_augment(mix_rng, images, policy=self.autoaug_policy, mean=self.image_mean, std=self.image_std)
    mixed = cutmix(mix_rng, images, partner, self.cutmix_alpha)[0]
    if self.augment == "cutmixpick":
      mixed = mixed[self.pick_order(teacher)]
    return mixed

  def loss(self, variables, student, teacher, batch, ctx):
    total, parts = self._loss(student.logits, teacher)
    metrics = dict(parts)
    if self.augment != "none":
      if ctx.forward is None:
        raise KDJaxError("r2kd with augment needs Context.forward (the train step provides it).")
      aug_student, aug_teacher = ctx.forward(self.augmented_copy(ctx.rng, batch["image"], teacher))
      aug_total, aug_parts = self._loss(aug_student.logits, aug_teacher)
      total = total + aug_total
      metrics.update({f"aug_{k}": v for k, v in aug_parts.items()})
    return total, metrics, {}
