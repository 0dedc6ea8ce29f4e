"""Losses on intermediate features. Pure functions of arrays; NHWC features, [B, D] embeddings."""

from __future__ import annotations

import math
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.losses.dtypes import at_least_float32


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
  diff = at_least_float32(student_feature) - at_least_float32(jax.lax.stop_gradient(teacher_feature))
  return jnp.mean(jnp.square(diff))


# ------------------------------------------------------------------------------------------------------
# Attention, similarity, correlation, probabilistic, neuron-selectivity and flow-of-solution losses.
# Defaults are the forms in RepDistiller's `distiller_zoo` (HobbitLong/RepDistiller), the code behind the
# CRD paper's CIFAR-100 tables (arXiv:1910.10699); where a paper writes another form it is `form="paper"`.
# Factor transfer is the exception: its authors published code, whose form (`form="paper"`) is its default.
# ------------------------------------------------------------------------------------------------------

Form = Literal["reference", "paper"]


def _check_form(name: str, form: str) -> None:
  if form not in ("reference", "paper"):
    raise ValueError(f"{name}: unknown form {form!r}; use 'reference' (the code behind the published "
                     "tables) or 'paper' (the paper's written form).")


def _check_nhwc(name: str, **features: jax.Array) -> None:
  for key, x in features.items():
    if x.ndim != 4:
      raise ValueError(f"{name}: {key} must be an NHWC feature map [B, H, W, C], got shape {x.shape}.")


def _check_batch(name: str, student: jax.Array, teacher: jax.Array) -> None:
  if student.shape[0] != teacher.shape[0]:
    raise ValueError(f"{name}: student and teacher batch sizes differ ({student.shape[0]} vs "
                     f"{teacher.shape[0]}); both must see the same examples.")


def _l2_normalize(x: jax.Array, axis: int, eps: float = 1e-12) -> jax.Array:
  """`x / max(‖x‖₂, eps)` along `axis` (PyTorch's `F.normalize`); zero vectors stay zero, gradients finite."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def _safe_norm(x: jax.Array, axis: int) -> jax.Array:
  """‖x‖₂ along `axis` with a zero (not NaN) gradient at x = 0."""
  sq = jnp.sum(jnp.square(x), axis=axis)
  return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


def _pool_matrix(size: int, out: int) -> np.ndarray:
  """[out, size] averaging weights of PyTorch's `adaptive_avg_pool` along one axis."""
  weights = np.zeros((out, size), np.float32)
  for i in range(out):
    start, end = (i * size) // out, -((-(i + 1) * size) // out)
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def _adaptive_avg_pool(x: jax.Array, height: int, width: int) -> jax.Array:
  """NHWC adaptive average pooling to (height, width), windows as in `torch.nn.functional.adaptive_avg_pool2d`."""
  if x.shape[1:3] == (height, width):
    return x
  return jnp.einsum("ih,bhwc,jw->bijc", _pool_matrix(x.shape[1], height), x, _pool_matrix(x.shape[2], width))


