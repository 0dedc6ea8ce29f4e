"""Contrastive representation distillation (CRD): the NCE and softmax objectives, negative sampling, memory banks.

Pure functions of arrays: no Flax, no optax, no config. The learnable and stateful parts of CRD enter as
arguments: the L2-normalised embeddings (after CRD's trainable heads), the two memory banks (one row per
training example, possibly padded with extra rows that are never sampled) and the normalisation constants Z.
Everything is computed in float32 (float64 inputs stay float64, `kd_jax.losses.dtypes`); the banks and Z are
constants for the gradient (`stop_gradient`).

Paper: Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020, arXiv:1910.10699.
Reference code checked: `HobbitLong/RepDistiller` — `crd/criterion.py` (`CRDLoss`, `ContrastLoss`, `Embed`),
`crd/memory.py` (`ContrastMemory`), `dataset/cifar100.py` (`CIFAR100InstanceSample`, negative sampling) and
`train_student.py` / `helper/loops.py` (how it is wired: pooled features `feat[-1]`, CE 1 + CRD 0.8). The
softmax variant is the `use_softmax` path of the authors' earlier CMC code (`HobbitLong/CMC`,
`NCE/NCEAverage.py` and `NCESoftmaxLoss` in `NCE/NCECriterion.py`).

Notation: B anchors per batch, K negatives per anchor, N training examples (the bank's *real* rows), d the
embedding width (128), τ the temperature. `sample_indices[b] = (i_b, j_b1, …, j_bK)` holds the anchor's own
example index first (the positive) and then its K negatives.

Where the reference and the paper differ (the defaults follow the reference, whose code produced the
published CIFAR-100 tables):

- Normalisation. The paper's critic is `h = e^{s} / (e^{s} + K/N)` with `s = ⟨g_T(t), g_S(s)⟩/τ` (the paper
  writes N for our K and M for our N).
  The reference first divides `e^{s}` by a constant Z, estimated once as `N · mean(e^{s})` over the very
  first batch's B·(K+1) scores and then frozen, so that `e^{s}/Z` is roughly a probability over the N
  examples; `h = P / (P + K·P_n + ε)` with the uniform noise `P_n = 1/N` and ε = 1e-7.
- Directions. The paper writes one critic between a teacher and a student representation. The reference
  evaluates it twice and adds the two: the student embedding as anchor against K+1 rows of the *teacher*
  bank, and the teacher embedding as anchor against K+1 rows of the *student* bank.
- Negatives. The paper draws negatives from the product of marginals (any other example); the reference's
  CIFAR-100 loader (`CIFAR100InstanceSample`, mode 'exact') draws K of them uniformly *without
  replacement* from the examples of the other classes, and takes the anchor's own index as the positive.
  `crd_sample_indices` does both (`exclude_same_class`).
- Memory. Neither side of the contrast uses the other network's current embedding: both read momentum
  averages kept in banks (`crd_memory_update`, momentum 0.5, then L2-normalised), updated after the loss with
  the batch's embeddings. The paper describes the banks only in words.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.losses.dtypes import at_least_float32

# RepDistiller's `eps` inside both NCE denominators.
CRD_EPS = 1e-7
# RepDistiller's defaults: `--nce_t 0.07`, `--nce_m 0.5`, `--nce_k 16384`, `--feat_dim 128`.
CRD_TEMPERATURE = 0.07
CRD_MOMENTUM = 0.5
CRD_NUM_NEGATIVES = 16384
CRD_FEAT_DIM = 128

_HIGHEST = jax.lax.Precision.HIGHEST  # scores are divided by τ = 0.07: no TF32/bf16 passes

Mode = Literal["nce", "softmax"]


def _check_mode(name: str, mode: str) -> None:
  if mode not in ("nce", "softmax"):
    raise ValueError(f"{name}: unknown mode {mode!r}; use 'nce' (RepDistiller's NCE objective) or 'softmax' "
                     "(cross-entropy over the 1+K scores).")


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """`x / max(‖x‖₂, eps)` per row (the reference divides by the norm alone; eps only guards a zero row)."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def _rows_split(x: jax.Array, like: jax.Array, axis_name: str = "data") -> jax.Array:
  """`x` constrained to be split by rows over the mesh axis `axis_name` of `like`'s mesh, if it has one."""
  mesh = getattr(getattr(jax.typeof(like), "sharding", None), "mesh", None)
  if mesh is None or axis_name not in getattr(mesh, "axis_names", ()):
    return x
  spec = jax.sharding.PartitionSpec(axis_name, *([None] * (x.ndim - 1)))
  return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


