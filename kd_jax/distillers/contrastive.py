"""Distillers for `kd_jax.losses.contrastive`: CRD with its projection heads, memory banks and NCE constants."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.distillers.base import Distiller, TrainingData, require_fraction, require_positive
from kd_jax.distillers.feature import _torch_linear_init
from kd_jax.errors import KDJaxError
from kd_jax.losses.contrastive import (CRD_FEAT_DIM, CRD_MOMENTUM, CRD_NUM_NEGATIVES, CRD_TEMPERATURE,
                                       _l2_normalize, crd_available_negatives, crd_directions, crd_memory_init,
                                       crd_memory_update, crd_nce_loss, crd_sample_indices, crd_softmax_loss,
                                       resolve_normalizers)
from kd_jax.models.outputs import ModelOutput

# The distiller collections CRD keeps besides `params`. `memory` is the name `kd_jax.train.sharding` splits
# by rows over the mesh's `data` axis.
MEMORY = "memory"
NORMALIZER = "normalizer"


class CRDEmbed(nn.Module):
  """CRD's two projection heads (RepDistiller `Embed`): `x ↦ Wx + b` to `features` dimensions, then `x/‖x‖₂`.

  One head for the student's pooled embedding (`student_embed`), one for the teacher's (`teacher_embed`);
  both are trained with the student, with PyTorch's default `nn.Linear` initialisation as in the reference.
  """

  features: int

  @nn.compact
  def __call__(self, student_embedding: jax.Array, teacher_embedding: jax.Array) -> Tuple[jax.Array, jax.Array]:
    outs = []
    for name, x in (("student_embed", student_embedding), ("teacher_embed", teacher_embedding)):
      x = x.reshape(x.shape[0], -1).astype(jnp.float32)
      kernel_init, bias_init = _torch_linear_init(x.shape[-1])
      outs.append(_l2_normalize(nn.Dense(self.features, kernel_init=kernel_init, bias_init=bias_init,
                                         name=name)(x)))
    return outs[0], outs[1]


def _single_teacher(teacher) -> ModelOutput:
  if isinstance(teacher, ModelOutput):
    return teacher
  if isinstance(teacher, (tuple, list)) and len(teacher) == 1:
    return teacher[0]
  raise ValueError("crd: contrasts against one teacher; got "
                   f"{'no teacher' if teacher is None else f'{len(teacher)} teachers'}.")


@dataclasses.dataclass(frozen=True)
class CRD(Distiller):
  """Contrastive representation distillation, `losses.crd` on projected pooled embeddings with memory banks.

  Tian, Krishnan, Isola, ICLR 2020, arXiv:1910.10699, as RepDistiller (`CRDLoss`, `ContrastMemory`,
  `CIFAR100InstanceSample`; `--distill crd -a 0 -b 0.8`, i.e. a config `{'ce': {'weight': 1},
  'crd': {'weight': 0.8}}`). The student's and the teacher's `ModelOutput.embedding` (the pooled feature,
  the reference's `feat[-1]`) each go through a trainable head, Linear → `feat_dim` then L2-normalised
  (`CRDEmbed`, in `params`; the teacher's features stay constants, its head trains). Every step:

  1. per anchor, K = `nce_k` negatives are drawn with `ctx.rng` (`losses.crd_sample_indices`): uniformly
     without replacement among the training examples of *other classes* (the reference's 'exact' mode;
     `exclude_same_class=False` gives the paper's "any other example"); the positive is the anchor's own
     index `batch['index']`;
  2. the student embedding is contrasted with those K+1 rows of the teacher bank, the teacher embedding with
     those rows of the student bank, `s = ⟨m, v⟩/τ`, and the two losses are added (`mode`: 'nce', the
     reference's NCE with `P = exp(s)/Z`, `P_n = 1/N`; or 'softmax', cross-entropy over the 1+K scores);
  3. the batch rows of both banks become `normalize(m·row + (1 − m)·v)` (`losses.crd_memory_update`).

  State (non-`params` collections, returned updated by `loss` when `ctx.train`):

  - `memory`: `{'student': [R, feat_dim], 'teacher': [R, feat_dim]}`, the banks, initialised as the
    reference (U(±1/√(d/3))). `kd_jax.train.sharding.state_shardings` splits this collection by rows over the
    mesh's `data` axis, so each device holds R/D rows; the scores are computed on each device's own rows
    (`losses.crd_scores`), so no device gathers a bank. R is N rounded up to a multiple of `row_multiple`;
    the padding rows are zero and never sampled.
  - `normalizer` (nce mode only): `{'student_anchor': Z_s, 'teacher_anchor': Z_t}`, −1 until the first
    training step sets each to `N·mean(exp(s))` of that step's scores; then fixed (the reference's Z).

  `prepare` fills `labels` (the training labels, which define N and the other-class sets) and
  `row_multiple`; a training run stores both with the run, so a resumed run uses the same. nce_k must not
  exceed the negatives every anchor has (N minus the largest class); a larger one is rejected, not clipped,
  so a run never trains with a K other than the one asked for. Metrics: `student_anchor` and
  `teacher_anchor`, the two directions' losses, and in nce mode `z_student_anchor`, `z_teacher_anchor`.

  Attributes:
    feat_dim: width of the projection heads and the banks (RepDistiller `--feat_dim 128`).
    nce_k: K, negatives per anchor (`--nce_k 16384`, for CIFAR-100's 50 000 examples).
    nce_t: τ (`--nce_t 0.07`).
    nce_m: bank momentum m (`--nce_m 0.5`).
    mode: 'nce' (RepDistiller) or 'softmax' (InfoNCE, CMC's `use_softmax`).
    exclude_same_class: True: negatives only from other classes (reference); False: any other example (paper).
    row_multiple: the banks' rows are padded to a multiple of it so they split evenly over a mesh; None:
      `jax.device_count()` when `prepare` runs — the size of the loop's mesh (`sharding.make_mesh()` spans
      every device) and a multiple of the size of any mesh over a divisor of the devices. Set it for a
      mesh whose size does not divide the device count.
    labels: the training labels, in `batch['index']` order; filled by `prepare`.
  """

  feat_dim: int = CRD_FEAT_DIM
  nce_k: int = CRD_NUM_NEGATIVES
  nce_t: float = CRD_TEMPERATURE
  nce_m: float = CRD_MOMENTUM
  mode: str = "nce"
  exclude_same_class: bool = True
  row_multiple: Optional[int] = None
  labels: Optional[Tuple[int, ...]] = None

  def __post_init__(self):
    require_positive("crd", feat_dim=self.feat_dim, nce_k=self.nce_k, nce_t=self.nce_t)
    require_fraction("crd", nce_m=self.nce_m)
    if int(self.feat_dim) != self.feat_dim or int(self.nce_k) != self.nce_k:
      raise ValueError(f"crd: feat_dim and nce_k must be integers, got {self.feat_dim} and {self.nce_k}.")
    if self.mode not in ("nce", "softmax"):
      raise ValueError(f"crd: mode must be 'nce' or 'softmax', got {self.mode!r}.")
    if self.row_multiple is not None:
      require_positive("crd", row_multiple=self.row_multiple)
      object.__setattr__(self, "row_multiple", int(self.row_multiple))
    object.__setattr__(self, "feat_dim", int(self.feat_dim))
    object.__setattr__(self, "nce_k", int(self.nce_k))
    if self.labels is not None:  # a tuple, also when restored from JSON (a list)
      object.__setattr__(self, "labels", tuple(int(y) for y in self.labels))

  @property
  def num_examples(self) -> int:
    """N, the training examples (the banks' real rows)."""
    self._require_prepared()
    return len(self.labels)

  @property
  def bank_rows(self) -> int:
    """R: N rounded up to a multiple of `row_multiple`."""
    multiple = self.row_multiple or jax.device_count()
    return -(-self.num_examples // multiple) * multiple

  def _require_prepared(self) -> None:
    if self.labels is None:
      raise KDJaxError(
          "crd: the training labels are not set. A training run fills them (and so the bank size N) from "
          "Distiller.prepare(TrainingData); outside a run call crd.prepare(TrainingData(teacher_logits, "
          "labels, num_classes)) first.")

  def _check_negatives(self) -> None:
    available = crd_available_negatives(np.asarray(self.labels), exclude_same_class=self.exclude_same_class)
    if self.nce_k > available:
      where = ("examples of other classes (N minus the largest class)" if self.exclude_same_class
               else "other examples")
      raise KDJaxError(
          f"crd: nce_k={self.nce_k} negatives per anchor, but with N={len(self.labels)} training examples an "
          f"anchor has only {available} {where}; negatives are drawn without replacement, so set "
          f"config.loss.<term>.nce_k ≤ {available}.")

  def prepare(self, data: TrainingData) -> "CRD":
    labels = np.asarray(data.labels).reshape(-1)
    if labels.size == 0:
      raise KDJaxError("crd: the training split is empty.")
    prepared = dataclasses.replace(self, labels=tuple(int(y) for y in labels),
                                   row_multiple=self.row_multiple or jax.device_count())
    prepared._check_negatives()
    return prepared

  def _embed(self) -> CRDEmbed:
    return CRDEmbed(self.feat_dim)

  def init(self, rng, student, teacher, batch):
    self._require_prepared()
    self._check_negatives()
    teacher = _single_teacher(teacher)
    embed_rng, student_rng, teacher_rng = jax.random.split(rng, 3)
    params = self._embed().init(embed_rng, student.embedding, teacher.embedding)["params"]
    n, rows = self.num_examples, self.bank_rows
    variables = {"params": params,
                 MEMORY: {"student": crd_memory_init(student_rng, n, self.feat_dim, rows),
                          "teacher": crd_memory_init(teacher_rng, n, self.feat_dim, rows)}}
    if self.mode == "nce":
      unset = -jnp.ones((), jnp.float32)
      variables[NORMALIZER] = {"student_anchor": unset, "teacher_anchor": unset}
    return variables

  def loss(self, variables, student, teacher, batch, ctx):
    self._require_prepared()
    teacher = _single_teacher(teacher)
    if ctx.rng is None:
      raise ValueError("crd: samples negatives and needs a PRNG key (ctx.rng / rng=...).")
    if "index" not in batch:
      raise ValueError("crd: the batch needs 'index', each example's position in the training split (the "
                       "bank row it owns); kd_jax.data batches carry it.")
    index = batch["index"].astype(jnp.int32)
    v_s, v_t = self._embed().apply({"params": variables["params"]}, student.embedding,
                                   jax.lax.stop_gradient(teacher.embedding))
    samples = crd_sample_indices(ctx.rng, index, jnp.asarray(self.labels, jnp.int32), self.nce_k,
                                 exclude_same_class=self.exclude_same_class)
    memory = variables[MEMORY]
    s_scores, t_scores = crd_directions(v_s, v_t, memory["student"], memory["teacher"], samples,
                                        temperature=self.nce_t)
    new_state = {MEMORY: {"student": crd_memory_update(memory["student"], v_s, index, momentum=self.nce_m),
                          "teacher": crd_memory_update(memory["teacher"], v_t, index, momentum=self.nce_m)}}
    if self.mode == "softmax":
      s_loss, t_loss = crd_softmax_loss(s_scores), crd_softmax_loss(t_scores)
      metrics = {}
    else:
      z = variables[NORMALIZER]
      z_s, z_t = resolve_normalizers((z["student_anchor"], z["teacher_anchor"]), s_scores, t_scores,
                                     self.num_examples)
      s_loss = crd_nce_loss(s_scores, z_s, self.num_examples)
      t_loss = crd_nce_loss(t_scores, z_t, self.num_examples)
      metrics = {"z_student_anchor": z_s, "z_teacher_anchor": z_t}
      new_state[NORMALIZER] = {"student_anchor": z_s, "teacher_anchor": z_t}
    metrics = {"student_anchor": s_loss, "teacher_anchor": t_loss, **metrics}
    return s_loss + t_loss, metrics, new_state if ctx.train else {}

