"""Losses for distilling super-resolution networks. Pure functions of arrays; NHWC images and feature maps.

SR feature maps (residual block / residual group outputs) have no ReLU at the end and can be negative; none of
these losses assumes non-negative features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kd_jax.losses.dtypes import at_least_float32

FAKD_EPS = 1e-7  # added to each position's channel norm, as `spatial_similarity` in the FAKD reference code
# The affinity matmul runs in full float32 (no TF32/bf16 passes on GPUs/TPUs): near convergence the L1 between
# student and teacher affinities is small, and TF32 rounding (~1e-3 on each cosine) would put a floor under it.
_HIGHEST = jax.lax.Precision.HIGHEST


def _check_nhwc(name: str, **features: jax.Array) -> None:
  for key, x in features.items():
    if x.ndim != 4:
      raise ValueError(f"{name}: {key} must be an NHWC feature map [B, H, W, C], got shape {x.shape}.")


def _check_same_positions(name: str, student: jax.Array, teacher: jax.Array) -> None:
  if student.shape[:3] != teacher.shape[:3]:
    raise ValueError(f"{name}: student {student.shape} and teacher {teacher.shape} must agree in batch size and "
                     "spatial size [B, H, W] (channel counts may differ); choose stages of equal resolution.")


def output_l1(sr_student: jax.Array, sr_teacher: jax.Array) -> jax.Array:
  """KD on outputs for SR: the mean absolute difference between the student's and the teacher's SR images.

  `L = mean_{b,h,w,c} |SR_s − SR_t|`, the mean over every element, as `nn.L1Loss()` (reduction 'mean').
  This is the "KD on outputs" baseline of the SR comparison study (kd_jax METHODS.md item 18): the teacher's
  SR image replaces the HR target in the supervised L1. The FAKD reference code
  (`Vincent-Hoo/Knowledge-Distillation-for-Super-resolution`, `code/loss.py`, the "TS" term) uses the same
  loss with weight α = 0.5 next to `(1 − α)·L1(SR_s, HR)` (see `fakd` for the paper).

  Args:
    sr_student: [B, H, W, C] the student's SR image (or any array).
    sr_teacher: the teacher's, same shape; treated as a constant (stop_gradient).
  """
  if sr_student.shape != sr_teacher.shape:
    raise ValueError(f"output_l1: student output {sr_student.shape} must match the teacher output "
                     f"{sr_teacher.shape}; teacher and student must share the scale factor and the LR batch.")
  diff = at_least_float32(sr_student) - at_least_float32(jax.lax.stop_gradient(sr_teacher))
  return jnp.mean(jnp.abs(diff))


def _safe_norm(x: jax.Array, axis: int) -> jax.Array:
  """‖x‖₂ along `axis` (keepdims) with a zero, not NaN, gradient at x = 0."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def feature_affinity(f: jax.Array, *, eps: float = FAKD_EPS) -> jax.Array:
  """FAKD's spatial affinity matrix: cosine similarity between every pair of spatial positions.

  For each example, the map is flattened to `F ∈ R^{HW×C}` (positions in row-major (h, w) order, the order of
  PyTorch's `view(B, C, -1)` on NCHW), every position's channel vector is divided by its L2 norm plus ε,
  `F̂(p) = F(p) / (‖F(p)‖₂ + ε)`, and `A = F̂ F̂ᵀ ∈ R^{HW×HW}`. This is `spatial_similarity` in
  `code/feature_transformation.py` of `Vincent-Hoo/Knowledge-Distillation-for-Super-resolution` (ε = 1e-7 in
  the code of the first commits, 1e-8 in the last one; the difference is far below float32 resolution for
  SR feature norms). The normalisation is per position over channels, not over the whole map, so A is
  unchanged by any positive rescaling of a position's vector (hence of a whole example) and by permuting
  channels or appending zero channels; its entries lie in [−1, 1] and its diagonal is ≈ 1 wherever F(p) ≠ 0.
  At an all-zero position the row is 0 and the gradient finite (of order 1/ε; the reference's `torch.sqrt`
  gives NaN there).

  The matmul runs at `Precision.HIGHEST` (full float32 on GPUs and TPUs, as the float32 PyTorch reference).
  Memory: B·(HW)² float32 per map (twice that with its gradient): 4 MiB per example for a 32×32 map, 21 MiB
  for the reference's 48×48 LR patches (192×192 HR at ×4), 64 MiB for 64×64. Fine for training patches, not
  for whole images.

  Args:
    f: [B, H, W, C] NHWC feature map.
    eps: ε added to each position's norm.

  Returns:
    [B, H·W, H·W].
  """
  _check_nhwc("feature_affinity", f=f)
  b, h, w, c = f.shape
  x = at_least_float32(f).reshape(b, h * w, c)
  x = x / (_safe_norm(x, axis=-1) + eps)
  return jnp.einsum("bpc,bqc->bpq", x, x, precision=_HIGHEST)