def _pool_to_common_size(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Average-pools whichever map is larger down to the smaller spatial size (RepDistiller's NST and FSP)."""
  height, width = min(a.shape[1], b.shape[1]), min(a.shape[2], b.shape[2])
  return _adaptive_avg_pool(a, height, width), _adaptive_avg_pool(b, height, width)


def _attention_map(feature: jax.Array, p: float) -> jax.Array:
  """[B, H·W]: `mean_c |f|^p`, flattened and L2-normalised per example."""
  b = feature.shape[0]
  return _l2_normalize(jnp.mean(jnp.abs(feature) ** p, axis=-1).reshape(b, -1), axis=-1)


def attention_transfer(student_feature: jax.Array, teacher_feature: jax.Array, *, p: float = 2.0,
                       form: Form = "reference") -> jax.Array:
  """Attention transfer (AT) on one stage: distance between L2-normalised spatial attention maps.

  Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of Convolutional
  Neural Networks via Attention Transfer", ICLR 2017, arXiv:1612.03928.

  Attention map `a(f) = q / ‖q‖₂` with `q = vec(mean_c |f_c|^p)` ∈ R^{H·W} (p = 2; `|f|^p` equals
  RepDistiller's `f.pow(p)` for the post-ReLU features it reads and for even p).

  - `form="reference"` (default): `mean_{b, hw} (a_s − a_t)²`, the mean over batch *and* spatial positions of
    the squared difference, as `at_loss` in RepDistiller (`(at(f_s) - at(f_t)).pow(2).mean()`), mdistiller and
    the authors' code. RepDistiller weights it β = 1000 and sums it over the stage outputs (`AT` distiller).
  - `form="paper"`: `½ · mean_b ‖a_s − a_t‖₂` (Eq. 2 with the p = 2 norm, not squared, averaged over the
    batch); with weight β this is the paper's `β/2 · ‖·‖₂` term for one stage.

  Channel counts may differ. Spatial sizes must match: this function raises rather than resizing
  (RepDistiller average-pools the larger map first; do so explicitly if a pair needs it).

  Args:
    student_feature: [B, H, W, C_s] NHWC.
    teacher_feature: [B, H, W, C_t] NHWC; treated as a constant (stop_gradient).
    p: exponent of the attention map (> 0).
    form: "reference" or "paper", see above.
  """
  _check_form("attention_transfer", form)
  _check_nhwc("attention_transfer", student_feature=student_feature, teacher_feature=teacher_feature)
  _check_batch("attention_transfer", student_feature, teacher_feature)
  if student_feature.shape[1:3] != teacher_feature.shape[1:3]:
    raise ValueError(f"attention_transfer: spatial sizes must match, got student {student_feature.shape[1:3]} "
                     f"and teacher {teacher_feature.shape[1:3]}; choose stages of equal resolution or "
                     "average-pool the larger map first.")
  if not p > 0:
    raise ValueError(f"attention_transfer: p must be > 0, got {p}.")
  a_s = _attention_map(at_least_float32(student_feature), p)
  a_t = _attention_map(at_least_float32(jax.lax.stop_gradient(teacher_feature)), p)
  if form == "paper":
    return 0.5 * jnp.mean(_safe_norm(a_s - a_t, axis=-1))
  return jnp.mean(jnp.square(a_s - a_t))


def _row_normalized_gram(feature: jax.Array) -> jax.Array:
  flat = feature.reshape(feature.shape[0], -1)
  return _l2_normalize(flat @ flat.T, axis=1)


def similarity_preserving(student_feature: jax.Array, teacher_feature: jax.Array) -> jax.Array:
  """Similarity-preserving KD (SP): match the batch's row-normalised Gram matrices.

  Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019, arXiv:1907.09682.
  `G = row_l2_normalize(Q Qᵀ)` with `Q` the [B, H·W·C] flattened features, and
  `L = ‖G_s − G_t‖_F² / B²` (Eq. 4 for one layer pair). The paper and RepDistiller's `Similarity` agree;
  RepDistiller applies it to the last stage output only with weight 3000 (`SP` distiller), the paper sums
  over chosen layer pairs with γ = 3000 on CIFAR-10.

  Features may have any shapes with the same batch size (channels and spatial sizes may differ). The loss is
  unchanged by a positive scaling of either feature and by permuting its channels.

  Args:
    student_feature: [B, ...].
    teacher_feature: [B, ...]; treated as a constant (stop_gradient).
  """
  _check_batch("similarity_preserving", student_feature, teacher_feature)
  g_s = _row_normalized_gram(at_least_float32(student_feature))
  g_t = _row_normalized_gram(at_least_float32(jax.lax.stop_gradient(teacher_feature)))
  return jnp.sum(jnp.square(g_s - g_t)) / student_feature.shape[0] ** 2


def _taylor_gaussian_kernel(embedding: jax.Array, gamma: float, order: int) -> jax.Array:
  """[B, B]: `Σ_{p=0}^{P} e^{−2γ} (2γ)^p / p! · (x_i·x_j)^p` on L2-normalised rows."""
  x = _l2_normalize(embedding, axis=-1)
  cosine = x @ x.T
  kernel = jnp.zeros_like(cosine)
  for power in range(order + 1):
    kernel = kernel + math.exp(-2.0 * gamma) * (2.0 * gamma) ** power / math.factorial(power) * cosine**power
  return kernel


def correlation_congruence(student_embedding: jax.Array, teacher_embedding: jax.Array, *,
                           form: Form = "reference", gamma: float = 0.4, order: int = 2,
                           stop_teacher_gradient: bool = True) -> jax.Array:
  """Correlation congruence (CC) between student and teacher embeddings of one batch.

  Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019, arXiv:1904.01802.

  - `form="reference"` (default): RepDistiller's `Correlation` (code the authors sent to RepDistiller's author),
    which produced the CIFAR-100 tables: with `δ_i = |e_s,i − e_t,i|` (element-wise),
    `L = mean_{i=1}^{B−1} Σ_d δ_{i,d} · δ_{i+1,d}`, a product of the residuals of *neighbouring* examples in
    the batch. Student and teacher embeddings must have the same shape: RepDistiller first maps both pooled
    features with trainable linear layers to 128 dimensions (the `CC` distiller owns those), weight 0.02.
    `gamma` and `order` are ignored.
  - `form="paper"`: the paper's Eqs. 5–8, `L = (1/B²) ‖K(E_t) − K(E_s)‖_F²`, where `K` is the Gaussian RBF
    kernel `exp(−γ‖x − y‖²)` between L2-normalised embeddings approximated by its `order`-th order Taylor
    expansion, `Σ_{p=0}^{P} e^{−2γ} (2γ)^p / p! (xᵀy)^p`; γ = 0.4, P = 2 as in common re-implementations
    (e.g. Knowledge-Distillation-Zoo) [assume: the paper's CIFAR setting]. Embedding widths may differ.

  Args:
    student_embedding: [B, D_s].
    teacher_embedding: [B, D_t]; treated as a constant (stop_gradient) unless `stop_teacher_gradient` is False.
    form: "reference" or "paper", see above.
    gamma: γ > 0 of the Gaussian kernel (paper form).
    order: P ≥ 0, the Taylor order (paper form).
    stop_teacher_gradient: False lets gradients reach `teacher_embedding`: the `CC` distiller's teacher
      embedding is the output of a trained linear layer (RepDistiller trains both embed layers); the teacher's
      own features are still constants there.
  """
  _check_form("correlation_congruence", form)
  _check_batch("correlation_congruence", student_embedding, teacher_embedding)
  s = at_least_float32(student_embedding.reshape(student_embedding.shape[0], -1))
  t = at_least_float32(teacher_embedding.reshape(teacher_embedding.shape[0], -1))
  if stop_teacher_gradient:
    t = jax.lax.stop_gradient(t)
  if form == "paper":
    if not gamma > 0 or int(order) != order or order < 0:
      raise ValueError(f"correlation_congruence: need gamma > 0 and an integer order >= 0, got gamma={gamma}, "
                       f"order={order}.")
    return jnp.mean(jnp.square(_taylor_gaussian_kernel(s, gamma, int(order)) -
                               _taylor_gaussian_kernel(t, gamma, int(order))))
  if s.shape != t.shape:
    raise ValueError(f"correlation_congruence: the reference form needs embeddings of equal shape, got student "
                     f"{s.shape} and teacher {t.shape}; map them to a common width first (the CC distiller's "
                     "embed layers do).")
  if s.shape[0] < 2:
    raise ValueError("correlation_congruence: the reference form needs a batch of at least 2 examples.")
  delta = jnp.abs(s - t)
  return jnp.mean(jnp.sum(delta[:-1] * delta[1:], axis=-1))


def _cosine_conditional_probabilities(embedding: jax.Array, eps: float, exclude_self: bool) -> jax.Array:
  """[B, B]: rows i = p(j | i) ∝ (cos(x_i, x_j) + 1) / 2."""
  x = embedding / (_safe_norm(embedding, axis=-1)[:, None] + eps)
  kernel = (x @ x.T + 1.0) / 2.0
  if exclude_self:
    kernel = kernel * (1.0 - jnp.eye(kernel.shape[0], dtype=kernel.dtype))
  return kernel / jnp.sum(kernel, axis=-1, keepdims=True)


def pkt(student_embedding: jax.Array, teacher_embedding: jax.Array, *, eps: float = 1e-7,
        form: Form = "reference") -> jax.Array:
  """Probabilistic knowledge transfer (PKT): KL between cosine-kernel conditional distributions over the batch.

  Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018,
  arXiv:1803.10837. Kernel `K(x, y) = (cos(x, y) + 1) / 2` (vectors divided by `‖x‖ + ε`), conditional
  probabilities `p_{j|i} = K(x_i, x_j) / Σ_k K(x_i, x_k)` from the teacher, `q_{j|i}` from the student.

  - `form="reference"` (default): the authors' code as used by RepDistiller and mdistiller
    (`cosine_similarity_loss`, ε = 1e-7): the sums include j = i, and
    `L = mean_{i, j} p_{j|i} log((p_{j|i} + ε) / (q_{j|i} + ε))`, a mean over all B² entries (so the per-example
    KL divided by B). RepDistiller weights it 30000 on the pooled embedding (`PKT` distiller).
  - `form="paper"`: Eqs. 8–10, j = i excluded from the normalisation and the sum, and the KL summed over
    j ≠ i and averaged over the batch (the paper sums over i as well; kd_jax's convention is the batch mean).

  Embedding widths may differ. The loss is unchanged by a positive scaling of either embedding.

  Args:
    student_embedding: [B, D_s] (any [B, ...] is flattened).
    teacher_embedding: [B, D_t]; treated as a constant (stop_gradient).
    eps: ε in the normalisation and the logarithm.
    form: "reference" or "paper", see above.
  """
  _check_form("pkt", form)
  _check_batch("pkt", student_embedding, teacher_embedding)
  s = at_least_float32(student_embedding.reshape(student_embedding.shape[0], -1))
  t = at_least_float32(jax.lax.stop_gradient(teacher_embedding).reshape(teacher_embedding.shape[0], -1))
  paper = form == "paper"
  q = _cosine_conditional_probabilities(s, eps, exclude_self=paper)
  p = _cosine_conditional_probabilities(t, eps, exclude_self=paper)
  terms = p * jnp.log((p + eps) / (q + eps))
  if paper:
    return jnp.mean(jnp.sum(terms, axis=-1))
  return jnp.mean(terms)


def nst(student_feature: jax.Array, teacher_feature: jax.Array, *, degree: int = 2,
        offset: float = 0.0) -> jax.Array:
  """Neuron selectivity transfer (NST): MMD² between the distributions of normalised channel activation maps.

  Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", 2017,
  arXiv:1707.01219. Each channel k of a map gives one sample `f^k / ‖f^k‖₂` ∈ R^{H·W}; with the polynomial
  kernel `k(x, y) = (xᵀy + c)^d` (d = 2, c = 0, the paper's and RepDistiller's choice),

    `L = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') − 2 mean_{i,j} k(s_j, t_i)`,

  the biased MMD² of Eq. 4 (its 1/C² normalisers are these means), averaged over the batch, as RepDistiller's
  `NSTLoss` (`full_loss=True`). The paper writes `λ/2 · L`; RepDistiller weights L by 50 and sums it over the
  stage outputs (`NST` distiller). Channel counts may differ; if spatial sizes differ the larger map is
  average-pooled to the smaller size first, as RepDistiller does.

  Args:
    student_feature: [B, H_s, W_s, C_s] NHWC.
    teacher_feature: [B, H_t, W_t, C_t] NHWC; treated as a constant (stop_gradient).
    degree: d, the kernel's degree.
    offset: c, the kernel's offset.
  """
  _check_nhwc("nst", student_feature=student_feature, teacher_feature=teacher_feature)
  _check_batch("nst", student_feature, teacher_feature)
  s, t = _pool_to_common_size(at_least_float32(student_feature),
                              at_least_float32(jax.lax.stop_gradient(teacher_feature)))

  def samples(x):  # [B, C, H·W], each channel's map L2-normalised
    b, h, w, c = x.shape
    return _l2_normalize(jnp.transpose(x.reshape(b, h * w, c), (0, 2, 1)), axis=-1)

  def kernel_mean(a, b):
    return jnp.mean((jnp.einsum("bix,bjx->bij", a, b) + offset) ** degree)

  s, t = samples(s), samples(t)
  return kernel_mean(t, t) + kernel_mean(s, s) - 2.0 * kernel_mean(s, t)


def _flow_matrix(first: jax.Array, second: jax.Array) -> jax.Array:
  """[B, C1, C2]: `G = (1/(H·W)) Σ_{h,w} F1[h, w, :] ⊗ F2[h, w, :]` after pooling to the smaller size."""
  first, second = _pool_to_common_size(first, second)
  return jnp.einsum("bhwi,bhwj->bij", first, second) / (first.shape[1] * first.shape[2])


def fsp(student_pairs: Sequence[tuple[jax.Array, jax.Array]], teacher_pairs: Sequence[tuple[jax.Array, jax.Array]],
        *, form: Form = "reference") -> jax.Array:
  """Flow of solution procedure (FSP): match the Gram ("flow") matrices between pairs of feature maps.

  Yim, Joo, Bae, Kim, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer
  Learning", CVPR 2017 (no arXiv version). For a pair of NHWC maps `(F1, F2)`,
  `G = (1/(H·W)) F1ᵀ F2` ∈ R^{C1×C2} per example (Eq. 1); when the two maps differ in spatial size the
  larger is average-pooled to the smaller first, as RepDistiller's `FSP.compute_fsp` does (the paper pairs
  maps of equal resolution).

  - `form="reference"` (default): `Σ_pairs mean_{b,i,j} (G_s − G_t)²`, RepDistiller's `FSP` (per-pair mean,
    summed over pairs). RepDistiller uses it only in a 30-epoch initialisation phase that trains the student's
    feature layers on this loss alone, then trains with cross-entropy alone (`experiments/digits_fsp.py`
    declares the same two phases).
  - `form="paper"`: Eq. 2 with equal λ_i = 1: `Σ_pairs mean_b ‖G_s − G_t‖_F²`.

  Student and teacher flow matrices must have the same shape: the paired stages need equal channel counts
  (RepDistiller raises otherwise too).

  Args:
    student_pairs: sequence of `(F1, F2)` NHWC student maps.
    teacher_pairs: the teacher's pairs, in the same order; treated as constants (stop_gradient).
    form: "reference" or "paper", see above.
  """
  _check_form("fsp", form)
  if len(student_pairs) != len(teacher_pairs) or not student_pairs:
    raise ValueError(f"fsp: need the same, non-zero number of student and teacher pairs, got "
                     f"{len(student_pairs)} and {len(teacher_pairs)}.")
  total = jnp.zeros((), jnp.float32)
  for k, ((s1, s2), (t1, t2)) in enumerate(zip(student_pairs, teacher_pairs)):
    _check_nhwc("fsp", student_first=s1, student_second=s2, teacher_first=t1, teacher_second=t2)
    _check_batch("fsp", s1, t1)
    g_s = _flow_matrix(at_least_float32(s1), at_least_float32(s2))
    g_t = _flow_matrix(at_least_float32(jax.lax.stop_gradient(t1)),
                       at_least_float32(jax.lax.stop_gradient(t2)))
    if g_s.shape != g_t.shape:
      raise ValueError(f"fsp: pair {k}: student flow matrix {g_s.shape[1:]} and teacher flow matrix "
                       f"{g_t.shape[1:]} differ; FSP needs student and teacher stages with equal channel counts.")
    diff = jnp.square(g_s - g_t)
    total = total + (jnp.mean(jnp.sum(diff, axis=(1, 2))) if form == "paper" else jnp.mean(diff))
  return total


def _factor(feature: jax.Array, form: str) -> jax.Array:
  """Per-example factor vector, L2-normalised: the flattened map (paper, official code) or the channel mean of
  squares (reference: RepDistiller's `FactorTransfer.factor` with p1 = 2)."""
  x = at_least_float32(feature)
  if form == "reference":
    x = jnp.mean(jnp.square(x), axis=-1)
  return _l2_normalize(x.reshape(x.shape[0], -1), axis=1)


def factor_transfer(student_factor: jax.Array, teacher_factor: jax.Array, *, p: int = 1,
                    form: Form = "paper") -> jax.Array:
  """Factor transfer loss between the student's translated factor and the teacher's paraphrased factor.

  Kim, Park, Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer", NeurIPS 2018,
  arXiv:1802.04977. `L = mean_{b,d} |F_S/‖F_S‖₂ − F_T/‖F_T‖₂|^p`, each factor flattened per example.
  - form="paper" (default): the paper's factor and its official code (Jangho-Kim/Factor-Transfer-pytorch,
    `train_student.py`: `BETA * L1Loss(FT(factor_s), FT(factor_t.detach()))` with `FT(x) =
    F.normalize(x.view(B, -1))`, β = 500): the whole map flattened ([B, H·W·C]) and L2-normalised; shapes
    must match. The paper writes the p-norm `‖·‖_p` per example; the code's `L1Loss` averages over batch ×
    dimension instead, which for p = 1 is the norm divided by the constant D = H·W·C (absorbed by β), and
    the code's mean is what is computed here. p = 2 gives the mean squared difference (not in the code).
  - form="reference" (RepDistiller's re-implementation `FactorTransfer(p1=2, p2=p)`, the code behind the
    CRD paper's CIFAR-100 table, β = 200 there): the factor vector is the channel mean of the squared map,
    `mean_c F²` ([B, H·W]), and maps of different spatial sizes are average-pooled to the smaller one first.
    It differs from the official code, so it is an option, not the default.
  The teacher factor is a constant (stop_gradient).

  Args:
    student_factor: [B, H, W, C_s] translator output.
    teacher_factor: [B, H', W', C_t] paraphraser-encoder output (the FT factor), or any teacher feature.
    p: 1 (the paper's choice) or 2.
    form: "paper" or "reference", see above.
  """
  _check_form("factor_transfer", form)
  _check_nhwc("factor_transfer", student_factor=student_factor, teacher_factor=teacher_factor)
  _check_batch("factor_transfer", student_factor, teacher_factor)
  if p not in (1, 2):
    raise ValueError(f"factor_transfer: p must be 1 or 2, got {p}.")
  teacher_factor = jax.lax.stop_gradient(teacher_factor)
  if form == "reference":
    student_factor, teacher_factor = _pool_to_common_size(student_factor, teacher_factor)
  elif student_factor.shape != teacher_factor.shape:
    raise ValueError(f"factor_transfer: with form='paper' the student factor {student_factor.shape} must "
                     f"match the teacher factor {teacher_factor.shape}; size the translator accordingly.")
  diff = jnp.abs(_factor(student_factor, form) - _factor(teacher_factor, form))
  return jnp.mean(diff if p == 1 else jnp.square(diff))


def activation_boundary(student_preact: jax.Array, teacher_preact: jax.Array, *,
                        margin: float = 1.0) -> jax.Array:
  """Activation-boundary loss on one layer's pre-ReLU responses, summed over elements, divided by batch.

  Heo, Lee, Yun, Choi, "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
  Neurons", AAAI 2019, arXiv:1811.03233 (the hinge-like alternative-L2 form of its code):
  `ℓ = (1/B) Σ_{b,h,w,c} [(r+μ)²·1{r>−μ}·1{t≤0} + (r−μ)²·1{r≤μ}·1{t>0}]`, with `r` the student response
  after its connector and `t` the teacher's pre-activation (a constant). A student neuron is pushed below
  −μ where the teacher's is inactive and above +μ where it is active; it is zero once every boundary agrees
  with margin μ. The per-layer weights (2^(i−n+1)) and the 3/1000 scale of the references are the
  distiller's.

  Args:
    student_preact: [B, H, W, C] (or [B, D]) connector output, same shape as the teacher's.
    teacher_preact: the teacher's pre-ReLU response.
    margin: μ.
  """
  if student_preact.shape != teacher_preact.shape:
    raise ValueError(f"activation_boundary: student response {student_preact.shape} must match the teacher's "
                     f"{teacher_preact.shape}; map it with a connector.")
  r = at_least_float32(student_preact)
  t = at_least_float32(jax.lax.stop_gradient(teacher_preact))
  loss = (jnp.square(r + margin) * ((r > -margin) & (t <= 0))
          + jnp.square(r - margin) * ((r <= margin) & (t > 0)))
  return jnp.sum(loss) / r.shape[0]


def activation_mismatch(student_preact: jax.Array, teacher_preact: jax.Array) -> jax.Array:
  """Fraction of neurons whose activation (response > 0) differs between student and teacher (AB's monitor)."""
  return jnp.mean((student_preact > 0) != (teacher_preact > 0))


def _hierarchical_context_loss(student_feature: jax.Array, teacher_feature: jax.Array,
                               levels: Sequence[int]) -> jax.Array:
  """HCL of one pair: full-size MSE plus pooled-level MSEs with halving weights, divided by the weight sum."""
  loss = jnp.mean(jnp.square(student_feature - teacher_feature))
  weight, total_weight = 1.0, 1.0
  for level in levels:
    if level >= student_feature.shape[1]:  # the reference compares with the height only (square maps)
      continue
    weight /= 2.0
    pooled_s = _adaptive_avg_pool(student_feature, level, level)
    pooled_t = _adaptive_avg_pool(teacher_feature, level, level)
    loss = loss + weight * jnp.mean(jnp.square(pooled_s - pooled_t))
    total_weight += weight
  return loss / total_weight


def review_kd(student_features: Sequence[jax.Array], teacher_features: Sequence[jax.Array], *,
              levels: Sequence[int] = (4, 2, 1)) -> jax.Array:
  """ReviewKD's hierarchical context loss (HCL), summed over pairs of (fused student, teacher) features.

  Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021, arXiv:2104.09044; the form of
  the authors' code (dvlab-research/ReviewKD `hcl`) and mdistiller (`hcl_loss`), which agree. For one pair of
  NHWC maps (F_s, F_t) of equal shape [B, H, W, C], with P_l the adaptive average pooling to l×l and the levels
  l ∈ (4, 2, 1) that are smaller than H kept in that order (l_1, l_2, ...):

    `hcl(F_s, F_t) = (MSE(F_s, F_t) + Σ_j 2^{-j} · MSE(P_{l_j} F_s, P_{l_j} F_t)) / (1 + Σ_j 2^{-j})`,

  where MSE is the mean over every element (batch, space, channels), as `F.mse_loss(reduction='mean')`. The
  first kept level gets weight 1/2, the next 1/4, the next 1/8 (so an 8×8 map: levels 4, 2, 1 with weights
  1/2, 1/4, 1/8 and divisor 1.875; a 4×4 map: levels 2, 1, divisor 1.75; a 2×2 map: level 1, divisor 1.5;
  a 1×1 map, such as the pooled embedding: the plain MSE). `L = Σ_pairs hcl`. The paper describes the pyramid
  pooling but not these weights; the reference code's are used.

  Args:
    student_features: sequence of [B, H_i, W_i, C_i] student features (after ReviewKD's fusion modules).
    teacher_features: the teacher's, same shapes, same order; treated as constants (stop_gradient).
    levels: pooled output sizes, in the order their weights halve.
  """
  if len(student_features) != len(teacher_features) or not student_features:
    raise ValueError(f"review_kd: need the same, non-zero number of student and teacher features, got "
                     f"{len(student_features)} and {len(teacher_features)}.")
  total = jnp.zeros((), jnp.float32)
  for k, (s, t) in enumerate(zip(student_features, teacher_features)):
    _check_nhwc("review_kd", student_feature=s, teacher_feature=t)
    if s.shape != t.shape:
      raise ValueError(f"review_kd: pair {k}: student feature {s.shape} must match the teacher feature "
                       f"{t.shape}; map it with ReviewKD's fusion modules first.")
    total = total + _hierarchical_context_loss(at_least_float32(s),
                                               at_least_float32(jax.lax.stop_gradient(t)), tuple(levels))
  return total
