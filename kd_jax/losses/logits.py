"""Losses on logits: cross-entropy, Hinton KD (also with a temperature per sample), DKD, DIST, logit-standardized
KD, Energy KD and Energy DKD, ensemble KD, DGKD, NKD, TTM, WTTM, MLKD, and CTKD's gradient reversal and curriculum.

Pure functions of arrays: no Flax, no optax, no config. Conventions used throughout kd_jax:
logits are [B, C]; a loss is a scalar, averaged over the batch unless a docstring says otherwise.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.losses.dtypes import at_least_float32

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
  log_p = jax.nn.log_softmax(at_least_float32(logits), axis=-1)
  return -jnp.mean(jnp.sum(targets * log_p, axis=-1))


def kl_divergence_per_example(student_logits: jax.Array, teacher_logits: jax.Array,
                              temperature: float = 1.0) -> jax.Array:
  """Per-example `KL(p_t^T || p_s^T) = Σ_c p_t log(p_t / p_s)` with `p^T = softmax(z / T)`; shape [B].

  Computed from log-softmax in float32 (or float64 for float64 logits, `kd_jax.losses.dtypes`) so that a high
  temperature or bf16 logits do not lose the small probabilities that carry the "dark knowledge".
  """
  log_p_s = jax.nn.log_softmax(at_least_float32(student_logits) / temperature, axis=-1)
  log_p_t = jax.nn.log_softmax(at_least_float32(teacher_logits) / temperature, axis=-1)
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


def kd_per_sample_temperature(student_logits: jax.Array, teacher_logits: jax.Array,
                              temperatures: jax.Array) -> jax.Array:
  """Hinton KD with a temperature per sample: `mean_b T_b²·KL(softmax(z_t,b/T_b) || softmax(z_s,b/T_b))`.

  The form shared by the methods that choose a temperature per sample: Energy KD (Kim et al., KBS 2024,
  arXiv:2311.14334; Seonghak35/EnergyKD `mdistiller/distillers/energyKD.py::kd_t_loss`) and CTKD's
  instance-wise temperature (Li et al., AAAI 2023, arXiv:2211.16231; zhengli97/CTKD README, "Instance-wise
  Temperature": the per-sample `KL_Loss` summed and divided by B). Each sample's KL is summed over classes and
  multiplied by its own T_b²; the mean runs over the batch. With every T_b = T this is `kd(..., T)`.
  The teacher logits are constants (stop_gradient); the temperatures are not stopped, so a learned
  temperature (CTKD) gets its gradient through here.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; constants for the gradient.
    temperatures: [B] positive temperatures (or a scalar, broadcast to every sample).
  """
  _check_pair("kd_per_sample_temperature", student_logits, teacher_logits)
  temps = jnp.broadcast_to(jnp.asarray(temperatures), student_logits.shape[:1])[:, None]
  log_p_s = jax.nn.log_softmax(at_least_float32(student_logits) / temps, axis=-1)
  log_p_t = jax.nn.log_softmax(at_least_float32(jax.lax.stop_gradient(teacher_logits)) / temps, axis=-1)
  per_example = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
  return jnp.mean(per_example * temps[:, 0] ** 2)


# ------------------------------------------------------------------------------------------------------
# Logit methods beyond Hinton KD: DKD, DIST, logit standardization, Energy KD, ensemble KD.
# ------------------------------------------------------------------------------------------------------


def _check_pair(name: str, student_logits: jax.Array, teacher_logits: jax.Array) -> None:
  if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
    raise ValueError(f"{name}: student logits {student_logits.shape} and teacher logits "
                     f"{teacher_logits.shape} must have the same shape [B, C].")


def _check_temperature(name: str, temperature: float) -> None:
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f"{name}: temperature must be > 0, got {temperature}.")


def dkd_parts(student_logits: jax.Array, teacher_logits: jax.Array, *, labels: jax.Array,
              temperature: float = 4.0) -> tuple[jax.Array, jax.Array]:
  """Per-example TCKD and NCKD of Decoupled KD, *without* the T² factor; two arrays of shape [B].

  With `p = softmax(z/T)`, target class `y`, binary distribution `b = [p_y, 1 − p_y]` and the distribution
  among non-target classes `p̂_c = p_c / (1 − p_y)` (c ≠ y):

      TCKD = KL(b_t || b_s)          NCKD = KL(p̂_t || p̂_s)

  and the paper's decomposition (Zhao et al. 2022, Eq. 4) holds exactly per example:
  `KL(p_t || p_s) = TCKD + (1 − p_t,y) · NCKD`.

  Conventions follow mdistiller's `dkd_loss` (megvii-research/mdistiller, `mdistiller/distillers/DKD.py`):
  NCKD masks the target by subtracting 1000 from its *scaled* logit `z_y/T` before the softmax. TCKD's
  `log(1 − p_y)` is computed in log space, `logsumexp_{c≠y}(z_c/T) − logsumexp_c(z_c/T)`, which has the
  same value as mdistiller's `log(sum of masked probabilities)` but stays finite when `p_y` rounds to 1.
  The teacher logits are constants (stop_gradient).

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C].
    labels: [B] integer target classes.
    temperature: T > 0.
  """
  _check_pair("dkd", student_logits, teacher_logits)
  _check_temperature("dkd", temperature)
  num_classes = student_logits.shape[-1]
  gt = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
  zs = at_least_float32(student_logits) / temperature
  zt = at_least_float32(jax.lax.stop_gradient(teacher_logits)) / temperature

  def binary_log_probs(z):
    log_all = jax.nn.logsumexp(z, axis=-1)
    log_target = jnp.sum(jnp.where(gt, z, 0.0), axis=-1) - log_all
    log_other = jax.nn.logsumexp(jnp.where(gt, -jnp.inf, z), axis=-1) - log_all
    return jnp.stack([log_target, log_other], axis=-1)

  log_bs, log_bt = binary_log_probs(zs), binary_log_probs(zt)
  tckd = jnp.sum(jnp.exp(log_bt) * (log_bt - log_bs), axis=-1)

  log_ps_hat = jax.nn.log_softmax(zs - 1000.0 * gt, axis=-1)
  log_pt_hat = jax.nn.log_softmax(zt - 1000.0 * gt, axis=-1)
  nckd = jnp.sum(jnp.exp(log_pt_hat) * (log_pt_hat - log_ps_hat), axis=-1)
  return tckd, nckd


def dkd(student_logits: jax.Array, teacher_logits: jax.Array, *, labels: jax.Array, alpha: float = 1.0,
        beta: float = 8.0, temperature: float = 4.0) -> jax.Array:
  """Decoupled knowledge distillation: `α·T²·mean_b TCKD + β·T²·mean_b NCKD`.

  Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR 2022, arXiv:2203.08679.
  TCKD (target-class KD) is the KL between the binary [target, rest] distributions of teacher and
  student; NCKD (non-target-class KD) is the KL among the non-target classes (see `dkd_parts` for the
  formulas and the exact identity `KD = TCKD + (1 − p_t,y)·NCKD`). Hinton KD weights NCKD by the teacher's
  `1 − p_t,y`, which is small exactly where the teacher is confident; DKD decouples the two weights.

  Conventions: each part is summed over its classes, multiplied by T² and averaged over the batch, as
  mdistiller's `dkd_loss` does (`kl_div(..., size_average=False) · T² / B`).

  Defaults come from mdistiller's `engine/cfg.py` (`CFG.DKD`: ALPHA 1.0, BETA 8.0, T 4.0; CE weight 1.0,
  WARMUP 20 epochs) [code]; the per-pair CIFAR-100 configs there change BETA (e.g. 2 for resnet56→20,
  6 for wrn40_2→wrn16_2). The linear warm-up `min(epoch/20, 1)` is applied by the `DKD` distiller, not here.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; constants for the gradient.
    labels: [B] integer target classes.
    alpha: weight of TCKD.
    beta: weight of NCKD.
    temperature: T > 0.
  """
  tckd, nckd = dkd_parts(student_logits, teacher_logits, labels=labels, temperature=temperature)
  return temperature**2 * (alpha * jnp.mean(tckd) + beta * jnp.mean(nckd))


def pearson_correlation(x: jax.Array, y: jax.Array, *, axis: int = -1, eps: float = 1e-8) -> jax.Array:
  """Pearson correlation of `x` and `y` along `axis`: the cosine of the centred vectors.

  `ρ = <x − x̄, y − ȳ> / (‖x − x̄‖·‖y − ȳ‖ + eps)`, with `eps` added to the product of the norms as in
  DIST's official `pearson_correlation` (eps 1e-8). A constant vector has correlation 0 with anything.
  """
  xc = x - jnp.mean(x, axis=axis, keepdims=True)
  yc = y - jnp.mean(y, axis=axis, keepdims=True)
  num = jnp.sum(xc * yc, axis=axis)
  return num / (jnp.linalg.norm(xc, axis=axis) * jnp.linalg.norm(yc, axis=axis) + eps)


def dist_relations(student_probs: jax.Array, teacher_probs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """DIST's two relation losses on [B, C] probability matrices, unscaled: `(inter, intra)`.

  `inter = 1 − (1/B) Σ_b ρ(P_s[b, :], P_t[b, :])` (rows: each sample's class distribution) and
  `intra = 1 − (1/C) Σ_c ρ(P_s[:, c], P_t[:, c])` (columns: each class over the batch), ρ being
  `pearson_correlation`. Both are invariant to positive affine maps `a·P + b` of either argument (per row
  for `inter`, per column for `intra`), which is what lets the student match relations rather than values.
  The teacher probabilities are constants (stop_gradient).
  """
  if student_probs.ndim != 2 or student_probs.shape != teacher_probs.shape:
    raise ValueError(f"dist: student {student_probs.shape} and teacher {teacher_probs.shape} must have the "
                     "same shape [B, C].")
  ps = at_least_float32(student_probs)
  pt = at_least_float32(jax.lax.stop_gradient(teacher_probs))
  inter = 1.0 - jnp.mean(pearson_correlation(ps, pt, axis=1))
  intra = 1.0 - jnp.mean(pearson_correlation(ps, pt, axis=0))
  return inter, intra


def dist(student_logits: jax.Array, teacher_logits: jax.Array, *, beta: float = 1.0, gamma: float = 1.0,
         temperature: float = 1.0) -> jax.Array:
  """DIST: `T²·(β·L_inter + γ·L_intra)` with Pearson-correlation relation losses on `softmax(z/T)`.

  Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022,
  arXiv:2205.10536. `L_inter = 1 − mean over samples of ρ(p_s[b,:], p_t[b,:])` and
  `L_intra = 1 − mean over classes of ρ(p_s[:,c], p_t[:,c])` (see `dist_relations`). The total training
  loss of the paper is `α·CE + β·L_inter + γ·L_intra`; the CE term is a separate `ce` distiller here.

  Conventions: both terms are multiplied by T², as the official loss does
  (hunto/image_classification_sota `lib/models/losses/dist_kd.py`, later revision with `tau`); the
  intra-class term depends on the batch (it correlates columns across samples). No other reduction: each
  term is already a mean.

  Defaults: β = γ = 1 and T = 1 are the official code's `DIST(beta=1, gamma=1, tau=1)` (`--kd dist`, the
  ImageNet setting) [code]; T = 1 also reproduces the first released loss, which had no temperature and no
  T² factor. For other temperatures later revisions of the official `KDLoss`
  (`lib/models/losses/kd_loss.py`) have `--kd dist_t<τ>` = `DIST(beta=1, gamma=1, tau=τ)` [code, read in
  copies of that file; the revision we could open predates it]. The CIFAR-100 recipe is `configs/strategies/distill/dist_cifar.yaml` (hunto/DIST_KD
  README), which we could not read: that it uses τ = 4 (`dist_t4`) is [2nd] (third-party notes running the
  official code that way), and its CE/KD loss weights are unverified. Several third-party ports use
  β = γ = 2, τ = 4 on CIFAR-100 [2nd].

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; constants for the gradient.
    beta: weight of the inter-class (per-sample) relation loss.
    gamma: weight of the intra-class (per-class, across the batch) relation loss.
    temperature: T > 0.
  """
  _check_pair("dist", student_logits, teacher_logits)
  _check_temperature("dist", temperature)
  ps = jax.nn.softmax(at_least_float32(student_logits) / temperature, axis=-1)
  pt = jax.nn.softmax(at_least_float32(jax.lax.stop_gradient(teacher_logits)) / temperature, axis=-1)
  inter, intra = dist_relations(ps, pt)
  return temperature**2 * (beta * inter + gamma * intra)


def standardize_logits(logits: jax.Array, *, eps: float = 1e-7, ddof: int = 1) -> jax.Array:
  """Per-sample Z-score of logits: `(z − mean_c z) / (std_c z + eps)`.

  As the logit-standardization reference code (`normalize` in sunshangquan/logit-standardization-KD,
  `mdistiller/distillers/KD.py`): `torch.std` is the unbiased estimate (ddof = 1) and eps = 1e-7 is added to
  the standard deviation. Apply it before any logit method (KD, DKD, ...) to get its "+LS" variant.
  """
  z = at_least_float32(logits)
  mean = jnp.mean(z, axis=-1, keepdims=True)
  std = jnp.std(z, axis=-1, keepdims=True, ddof=ddof)
  return (z - mean) / (std + eps)


def logit_standardized_kd(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 2.0,
                          *, eps: float = 1e-7, ddof: int = 1) -> jax.Array:
  """KD on Z-scored logits: `T²·mean_b KL(softmax(Z(z_t)/T) || softmax(Z(z_s)/T))`.

  Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024, arXiv:2403.01427.
  `Z(z) = (z − mean(z)) / (std(z) + eps)` per sample (`standardize_logits`); equivalently each of teacher
  and student gets its own temperature `T·std(z)`, which is how the paper writes it. The loss is unchanged
  by any per-sample `z → a·z + b` with a > 0 applied to either side (up to eps).

  Conventions follow the official code (sunshangquan/logit-standardization-KD, `mdistiller/distillers/KD.py`
  and `tools/train.py`) [code]: the KL is summed over classes, averaged over the batch and multiplied by T²
  (the *base* temperature, not T·std). Their CIFAR-100 runs use `--logit-stand --base-temp 2 --kd-weight 9`
  with mdistiller's KD CE weight 0.1, i.e. `0.1·CE + 9·LS-KD` at T = 2 (T = 3 for a few pairs, per the log
  names `KD_TYPE,TEACHER,STUDENT,BASE_TEMPERATURE,KD_WEIGHT`); the default T = 2 comes from there.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; constants for the gradient.
    temperature: the base temperature T > 0.
    eps: added to the per-sample standard deviation (code: 1e-7).
    ddof: 1 = unbiased std as `torch.std` (code); 0 = population std.
  """
  _check_pair("logit_standardized_kd", student_logits, teacher_logits)
  _check_temperature("logit_standardized_kd", temperature)
  zs = standardize_logits(student_logits, eps=eps, ddof=ddof)
  zt = standardize_logits(jax.lax.stop_gradient(teacher_logits), eps=eps, ddof=ddof)
  return temperature**2 * jnp.mean(kl_divergence_per_example(zs, zt, temperature))


def energy_score(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Energy score `E(x) = −T·logsumexp(z / T)` per sample; shape [B]. Low energy = confident.

  Liu, Wang, Owens, Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020, arXiv:2010.03759,
  whose default is T = 1. Energy KD uses it on the *teacher's* logits with T_E = 4 (`energy_T = 4.0` in
  Seonghak35/EnergyKD `engine/utils.py::cal_energy` and `distillers/energyKD.py`) [code].
  """
  _check_temperature("energy_score", temperature)
  return -temperature * jax.nn.logsumexp(at_least_float32(logits) / temperature, axis=-1)