def _row_wise(fn: Callable[[jax.Array], jax.Array], x: jax.Array, like: jax.Array,
              axis_name: str = "data") -> jax.Array:
  """`fn(x)` for an `fn` that treats the rows of `x` independently; where `like` is traced on a mesh with a
  `data` axis of several devices (and the rows split evenly), each device applies `fn` to its own rows.

  For `lax.top_k`: XLA's SPMD partitioner does not split its custom call by the batch dimension, it
  all-gathers the operand and every device computes every row; `shard_map` keeps the work per device.
  """
  mesh = getattr(getattr(jax.typeof(like), "sharding", None), "mesh", None)
  if mesh is None or axis_name not in getattr(mesh, "axis_names", ()):
    return fn(x)
  devices = dict(zip(mesh.axis_names, mesh.axis_sizes))[axis_name]
  if devices == 1 or x.shape[0] % devices:
    return fn(x)
  spec = jax.sharding.PartitionSpec(axis_name, *([None] * (x.ndim - 1)))
  return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec)(x)


def crd_scores(memory: jax.Array, anchors: jax.Array, sample_indices: jax.Array, *,
               temperature: float = CRD_TEMPERATURE) -> jax.Array:
  """The contrast scores `s[b, k] = ⟨memory[sample_indices[b, k]], anchors[b]⟩ / τ`, shape [B, K+1].

  The reference gathers the B·(K+1) bank rows and multiplies them with the anchors (`bmm`). Here every bank
  row is scored against the whole batch with one matmul, `memory @ anchorsᵀ` ([R, B]), and then the B·(K+1)
  sampled entries are picked. On a mesh whose `data` axis splits the bank's rows, this is what keeps memory
  per device: each device scores its own R/D rows against the (all-gathered, B×d) anchors, picks the sampled
  entries that fall in its rows and the [B, K+1] picks are summed across devices; no device ever holds the
  whole bank, nor the whole [R, B] score matrix. It costs R·B·d multiply-adds instead of B·(K+1)·d.

  The [R, B] matrix is pinned to the bank's row split (a sharding constraint on the mesh the bank is traced
  on, when that mesh has a `data` axis). Without it XLA partitions the gradient's scatter by batch columns
  and then all-gathers the whole bank for the anchors' gradient; with it the backward pass mirrors the
  forward (local scatter, local [R/D, B]ᵀ·[R/D, d] product, an all-reduce of [B, d]). Eagerly or on one
  device the constraint is a no-op.

  Args:
    memory: [R, d] bank rows (R ≥ every index; padding rows are allowed); a constant for the gradient.
    anchors: [B, d] L2-normalised embeddings of the batch.
    sample_indices: [B, K+1] int rows of `memory` per anchor (positive first, see `crd_sample_indices`).
    temperature: τ.
  """
  if memory.ndim != 2 or anchors.ndim != 2 or memory.shape[1] != anchors.shape[1]:
    raise ValueError(f"crd: memory {memory.shape} and anchors {anchors.shape} must be [R, d] and [B, d] with the "
                     "same width d.")
  if sample_indices.ndim != 2 or sample_indices.shape[0] != anchors.shape[0]:
    raise ValueError(f"crd: sample_indices {sample_indices.shape} must be [B, K+1] for B = {anchors.shape[0]} "
                     "anchors.")
  if not temperature > 0:
    raise ValueError(f"crd: temperature must be > 0, got {temperature}.")
  memory = at_least_float32(jax.lax.stop_gradient(memory))
  every_row = jnp.matmul(memory, at_least_float32(anchors).T, precision=_HIGHEST)      # [R, B]
  every_row = _rows_split(every_row, memory)
  columns = jnp.arange(anchors.shape[0])[:, None]
  return every_row[sample_indices, columns] / temperature                                # [B, K+1]


def crd_normalizer(scores: jax.Array, num_examples: int) -> jax.Array:
  """The reference's NCE normalisation constant `Z = N · mean_{b,k} exp(s[b, k])` (a constant for the gradient).

  RepDistiller (`ContrastMemory`) computes it once, from the first batch's B·(K+1) scores (positives
  included), and keeps it for the rest of training; one Z per direction.
  """
  return jax.lax.stop_gradient(num_examples * jnp.mean(jnp.exp(at_least_float32(scores))))