def fakd(f_s: jax.Array, f_t: jax.Array, *, p: int = 1, eps: float = FAKD_EPS) -> jax.Array:
  """FAKD: distance between the student's and the teacher's spatial affinity matrices for one feature pair.

  Z. He, T. Dai, J. Lu, Y. Jiang, S.-T. Xia, "FAKD: Feature-Affinity Based Knowledge Distillation for Efficient
  Image Super-Resolution", ICIP 2020, pp. 518–522, doi:10.1109/ICIP40778.2020.9190917 (no arXiv version found).
  Reference code: `Vincent-Hoo/Knowledge-Distillation-for-Super-resolution` (the authors' official code).
  With `A = feature_affinity(F)` ([B, HW, HW], see there),

  - `p=1` (default, the reference): `L = mean_{b,i,j} |A_s[b,i,j] − A_t[b,i,j]|`, the reference's
    `FeatureLoss(loss=nn.L1Loss())` in `code/loss.py`: PyTorch's L1 with reduction 'mean' over all
    B·HW·HW entries, no further scaling. The reference sums this over the distilled feature pairs (its
    `--features [1,2,3]`: the outputs of the three thirds of the EDSR body, of RCAN's groups 3 and 7 and of its
    body end; the last map also carries the global skip, which the models add to it in place)
    and weights the sum by 10 (`--feature_distilation_type 10*SA` in `code/scripts/train_*_SA_x*.sh`); that sum
    and weight are the `FAKD` distiller's and the config's.
  - `p=2`: `mean_{b,i,j} (A_s − A_t)²`, a kd_jax option (not in the reference).

  No adapter is needed: A does not depend on the channel count (the reference pairs a 64-channel student with
  a 256-channel EDSR teacher directly), so student and teacher must only agree in batch and spatial size. The
  loss is unchanged by permuting channels or by a positive rescaling of either map per example (per position,
  even). The
  teacher side is a constant (stop_gradient); the reference's teacher has `requires_grad=False`.

  Args:
    f_s: [B, H, W, C_s] student feature map.
    f_t: [B, H, W, C_t] teacher feature map.
    p: 1 (L1, the reference) or 2 (squared error).
    eps: ε of the per-position normalisation.
  """
  _check_nhwc("fakd", f_s=f_s, f_t=f_t)
  _check_same_positions("fakd", f_s, f_t)
  if p not in (1, 2):
    raise ValueError(f"fakd: p must be 1 (L1, the reference) or 2 (squared error), got {p}.")
  diff = feature_affinity(f_s, eps=eps) - feature_affinity(jax.lax.stop_gradient(f_t), eps=eps)
  return jnp.mean(jnp.abs(diff) if p == 1 else jnp.square(diff))


def _lsfd_errors(f_s_regressed: jax.Array, f_t: jax.Array) -> jax.Array:
  """[B, H, W]: `mean_c |F_t − R(F_s)|`, differentiable in the student."""
  diff = at_least_float32(f_s_regressed) - at_least_float32(jax.lax.stop_gradient(f_t))
  return jnp.mean(jnp.abs(diff), axis=-1)