def energy_thresholds(energies, low_fraction: float = 0.2, high_fraction: float = 0.2) -> tuple[float, float]:
  """Energy KD's thresholds from the teacher energies of the whole training set: `(low_thr, high_thr)`.

  As Seonghak35/EnergyKD `engine/utils.py::cal_energy` [code]: sort the N energies in ascending order `e`,
  `low_thr = e[⌊N·low_fraction⌋]`, `high_thr = e[−(⌊N·high_fraction⌋ + 1)]`. With the strict comparisons
  of `energy_temperatures` (`E < low_thr`, `E > high_thr`), the ⌊N·fraction⌋ lowest and highest samples
  (ties aside) fall in the two groups. Reference defaults: LOW_RATE = HIGH_RATE = 0.2; the resnet56→resnet20
  config uses 0.3/0.3. (The reference skips the last incomplete batch of its loader; pass whatever samples
  you want counted.) Pure NumPy on the host; call it once before training.

  Args:
    energies: [N] teacher energies (`energy_score(teacher_logits, 4.0)` over the training data).
    low_fraction: fraction of samples in the low-energy group, in [0, 1).
    high_fraction: fraction of samples in the high-energy group, in [0, 1).
  """
  e = np.sort(np.asarray(energies, dtype=np.float64).reshape(-1))
  n = e.shape[0]
  if n == 0:
    raise ValueError("energy_thresholds: no energies given.")
  for name, f in (("low_fraction", low_fraction), ("high_fraction", high_fraction)):
    if not 0.0 <= f < 1.0:
      raise ValueError(f"energy_thresholds: {name} must be in [0, 1), got {f}.")
  low_idx = int(n * low_fraction)
  high_idx = int(n * high_fraction) + 1
  return float(e[low_idx]), float(e[-high_idx])