def crd_nce_loss(scores: jax.Array, normalizer: jax.Array, num_examples: int, *,
                 eps: float = CRD_EPS) -> jax.Array:
  """NCE loss of one contrast direction (RepDistiller's `ContrastLoss`, "Eq (18)" of the paper by its comment).

  With `P_bk = exp(s_bk) / Z`, the uniform noise probability `P_n = 1/N` and K = `scores.shape[1] − 1`:

      h_bk = P_bk / (P_bk + K·P_n + ε)
      L = −(1/B) Σ_b [ log h_b0 + Σ_{k=1..K} log(1 − h_bk) ],   1 − h_bk taken as K·P_n / (P_bk + K·P_n + ε)

  i.e. the binary classifier "data vs noise" on the positive (column 0) and the K negatives, summed over
  the K negatives (the paper's `N·E_{C=0}[log(1 − h)]`, its N being K) and averaged over the batch. Z is a
  constant for the gradient (`crd_normalizer`); the paper has no Z (see the module docstring).

  Args:
    scores: [B, K+1] `crd_scores`, positive first.
    normalizer: Z > 0 (scalar).
    num_examples: N, the number of training examples (not the padded bank size).
    eps: ε of the reference (1e-7).
  """
  if scores.ndim != 2 or scores.shape[1] < 2:
    raise ValueError(f"crd_nce_loss: scores must be [B, 1+K] with K ≥ 1, got {scores.shape}.")
  if num_examples < 1:
    raise ValueError(f"crd_nce_loss: num_examples must be ≥ 1, got {num_examples}.")
  k = scores.shape[1] - 1
  noise = k / float(num_examples)  # K · P_n
  p = jnp.exp(at_least_float32(scores)) / jax.lax.stop_gradient(normalizer)
  log_positive = jnp.log(p[:, 0] / (p[:, 0] + noise + eps))
  log_negative = jnp.log(noise / (p[:, 1:] + noise + eps))
  return -(jnp.sum(log_positive) + jnp.sum(log_negative)) / scores.shape[0]


def crd_softmax_loss(scores: jax.Array) -> jax.Array:
  """Softmax (InfoNCE) loss of one contrast direction: `−(1/B) Σ_b log softmax(s_b)[0]`.

  Cross-entropy over the 1+K scores `s = ⟨m, v⟩/τ` with the positive (column 0) as the target, averaged
  over the batch: the `use_softmax` path of the authors' CMC code (`NCESoftmaxLoss`, the InfoNCE of CPC).
  Needs neither Z nor P_n. Not in RepDistiller, whose CRD tables use the NCE loss.
  """
  if scores.ndim != 2 or scores.shape[1] < 2:
    raise ValueError(f"crd_softmax_loss: scores must be [B, 1+K] with K ≥ 1, got {scores.shape}.")
  return -jnp.mean(jax.nn.log_softmax(at_least_float32(scores), axis=-1)[:, 0])


def crd_directions(student_embedding: jax.Array, teacher_embedding: jax.Array, student_memory: jax.Array,
                   teacher_memory: jax.Array, sample_indices: jax.Array, *,
                   temperature: float = CRD_TEMPERATURE) -> Tuple[jax.Array, jax.Array]:
  """The scores of both directions, `(student anchor vs teacher bank, teacher anchor vs student bank)`."""
  return (crd_scores(teacher_memory, student_embedding, sample_indices, temperature=temperature),
          crd_scores(student_memory, teacher_embedding, sample_indices, temperature=temperature))