def _check_lsfd(name: str, f_s_regressed: jax.Array, f_t: jax.Array, temperature: float) -> None:
  _check_nhwc(name, f_s_regressed=f_s_regressed, f_t=f_t)
  if f_s_regressed.shape != f_t.shape:
    raise ValueError(f"{name}: regressed student feature {f_s_regressed.shape} must match the teacher feature "
                     f"{f_t.shape}; map the student feature with a regressor to the teacher's width.")
  if not temperature > 0:
    raise ValueError(f"{name}: temperature must be > 0, got {temperature}.")


def _attention_from_errors(errors: jax.Array, temperature: float) -> jax.Array:
  b, h, w = errors.shape
  logits = jax.lax.stop_gradient(errors).reshape(b, h * w) / temperature
  return (jax.nn.softmax(logits, axis=-1) * (h * w)).reshape(b, h, w)


def lsfd_attention(f_s_regressed: jax.Array, f_t: jax.Array, *, temperature: float = 1.0) -> jax.Array:
  """LSFD's teacher-student-difference soft attention over spatial positions, `A = HW · softmax_p(D/τ)`.

  `D(p) = mean_c |F_t(p) − R(F_s)(p)|` per example, with gradients stopped; the softmax runs over the H·W
  positions of each example, so `Σ_p A(p) = HW` for every example, `A ≡ 1` when D is constant, and a larger
  difference gets a larger weight. See `lsfd`.

  Args:
    f_s_regressed: [B, H, W, C] the student feature after the regressor R.
    f_t: [B, H, W, C] the teacher feature.
    temperature: τ > 0, in the units of the features.

  Returns:
    [B, H, W], a constant (no gradient flows through it).
  """
  _check_lsfd("lsfd_attention", f_s_regressed, f_t, temperature)
  return _attention_from_errors(_lsfd_errors(f_s_regressed, f_t), temperature)


def lsfd(f_s_regressed: jax.Array, f_t: jax.Array, *, temperature: float = 1.0) -> jax.Array:
  """LSFD: local-selective feature distillation, an attention-weighted L1 between regressed student and teacher.

  Park & Kwak, "Local-Selective Feature Distillation for Single Image Super-Resolution", 2021,
  arXiv:2111.10988. No code was published: this is kd_jax's reading of the abstract (METHODS.md item 2,
  [assume]). The "local" part is the regressor R (small 3×3 convs, owned by the `LSFD` distiller); the
  "selective" part is a soft attention over spatial positions driven by the current teacher-student
  difference. With `e(p) = mean_c |F_t(p) − R(F_s)(p)|` for each example and position p,

    `D = stop_gradient(e)`,   `A = HW · softmax_p(D / τ)`   (per example, over its H·W positions),
    `L = mean_{b,p} A_b(p) · e_b(p) = (1/(B·HW·C)) Σ_{b,p,c} A_b(p) · |F_t − R(F_s)|_{b,p,c}`.

  Reduction: the channel mean, then the mean over batch and positions. With `A ≡ 1` (τ → ∞, or a constant
  difference) L is exactly the plain L1 between the maps, PyTorch's `nn.L1Loss()`. METHODS.md writes the
  per-position term as `‖·‖₁` (a channel *sum*); the channel mean used here is that divided by C, a constant
  the loss weight λ absorbs. The attention is a constant in the gradient: `∂L/∂R(F_s)(p) = A(p)/(B·HW·C) ·
  sign(R(F_s)(p) − F_t(p))`.

  Knobs [assume]: τ (the softmax is over raw feature differences, so τ is in feature units: small τ focuses
  on the worst positions, large τ approaches plain L1); the regressor's depth and kernel size (distiller);
  the loss weight λ (METHODS.md: 1 to 10, next to `L1(SR, HR)`). A normalised sigmoid instead of the softmax
  is the other reading the spec allows; not implemented.

  Args:
    f_s_regressed: [B, H, W, C] the student feature after the regressor R (the teacher's width).
    f_t: [B, H, W, C] the teacher feature; a constant (stop_gradient).
    temperature: τ > 0.
  """
  _check_lsfd("lsfd", f_s_regressed, f_t, temperature)
  errors = _lsfd_errors(f_s_regressed, f_t)
  return jnp.mean(_attention_from_errors(errors, temperature) * errors)