def energy_temperatures(energies: jax.Array, energy_low, energy_high, *, low_energy_temperature: float = 6.0,
                        temperature: float = 4.0, high_energy_temperature: float = 2.0) -> jax.Array:
  """Per-sample temperatures of Energy KD: `T_low_E` where `E < energy_low`, `T_high_E` where
  `E > energy_high`, `temperature` otherwise (equality gets the middle temperature); shape [B].

  The defaults follow the paper's stated rule (arXiv:2311.14334 abstract: "a higher temperature to low
  energy samples ... a lower temperature to high energy samples"): 6 for low energy, 4 in the middle, 2 for
  high energy. The reference code's defaults are the opposite (`energyKD.T.LOW = 2.0` applied where
  `E < low_thr`, `T.HIGH = 6.0` where `E > high_thr`): pass `low_energy_temperature=2.0,
  high_energy_temperature=6.0` to reproduce it. If the thresholds overlap (energy_low > energy_high) a
  sample in both groups gets `low_energy_temperature` (the reference would add the two).
  """
  energies = jnp.asarray(energies, jnp.float32)
  return jnp.where(energies < energy_low, jnp.float32(low_energy_temperature),
                   jnp.where(energies > energy_high, jnp.float32(high_energy_temperature),
                             jnp.float32(temperature)))