def crd(student_embedding: jax.Array, teacher_embedding: jax.Array, student_memory: jax.Array,
        teacher_memory: jax.Array, sample_indices: jax.Array, *, num_examples: int,
        normalizers: Optional[Tuple[jax.Array, jax.Array]] = None, temperature: float = CRD_TEMPERATURE,
        mode: Mode = "nce", eps: float = CRD_EPS) -> jax.Array:
  """CRD: `L = L(student anchor, teacher bank) + L(teacher anchor, student bank)`.

  Tian et al., ICLR 2020, arXiv:1910.10699, as RepDistiller's `CRDLoss` (module docstring: how it differs
  from the paper). Both embeddings are already projected and L2-normalised (`Embed`: Linear to 128, then
  `x/‖x‖`); the banks hold momentum averages of past embeddings (`crd_memory_update`). For direction
  `(v, M)` the scores are `s_bk = ⟨M[sample_indices[b, k]], v_b⟩ / τ` (`crd_scores`), and

  - `mode="nce"` (default, RepDistiller): `crd_nce_loss(s, Z, N)`, the NCE objective with
    `P = exp(s)/Z`, `P_n = 1/N`; Z per direction from `normalizers`, or — where it is None or ≤ 0 — estimated
    from these scores as `N·mean(exp(s))` (`crd_normalizer`), which is how the reference fixes Z on its first
    batch. A training loop stores the Z it used and passes it back (see `kd_jax.distillers.CRD`).
  - `mode="softmax"`: `crd_softmax_loss(s)`, cross-entropy over the 1+K scores (CMC's `use_softmax`); Z unused.

  Gradients reach both embeddings (so the student and both projection heads); the banks and Z are constants.

  Args:
    student_embedding: [B, d] L2-normalised student embedding (the anchor of the first direction).
    teacher_embedding: [B, d] L2-normalised teacher embedding (the anchor of the second direction).
    student_memory: [R, d] bank of student embeddings (R ≥ N; rows ≥ N are padding and never sampled).
    teacher_memory: [R, d] bank of teacher embeddings.
    sample_indices: [B, K+1] bank rows per anchor, the anchor's own index first (`crd_sample_indices`).
    num_examples: N.
    normalizers: `(Z_student_anchor, Z_teacher_anchor)` or None (nce mode only).
    temperature: τ (0.07).
    mode: "nce" or "softmax".
    eps: ε of the NCE denominators.
  """
  _check_mode("crd", mode)
  s_scores, t_scores = crd_directions(student_embedding, teacher_embedding, student_memory, teacher_memory,
                                      sample_indices, temperature=temperature)
  if mode == "softmax":
    return crd_softmax_loss(s_scores) + crd_softmax_loss(t_scores)
  z_s, z_t = resolve_normalizers(normalizers, s_scores, t_scores, num_examples)
  return (crd_nce_loss(s_scores, z_s, num_examples, eps=eps) +
          crd_nce_loss(t_scores, z_t, num_examples, eps=eps))


def resolve_normalizers(normalizers: Optional[Tuple[jax.Array, jax.Array]], student_scores: jax.Array,
                        teacher_scores: jax.Array, num_examples: int) -> Tuple[jax.Array, jax.Array]:
  """`(Z_student_anchor, Z_teacher_anchor)`: the given ones where > 0, else estimated from these scores."""
  estimates = (crd_normalizer(student_scores, num_examples), crd_normalizer(teacher_scores, num_examples))
  if normalizers is None:
    return estimates
  return tuple(jnp.where(at_least_float32(z) > 0, at_least_float32(z), e)  # type: ignore[return-value]
               for z, e in zip(normalizers, estimates))