def energy_kd(student_logits: jax.Array, teacher_logits: jax.Array, *, energy_low, energy_high,
              temperature: float = 4.0, low_energy_temperature: float = 6.0,
              high_energy_temperature: float = 2.0, energy_temperature: float = 4.0) -> jax.Array:
  """Energy KD: `mean_b T_b²·KL(softmax(z_t,b/T_b) || softmax(z_s,b/T_b))`, T_b chosen by teacher energy.

  Kim, Ham, Lee, Jang, Kim, "Maximizing discrimination capability of knowledge distillation with energy
  function", Knowledge-Based Systems 296:111911, 2024, arXiv:2311.14334; code Seonghak35/EnergyKD
  (`mdistiller/distillers/energyKD.py::kd_t_loss`). The teacher energy `E_b = energy_score(z_t,b, T_E)`
  (T_E = 4 in the code) is compared with thresholds fixed before training (`energy_thresholds` over the
  teacher's energies on the training set) and `energy_temperatures` maps it to T_b.

  Conventions (code): per-sample KL summed over classes, times that sample's T_b², averaged over the batch.
  The reference trains with `0.1·CE + 0.9·L_KD`.

  ⚠ Temperature direction: the defaults follow the paper's stated rule (low energy → T = 6, high energy →
  T = 2, middle T = 4), as the paper's abstract states it; the reference code's defaults are reversed
  (`energyKD.T.LOW = 2.0`, `T.HIGH = 6.0` in Seonghak35/EnergyKD `mdistiller/engine/cfg.py`, i.e.
  `low_energy_temperature=2.0, high_energy_temperature=6.0`). Run both and report both.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; constants for the gradient (the temperatures depend on them, piecewise
      constantly).
    energy_low: low threshold (samples with E < energy_low are "low energy").
    energy_high: high threshold (samples with E > energy_high are "high energy").
    temperature: the middle temperature (code: T.MID = 4).
    low_energy_temperature: temperature of the low-energy group.
    high_energy_temperature: temperature of the high-energy group.
    energy_temperature: T_E of the energy score (code: 4).
  """
  zt, temps = _energy_sample_temperatures("energy_kd", student_logits, teacher_logits, energy_low, energy_high,
                                         temperature, low_energy_temperature, high_energy_temperature,
                                         energy_temperature)
  return kd_per_sample_temperature(student_logits, zt, temps)


def _energy_sample_temperatures(name, student_logits, teacher_logits, energy_low, energy_high, temperature,
                                low_energy_temperature, high_energy_temperature, energy_temperature):
  """`(z_t, T_b)`: the teacher's logits as constants and each sample's temperature from its energy (Energy KD's
  rule, `energy_temperatures`), after checking the inputs; shared by `energy_kd` and `energy_dkd`."""
  _check_pair(name, student_logits, teacher_logits)
  for key, t in (("temperature", temperature), ("low_energy_temperature", low_energy_temperature),
                 ("high_energy_temperature", high_energy_temperature), ("energy_temperature", energy_temperature)):
    _check_temperature(f"{name} ({key})", t)
  zt = at_least_float32(jax.lax.stop_gradient(teacher_logits))
  temps = energy_temperatures(energy_score(zt, energy_temperature), energy_low, energy_high,
                              low_energy_temperature=low_energy_temperature, temperature=temperature,
                              high_energy_temperature=high_energy_temperature)
  return zt, temps


def energy_dkd(student_logits: jax.Array, teacher_logits: jax.Array, *, labels: jax.Array, energy_low,
               energy_high, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
               low_energy_temperature: float = 6.0, high_energy_temperature: float = 2.0,
               energy_temperature: float = 4.0) -> jax.Array:
  """Energy DKD: DKD with Energy KD's per-sample temperature, `mean_b T_b²·(α·TCKD_b + β·NCKD_b)`.

  Kim, Ham, Lee, Jang, Kim, "Maximizing discrimination capability of knowledge distillation with energy
  function", Knowledge-Based Systems 296:111911, 2024, arXiv:2311.14334; code Seonghak35/EnergyKD
  (`mdistiller/distillers/energyDKD.py::dkd_loss`) [code]. `T_b` is chosen from the teacher's energy exactly
  as in `energy_kd` (`energy_temperatures(energy_score(z_t, T_E), ...)`), and TCKD_b, NCKD_b are `dkd_parts`
  at that sample's temperature. With every T_b = T this is `dkd(..., temperature=T)`.

  Conventions (code): each part is summed over its classes, multiplied by its own sample's T_b² and averaged
  over the batch (`(kl.sum(1)·T²).mean()`). The reference's warm-up `min(epoch/20, 1)` and CE term (weight 1)
  belong to the distiller and the run. Defaults: α = 1, β = 8 (`CFG.energyDKD`), the paper's temperature
  rule (low energy → 6, middle 4, high energy → 2); the reference's vgg13→vgg8 config uses β = 6,
  `T.LOW = 2.0`, `T.HIGH = 6.0` and energy rates 0.1/0.1 (see the ⚠ on direction in `energy_kd`).

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; constants for the gradient (the temperatures depend on them piecewise constantly).
    labels: [B] integer target classes.
    energy_low, energy_high: the energy thresholds (`energy_thresholds` over the training set).
    alpha: weight of TCKD.
    beta: weight of NCKD.
    temperature: the middle temperature.
    low_energy_temperature: temperature of the samples with E < energy_low.
    high_energy_temperature: temperature of the samples with E > energy_high.
    energy_temperature: T_E of the energy score (code: 4).
  """
  zt, temps = _energy_sample_temperatures("energy_dkd", student_logits, teacher_logits, energy_low, energy_high,
                                         temperature, low_energy_temperature, high_energy_temperature,
                                         energy_temperature)
  tckd, nckd = dkd_parts(student_logits, zt, labels=labels, temperature=temps[:, None])
  return jnp.mean(temps**2 * (alpha * tckd + beta * nckd))


def ensemble_kd(student_logits: jax.Array, teacher_logits_list, temperature: float = 4.0, *,
                average: Literal["probs", "logits"] = "probs", weights=None) -> jax.Array:
  """KD from an ensemble of teachers: `T²·mean_b KL(q_b || softmax(z_s,b/T))`.

  Model compression / ensemble distillation: Buciluǎ, Caruana, Niculescu-Mizil, "Model Compression",
  KDD 2006 (no arXiv), and Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015,
  arXiv:1503.02531 (distilling an ensemble into one model). The target is

    - `average="probs"` (default; Hinton et al. propose "an arithmetic or geometric mean" of the ensemble's
      predictive distributions as soft targets):
      `q = Σ_k w_k softmax(z_k/T)`, the arithmetic mean of the softened teacher distributions;
    - `average="logits"`: `q = softmax(Σ_k w_k z_k / T)`, the normalised geometric mean of them.

  Weights default to uniform and are normalised to sum to 1 [assume]. Conventions: KL summed over
  classes, averaged over the batch, × T² as Hinton KD. The default T = 4 is the CIFAR KD convention
  (RepDistiller/mdistiller) [assume]; neither source fixes it for ensembles.

  Args:
    student_logits: [B, C].
    teacher_logits_list: a sequence of K arrays [B, C] or one array [K, B, C]; constants for the gradient.
    temperature: T > 0.
    average: "probs" or "logits".
    weights: optional K non-negative weights.
  """
  if average not in ("probs", "logits"):
    raise ValueError(f"ensemble_kd: average must be 'probs' or 'logits', got {average!r}.")
  _check_temperature("ensemble_kd", temperature)
  teachers = jnp.stack([jnp.asarray(t) for t in teacher_logits_list]) if isinstance(
      teacher_logits_list, (list, tuple)) else jnp.asarray(teacher_logits_list)
  if teachers.ndim != 3 or teachers.shape[1:] != student_logits.shape:
    raise ValueError(f"ensemble_kd: teacher logits {teachers.shape} must be K arrays shaped like the student "
                     f"logits {student_logits.shape}.")
  k = teachers.shape[0]
  if weights is None:
    w = jnp.full((k,), 1.0 / k, jnp.float32)
  else:
    if isinstance(weights, (list, tuple)):
      if len(weights) != k or any(x < 0 for x in weights) or not sum(weights) > 0:
        raise ValueError(f"ensemble_kd: weights must be {k} non-negative numbers with a positive sum, got "
                         f"{list(weights)}.")
    w = jnp.asarray(weights, jnp.float32)
    w = w / jnp.sum(w)
  teachers = at_least_float32(jax.lax.stop_gradient(teachers)) / temperature
  if average == "probs":
    log_w = jnp.log(w)[:, None, None]
    log_q = jax.nn.logsumexp(log_w + jax.nn.log_softmax(teachers, axis=-1), axis=0)
  else:
    log_q = jax.nn.log_softmax(jnp.tensordot(w, teachers, axes=1), axis=-1)
  log_p_s = jax.nn.log_softmax(at_least_float32(student_logits) / temperature, axis=-1)
  per_example = jnp.sum(jnp.exp(log_q) * (log_q - log_p_s), axis=-1)
  return temperature**2 * jnp.mean(per_example)