def crd_sample_indices(rng: jax.Array, index: jax.Array, labels: jax.Array, num_negatives: int, *,
                       exclude_same_class: bool = True) -> jax.Array:
  """Bank rows to contrast each anchor with: `[index_b, j_b1, …, j_bK]`, int32 [B, K+1].

  The negatives of anchor b are K distinct examples drawn uniformly without replacement from the allowed
  set: with `exclude_same_class` (RepDistiller's 'exact' mode, `CIFAR100InstanceSample`) every example
  whose label differs from `labels[index_b]`; otherwise (the paper's product of marginals) every example
  but `index_b` itself. Draws are independent across anchors. Implemented as one uniform key per
  (anchor, example), disallowed examples keyed +∞, and the K smallest keys taken along the examples,
  in increasing key order: the first K of a random permutation of the allowed set, so a uniform K-subset
  (in uniform order); O(B·N) work, split over the batch on a data-parallel mesh. The caller must ensure
  that K ≤ the smallest allowed set (`crd_available_negatives`); otherwise disallowed examples would be drawn.

  The K smallest are taken with `lax.top_k` of the negated keys, not a full `argsort`: both list them in
  increasing key order and break ties (float32 keys do repeat) by the lower example index first, so the
  draws are the same, while a full sort of the [B, N] keys was most of CRD's cost over KD's on CPUs at
  CIFAR-100's sizes (docs/benchmarks.md, "CRD and ReviewKD"). On a mesh, top_k runs per device on its own
  anchors (`_row_wise`), as the sort did.

  Args:
    rng: PRNG key.
    index: [B] int example indices of the anchors (their own rows are the positives).
    labels: [N] int labels of every training example (row n of the bank is example n).
    num_negatives: K.
    exclude_same_class: True for the reference's sampling, False for the paper's.
  """
  if index.ndim != 1 or labels.ndim != 1:
    raise ValueError(f"crd_sample_indices: index {index.shape} and labels {labels.shape} must be 1-D.")
  if num_negatives < 1:
    raise ValueError(f"crd_sample_indices: num_negatives must be ≥ 1, got {num_negatives}.")
  n = labels.shape[0]
  if num_negatives > n - 1:
    raise ValueError(f"crd_sample_indices: num_negatives={num_negatives} exceeds the {n - 1} other examples.")
  index = index.astype(jnp.int32)
  examples = jnp.arange(n, dtype=jnp.int32)
  if exclude_same_class:
    disallowed = labels[None, :] == labels[index][:, None]
  else:
    disallowed = examples[None, :] == index[:, None]
  keys = jnp.where(disallowed, jnp.inf, jax.random.uniform(rng, (index.shape[0], n)))
  # top_k of −keys = the K smallest keys, ascending, lower index first on ties: argsort's first K columns.
  negatives = _row_wise(lambda k: jax.lax.top_k(-k, num_negatives)[1].astype(jnp.int32), keys, index)
  return jnp.concatenate([index[:, None], negatives], axis=1)


def crd_available_negatives(labels: np.ndarray, *, exclude_same_class: bool = True) -> int:
  """The largest K every anchor can draw without replacement: N − (largest class size), or N − 1."""
  labels = np.asarray(labels)
  if exclude_same_class:
    return int(len(labels) - np.unique(labels, return_counts=True)[1].max()) if len(labels) else 0
  return max(int(len(labels)) - 1, 0)


def crd_memory_update(memory: jax.Array, embeddings: jax.Array, index: jax.Array, *,
                      momentum: float = CRD_MOMENTUM) -> jax.Array:
  """The bank after a batch: rows `index` become `normalize(m · memory[index] + (1 − m) · embeddings)`.

  RepDistiller's `ContrastMemory` update (momentum m = 0.5, then each row divided by its L2 norm); every
  other row is unchanged. The embeddings are constants (`stop_gradient`). The indices of a batch are
  distinct (the data pipeline draws a permutation), so the result does not depend on scatter order. On a
  mesh that splits the bank's rows, each device reads and writes only its own rows; what crosses devices
  is the batch's [B, d] embeddings and [B] indices, never the bank.

  Args:
    memory: [R, d] bank.
    embeddings: [B, d] this batch's L2-normalised embeddings.
    index: [B] their example indices (bank rows).
    momentum: m ∈ [0, 1).
  """
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"crd_memory_update: momentum must be in [0, 1), got {momentum}.")
  if embeddings.shape[-1] != memory.shape[-1] or index.shape != embeddings.shape[:1]:
    raise ValueError(f"crd_memory_update: embeddings {embeddings.shape}, index {index.shape} and memory "
                     f"{memory.shape} must be [B, d], [B] and [R, d].")
  index = index.astype(jnp.int32)
  mixed = momentum * memory[index] + (1.0 - momentum) * jax.lax.stop_gradient(embeddings).astype(memory.dtype)
  return memory.at[index].set(_l2_normalize(mixed))


def crd_memory_init(rng: jax.Array, num_examples: int, feat_dim: int,
                    num_rows: Optional[int] = None) -> jax.Array:
  """A fresh bank as the reference's: `U(−b, b)` entries, `b = 1/√(d/3)` (E‖row‖² = 1, rows not normalised).

  Rows `num_examples..num_rows−1` (padding, never sampled) are 0.
  """
  num_rows = num_examples if num_rows is None else num_rows
  if num_rows < num_examples:
    raise ValueError(f"crd_memory_init: num_rows={num_rows} < num_examples={num_examples}.")
  bound = 1.0 / math.sqrt(feat_dim / 3.0)
  rows = jax.random.uniform(rng, (num_examples, feat_dim), jnp.float32, -bound, bound)
  return jnp.concatenate([rows, jnp.zeros((num_rows - num_examples, feat_dim), jnp.float32)], axis=0)