# ------------------------------------------------------------------------------------------------------
# Dense guidance from several teachers (DGKD) and its stochastic teaching.
# ------------------------------------------------------------------------------------------------------


def dgkd(student_logits: jax.Array, teacher_logits_list, temperature: float = 5.0, *, keep=None,
         reduction: Reduction = "batchmean") -> jax.Array:
  """Densely guided KD: `T² · Σ_k m_k · KL(softmax(z_k/T) || softmax(z_s/T))`, one term per teacher.

  Son, Na, Choi, Hwang, "Densely Guided Knowledge Distillation using Multiple Teacher Assistants", ICCV
  2021, arXiv:2009.08825; reference code wonchulSon/DGKD (`train.py`): the student distils from the teacher
  and from every teacher assistant trained before it, and the code's loss is
  `(1−λ)·CE + λ·T²·Σ_k KLDivLoss(log_softmax(z_s/T), softmax(z_k/T))` with T = 5 — the KD terms are summed,
  not averaged (CE is a separate term of the run's weighted sum). `keep` is stochastic DGKD's mask: a
  dropped teacher's term is multiplied by 0 (`teacher_keep_mask`). With one teacher and no mask this is
  `kd` exactly.

  Args:
    student_logits: [B, C].
    teacher_logits_list: K arrays [B, C] or one array [K, B, C]; constants for the gradient.
    temperature: T > 0 (the reference's default is 5).
    keep: optional [K] mask of 0/1 (or weights) per teacher; None keeps every term.
    reduction: as `kd`: "batchmean" (textbook, default) or "mean" (÷ B·C, the reference's
      `nn.KLDivLoss()` default reduction).
  """
  if reduction not in ("batchmean", "mean"):
    raise ValueError(f"dgkd: reduction must be 'batchmean' or 'mean', got {reduction!r}.")
  _check_temperature("dgkd", temperature)
  teachers = jnp.stack([jnp.asarray(t) for t in teacher_logits_list]) if isinstance(
      teacher_logits_list, (list, tuple)) else jnp.asarray(teacher_logits_list)
  if teachers.ndim != 3 or teachers.shape[1:] != student_logits.shape:
    raise ValueError(f"dgkd: teacher logits {teachers.shape} must be K arrays shaped like the student logits "
                     f"{student_logits.shape}.")
  per_teacher = jax.vmap(lambda t: jnp.mean(kl_divergence_per_example(
      student_logits, jax.lax.stop_gradient(t), temperature)))(teachers)  # [K], mean over the batch
  if reduction == "mean":
    per_teacher = per_teacher / student_logits.shape[-1]
  if keep is not None:
    keep = jnp.asarray(keep)
    if keep.shape != per_teacher.shape:
      raise ValueError(f"dgkd: keep has shape {keep.shape}, expected ({teachers.shape[0]},) (one per teacher).")
    per_teacher = per_teacher * keep.astype(per_teacher.dtype)
  return temperature**2 * jnp.sum(per_teacher)


def teacher_keep_mask(rng: jax.Array, num_teachers: int, *, drop_num: int = 0,
                      survival: float = 1.0) -> jax.Array:
  """Stochastic DGKD's per-step mask over K teachers: float32 [K] of 0/1 with at least one 1.

  Two forms (Son et al., ICCV 2021, arXiv:2009.08825):
    - `drop_num` > 0 (the reference code's `--drop-num`, default 1 there): exactly `drop_num` of the K terms,
      chosen uniformly at random without replacement, are dropped each step; needs `drop_num < K` so that
      at least one teacher remains (the code's `list.remove(random.choice(...))` would empty the list).
    - `survival` < 1 (the paper's form, p = 0.75): each term survives independently with probability p;
      when every term is dropped, one teacher chosen uniformly at random is kept [assume: the paper does not
      say what happens then; an empty sum would leave the student with no guidance that step].
  With neither, every term is kept. Deterministic in `rng` (the train step folds its step number in, so a
  resumed run drops the same terms at the same steps).
  """
  if drop_num and survival < 1.0:
    raise ValueError("teacher_keep_mask: give drop_num (drop exactly that many) or survival (Bernoulli), not both.")
  if not 0 <= drop_num < max(num_teachers, 1):
    raise ValueError(f"teacher_keep_mask: drop_num must be in [0, {num_teachers}) for {num_teachers} teachers so "
                     f"that one is kept, got {drop_num}.")
  if not 0.0 < survival <= 1.0:
    raise ValueError(f"teacher_keep_mask: survival must be in (0, 1], got {survival}.")
  if drop_num:
    dropped = jax.random.permutation(rng, num_teachers)[:drop_num]
    return jnp.ones((num_teachers,), jnp.float32).at[dropped].set(0.0)
  if survival < 1.0:
    bernoulli_rng, fallback_rng = jax.random.split(rng)
    keep = jax.random.bernoulli(bernoulli_rng, survival, (num_teachers,))
    fallback = jax.nn.one_hot(jax.random.randint(fallback_rng, (), 0, num_teachers), num_teachers) > 0
    return jnp.where(jnp.any(keep), keep, fallback).astype(jnp.float32)
  return jnp.ones((num_teachers,), jnp.float32)


# ------------------------------------------------------------------------------------------------------
# Normalized KD (NKD) and transformed teacher matching (TTM, WTTM).
# ------------------------------------------------------------------------------------------------------


def _check_labels(name: str, logits: jax.Array, labels: jax.Array) -> None:
  if labels.shape != logits.shape[:1]:
    raise ValueError(f"{name}: labels {labels.shape} must be [B] integer class ids for logits {logits.shape}.")


def nkd(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *, temperature: float = 1.0,
        gamma: float = 1.5) -> jax.Array:
  """Normalized KD: a target term weighted by the teacher's target probability plus a renormalised
  non-target term, `L_target + γ·T²·L_non_target`.

  Yang, Zeng, Yuan, Li, "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with
  Normalized Loss and Customized Soft Labels", ICCV 2023, arXiv:2303.13005. With `p = softmax(z)` (T = 1),
  target class `y`, and `q^T` the softmax of the C − 1 non-target logits `z_¬y / T` (the target column
  removed, so `q^T` sums to 1 over the non-target classes):

      L_target     = −mean_b  p_t,y · log p_s,y
      L_non_target = −mean_b  Σ_{c≠y} q_t,c^T · log q_s,c^T

  The target term is at temperature 1 whatever T is; only the non-target term is softened and scaled by T².
  `p_t,y` and `q_t` are constants (stop_gradient on the teacher). The non-target term does not depend on the
  target logits at all, and since `Σ_c q_t,c = 1` it is a cross-entropy (not a KL: it differs from
  `KL(q_t ‖ q_s)` by the teacher's entropy, a constant for the gradient).

  Conventions follow the reference `NKDLoss` (yzd-v/cls_KD, `mmcls/models/dis_losses/nkd.py`) [code]: the
  target term is `.mean()` of an [N, 1] tensor, i.e. the batch mean; the non-target term is summed over the
  non-target classes and averaged over the batch. The reference's trainer (`ClassificationDistiller` in
  `mmcls/models/classifiers/distiller.py`) adds the student's own cross-entropy at weight 1 and this loss at
  weight 1, with γ inside; that CE is a separate `ce` term here. The non-target softmax is computed in log
  space over the non-target classes only (the target masked out of the logsumexp), so no masking constant or
  infinity enters.

  Defaults: T = 1, γ = 1.5 are `NKDLoss`'s own defaults and the ImageNet configs'
  (`configs/distillers/imagenet/res34_distill_res18_img.py`, `res50_distill_mv1_img.py`) [code]; the
  CIFAR-100 config (`configs/distillers/cifar100/res34_distill_res18_cifar.py`) uses T = 3, γ = 3.5, and the
  DeiT config γ = 1.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; constants for the gradient.
    labels: [B] integer target classes.
    temperature: T > 0 of the non-target term.
    gamma: weight γ of the non-target term (γ = 0 leaves the target term alone).
  """
  _check_pair("nkd", student_logits, teacher_logits)
  _check_temperature("nkd", temperature)
  _check_labels("nkd", student_logits, labels)
  num_classes = student_logits.shape[-1]
  gt = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
  zs = at_least_float32(student_logits)
  zt = at_least_float32(jax.lax.stop_gradient(teacher_logits))

  log_ps_y = jnp.sum(jnp.where(gt, jax.nn.log_softmax(zs, axis=-1), 0.0), axis=-1)
  pt_y = jnp.sum(jnp.where(gt, jax.nn.softmax(zt, axis=-1), 0.0), axis=-1)
  target = -jnp.mean(pt_y * log_ps_y)

  def non_target_log_probs(z):
    z = z / temperature
    # log q_c = z_c − logsumexp_{c'≠y} z_c'; the target entry is finite too and is dropped by the masks below.
    return z - jax.nn.logsumexp(jnp.where(gt, -jnp.inf, z), axis=-1, keepdims=True)

  log_qs, log_qt = non_target_log_probs(zs), non_target_log_probs(zt)
  qt = jnp.where(gt, 0.0, jnp.exp(log_qt))
  non_target = -jnp.mean(jnp.sum(qt * jnp.where(gt, 0.0, log_qs), axis=-1))
  return target + gamma * temperature**2 * non_target


def _power_transformed_teacher(teacher_logits: jax.Array, exponent: float) -> tuple[jax.Array, jax.Array]:
  """`(log p̃_t, log Σ_c p_t,c^l)` for `p̃_t = p_t^l / Σ_c p_t,c^l`, `p_t = softmax(z_t)`; both from log-softmax.

  `p̃_t = softmax(l·z_t)`, the teacher at temperature 1/l; the normaliser is returned in log space.
  """
  log_powered = exponent * jax.nn.log_softmax(at_least_float32(jax.lax.stop_gradient(teacher_logits)), axis=-1)
  log_norm = jax.nn.logsumexp(log_powered, axis=-1)
  return log_powered - log_norm[:, None], log_norm


def _check_exponent(name: str, exponent: float) -> None:
  if isinstance(exponent, (int, float)) and not exponent > 0:
    raise ValueError(f"{name}: exponent must be > 0, got {exponent}.")


def ttm(student_logits: jax.Array, teacher_logits: jax.Array, exponent: float = 0.1) -> jax.Array:
  """Transformed teacher matching: `mean_b KL(p̃_t ‖ softmax(z_s))` with `p̃_t = p_t^l / Σ_c p_t,c^l`.

  Zheng, Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024, arXiv:2402.11148.
  The teacher's probabilities `p_t = softmax(z_t)` go through a power transform with exponent `l` (the
  paper's γ; `l = 1/T` makes `p̃_t = softmax(z_t/T)`, the teacher at temperature T), while the student stays
  at temperature 1. No T² factor. With `l = 1` this is the batch-mean KL of Hinton KD at T = 1.
  The teacher is a constant for the gradient (stop_gradient).

  Conventions follow the reference `TTM` (zkxufo/TTM, `distiller_zoo/ttm.py`) [code]: the per-example KL is
  summed over classes and averaged over the batch. The transform is computed in log space,
  `log p̃_t = l·log p_t − logsumexp(l·log p_t)`, rather than by powering the probabilities. The reference's
  training loss is `r·CE + b·TTM` (`helper/loops.py`; flags `-r`, `-b` of `train_student.py`); its README
  example is `--ttm_l 0.1 -r 1 -b 45` for vgg13 → vgg8 on CIFAR-100.

  Default: l = 0.1, the README example's `--ttm_l 0.1` [code]; `train_student.py`'s own default `--ttm_l 1`
  is plain KD at T = 1. The paper's per-pair values (its appendix A.4) could not be read here.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; constants for the gradient.
    exponent: l > 0, the power applied to the teacher's probabilities.
  """
  _check_pair("ttm", student_logits, teacher_logits)
  _check_exponent("ttm", exponent)
  log_pt, _ = _power_transformed_teacher(teacher_logits, exponent)
  log_ps = jax.nn.log_softmax(at_least_float32(student_logits), axis=-1)
  return jnp.mean(jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1))


def wttm(student_logits: jax.Array, teacher_logits: jax.Array, exponent: float = 0.2) -> jax.Array:
  """Weighted TTM: `mean_b (Σ_c p_t,c^l) · KL(p̃_t ‖ softmax(z_s))`, TTM with a per-example weight.

  Zheng, Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024, arXiv:2402.11148.
  The weight of example b is the power transform's normaliser `U_b = Σ_c p_t,c^l` (see `ttm` for `p̃_t`): it
  is 1 for a one-hot teacher and grows to `C^(1−l)` for a uniform one, so samples on which the teacher is
  less certain weigh more. With `l = 1`, `U_b = 1` and WTTM is TTM. The teacher, and so the weights, are
  constants for the gradient (stop_gradient).

  Conventions follow the reference `WTTM` (zkxufo/TTM, `distiller_zoo/wttm.py`) [code]: `mean(norm · KL)`,
  the per-example KL summed over classes, times the unnormalised sum of the powered teacher probabilities,
  averaged over the batch; no T² factor. Training loss `r·CE + b·WTTM` as TTM.

  Default: l = 0.2, the exponent of the README's only WTTM command (`--distill crd --add wttm --ttm_l 0.2
  -b 0.8 -a 4`, WTTM at weight 4 added to CRD); that it suits WTTM alone is [assume]: the README gives no
  standalone WTTM setting and the paper's per-pair values (its appendix A.4) could not be read here.

  Args:
    student_logits: [B, C].
    teacher_logits: [B, C]; constants for the gradient.
    exponent: l > 0, the power applied to the teacher's probabilities.
  """
  _check_pair("wttm", student_logits, teacher_logits)
  _check_exponent("wttm", exponent)
  log_pt, log_norm = _power_transformed_teacher(teacher_logits, exponent)
  log_ps = jax.nn.log_softmax(at_least_float32(student_logits), axis=-1)
  per_example = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
  return jnp.mean(jnp.exp(log_norm) * per_example)


# ------------------------------------------------------------------------------------------------------
# Multi-level logit distillation (MLKD) and curriculum temperature (CTKD).
# ------------------------------------------------------------------------------------------------------


def mlkd_batch_loss(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0) -> jax.Array:
  """MLKD's batch-level alignment: `Σ_ij (G_t − G_s)²_ij / B`, B×B Gram matrices `G = P·Pᵀ`, `P = softmax(z/T)`.

  Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023; reference `bc_loss` in
  Jin-Ying/Multi-Level-Logit-Distillation `mdistiller/distillers/KD_ours.py` [code]. `G_ij` is the inner
  product of samples i and j's predicted distributions, so the term matches how alike the teacher finds each
  pair of samples. Summed over all B² entries and divided by B (no T² factor). The teacher is a constant.
  """
  _check_pair("mlkd_batch_loss", student_logits, teacher_logits)
  _check_temperature("mlkd_batch_loss", temperature)
  ps = jax.nn.softmax(at_least_float32(student_logits) / temperature, axis=-1)
  pt = jax.nn.softmax(at_least_float32(jax.lax.stop_gradient(teacher_logits)) / temperature, axis=-1)
  return jnp.sum((pt @ pt.T - ps @ ps.T) ** 2) / student_logits.shape[0]


def mlkd_class_loss(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0) -> jax.Array:
  """MLKD's class-level alignment: `Σ_jk (M_t − M_s)²_jk / C`, C×C Gram matrices `M = Pᵀ·P`, `P = softmax(z/T)`.

  Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023; reference `cc_loss` in
  Jin-Ying/Multi-Level-Logit-Distillation `mdistiller/distillers/KD_ours.py` [code]. `M_jk` sums, over the
  batch, the probability given to class j times that given to class k: how often the model confuses the two.
  Summed over all C² entries and divided by C (no T² factor). The teacher is a constant.
  """
  _check_pair("mlkd_class_loss", student_logits, teacher_logits)
  _check_temperature("mlkd_class_loss", temperature)
  ps = jax.nn.softmax(at_least_float32(student_logits) / temperature, axis=-1)
  pt = jax.nn.softmax(at_least_float32(jax.lax.stop_gradient(teacher_logits)) / temperature, axis=-1)
  return jnp.sum((pt.T @ pt - ps.T @ ps) ** 2) / student_logits.shape[-1]


def _fraction_at_or_below_percentile(values: jax.Array, percentile: float) -> jax.Array:
  """`mean(values ≤ percentile(values))`, the percentile linearly interpolated as `np.percentile`'s default."""
  return jnp.mean((values <= jnp.percentile(values, percentile)).astype(values.dtype))


def mlkd_parts(student_weak: jax.Array, teacher_weak: jax.Array, student_strong: jax.Array,
               teacher_strong: jax.Array, *, temperatures=(4.0, 3.0, 5.0, 2.0, 6.0), percentile: float = 50.0,
               standardize: bool = False, reference_strong_sum: bool = True) -> dict:
  """The four MLKD terms as the reference computes them, unweighted: a dict of scalars.

  Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023; reference Jin-Ying/Multi-Level-Logit-Distillation
  `mdistiller/distillers/KD_ours.py::KD_ours.forward_train` [code] (the same code, with a logit-standardization
  switch, is `MLKD.py` in sunshangquan/logit-standardization-KD). With `Σ_T` over `temperatures` (the code's
  `cfg.KD.TEMPERATURE` = 4, then 3, 5, 2, 6), weak view `w`, strong (augmented) view `s`:

      instance_weak   = m · Σ_T KD_T(z_s^w, z_t^w)
      instance_strong = Σ_{T in temperatures[:3]} KD_T(z_s^s, z_t^s) + Σ_{T in temperatures[3:]} KD_T(z_s^w, z_t^w)
      class           = c · Σ_T mlkd_class_loss_T(z_s^w, z_t^w)
      batch           = m · Σ_T mlkd_batch_loss_T(z_s^w, z_t^w)

  `KD_T` is `kd` (T²·batch-mean KL). The masks are the reference's teacher-confidence masks on the weak view:
  with `p = softmax(z_t^w)` (T = 1, raw logits), `m = mean_b [max_c p_bc ≤ P50_b(max_c p_bc)]` and
  `c = mean_c [Σ_b p_bc ≤ P50_c(Σ_b p_bc)]` (`np.percentile`, linear interpolation, `≤` as `torch.le`).
  In the code each mask multiplies an already batch-averaged loss and is then averaged (`(loss * mask).mean()`,
  the per-sample `reduce=False` commented out), so it acts as this scalar fraction, about 1/2, not as a
  per-sample selection. Departures from the formulas one would read off the paper, kept because the code
  (and its published numbers) has them: the last two terms of the strong-view instance sum read the weak
  view's logits, unmasked (`reference_strong_sum=False` puts every temperature on the strong view); the
  strong-view class and batch terms are computed there but not added to the loss, so they are absent here.

  `standardize` applies `standardize_logits` to both sides before the instance-level KD only, as the logit
  standardization code does (`kd_loss(..., logit_stand=...)`; the Gram terms and masks use raw logits).
  The training objective is `ce_w·(CE(z_s^w) + CE(z_s^s)) + kd_w·(sum of these four)`, with the reference's
  `ce_w = 0.1`, `kd_w = 0.9` (mdistiller's `CFG.KD.LOSS`); the logit-standardization recipe uses
  `kd_w = 9` and base temperature 2 (temperatures (2, 3, 5, 2, 6)).

  Args:
    student_weak, teacher_weak: [B, C] logits on the weak (training) view; the teacher's are constants.
    student_strong, teacher_strong: [B, C] logits on the strong view; the teacher's are constants.
    temperatures: the instance-, class- and batch-level temperatures.
    percentile: the masks' percentile (code: 50).
    standardize: Z-score the logits of the instance-level KD terms.
    reference_strong_sum: the reference's strong-view instance sum (see above).
  """
  for name, (s, t) in (("weak", (student_weak, teacher_weak)), ("strong", (student_strong, teacher_strong))):
    _check_pair(f"mlkd ({name} view)", s, t)
  if student_weak.shape != student_strong.shape:
    raise ValueError(f"mlkd: weak-view logits {student_weak.shape} and strong-view logits {student_strong.shape} "
                     "must have the same shape.")
  temperatures = tuple(temperatures)
  if not temperatures:
    raise ValueError("mlkd: give at least one temperature.")
  for t in temperatures:
    _check_temperature("mlkd", t)
  if not 0.0 <= percentile <= 100.0:
    raise ValueError(f"mlkd: percentile must be in [0, 100], got {percentile}.")
  zt_w = at_least_float32(jax.lax.stop_gradient(teacher_weak))
  zt_s = at_least_float32(jax.lax.stop_gradient(teacher_strong))
  p_t = jax.nn.softmax(zt_w, axis=-1)
  sample_mask = _fraction_at_or_below_percentile(jnp.max(p_t, axis=-1), percentile)
  class_mask = _fraction_at_or_below_percentile(jnp.sum(p_t, axis=0), percentile)

  prep = standardize_logits if standardize else at_least_float32
  kd_w = lambda t: kd(prep(student_weak), prep(zt_w), t)
  kd_s = lambda t: kd(prep(student_strong), prep(zt_s), t)
  if reference_strong_sum:
    instance_strong = sum(kd_s(t) for t in temperatures[:3]) + sum(kd_w(t) for t in temperatures[3:])
  else:
    instance_strong = sum(kd_s(t) for t in temperatures)
  return {
      "instance_weak": sample_mask * sum(kd_w(t) for t in temperatures),
      "instance_strong": instance_strong,
      "class": class_mask * sum(mlkd_class_loss(student_weak, zt_w, t) for t in temperatures),
      "batch": sample_mask * sum(mlkd_batch_loss(student_weak, zt_w, t) for t in temperatures),
  }


def mlkd(student_weak: jax.Array, teacher_weak: jax.Array, student_strong: jax.Array, teacher_strong: jax.Array,
         **kwargs) -> jax.Array:
  """Multi-level logit distillation, the sum of `mlkd_parts` (instance, class and batch levels, both views).

  Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023; reference Jin-Ying/Multi-Level-Logit-Distillation
  `mdistiller/distillers/KD_ours.py` [code]. Unweighted: the reference multiplies the whole sum by its KD
  weight (0.9) and adds `0.1·(CE(weak) + CE(strong))`. Keyword arguments as `mlkd_parts`.
  """
  return sum(mlkd_parts(student_weak, teacher_weak, student_strong, teacher_strong, **kwargs).values())


@jax.custom_vjp
def gradient_reversal(x: jax.Array, strength) -> jax.Array:
  """The identity forward; backward, the incoming gradient times `−strength` (and none for `strength`).

  Ganin, Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015, arXiv:1409.7495. CTKD
  (Li et al., AAAI 2023, arXiv:2211.16231) puts it between its temperature module and the KD loss, so that
  the optimiser that *descends* the loss in the student's parameters *ascends* it in the temperature's, with
  the curriculum `strength` λ (`ctkd_lambda`). The reference (zhengli97/CTKD `models/temp_global.py`,
  `GradientReversalFunction`) multiplies by the value it is passed, which its training script makes
  negative (`decay_max 0`, `decay_min −1`); here the strength is λ ≥ 0 and the sign is in the layer, as the
  paper writes it.
  """
  del strength
  return x


def _gradient_reversal_fwd(x, strength):
  return x, strength


def _gradient_reversal_bwd(strength, g):
  return (-strength * g).astype(g.dtype), jnp.zeros_like(strength)


gradient_reversal.defvjp(_gradient_reversal_fwd, _gradient_reversal_bwd)


def ctkd_lambda(epoch, *, lambda_min: float = 0.0, lambda_max: float = 1.0, epochs: float = 10.0) -> jax.Array:
  """CTKD's cosine curriculum: `λ(e) = λ_min + (λ_max − λ_min)·(1 − cos(π·min(max(e, 0), E)/E))/2`.

  Li, Li, Yang, Zhao, Song, Luo, Li, Yang, "Curriculum Temperature for Knowledge Distillation", AAAI 2023,
  arXiv:2211.16231; reference `CosineDecay.get_value(epoch)` in zhengli97/CTKD `train_student.py` [code],
  called with the 1-based epoch and, in `scripts/run_cifar_distill.sh`, `--decay_max 0 --decay_min -1
  --decay_loops 10`: the value `(cos(π·e/10) + 1)/2 − 1` it passes to the reversal layer is exactly −λ(e)
  with λ_min = 0, λ_max = 1, E = 10. λ rises from λ_min at e = 0 to λ_max at e ≥ E and stays there
  (the code's first epoch, e = 1, already has λ = (1 − cos(π/10))/2 ≈ 0.024).
  """
  if not epochs > 0:
    raise ValueError(f"ctkd_lambda: epochs must be > 0, got {epochs}.")
  e = jnp.clip(jnp.asarray(epoch, jnp.float32), 0.0, epochs)
  return lambda_min + (lambda_max - lambda_min) * (1.0 - jnp.cos(jnp.pi * e / epochs)) / 2.0
