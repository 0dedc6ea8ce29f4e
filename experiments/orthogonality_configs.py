"""The rows of the orthogonality study: one way of making the student small each, trained with CE or with KD.

Park, Yoo, Kwak, "On the Orthogonality of Knowledge Distillation with Other Techniques: From an Ensemble
Perspective", arXiv:2009.04120 (METHODS.md item 3), claim that KD's gain adds to that of pruning,
quantisation and cheap convolutions. The paper reports relative gains; no per-row numbers are carried here,
and no code of theirs was found, so the recipe below is the usual pattern [assume]: the full-precision,
uncompressed teacher distils into the compressed student, which trains with 0.1·CE + 0.9·KD at T = 4
(Hinton KD as in the CRD benchmark); every row also trains with CE alone, so each row's KD gain is read
against its own CE student.

Not a config itself: experiments/orthogonality.py (digits) and experiments/cifar100_orthogonality.py
(CIFAR-100) build on `apply_row`. The rows (`ROWS`):
  - `baseline`: the student as it is.
  - `prune50`, `prune80`, `prune90`: unstructured magnitude pruning of every conv/dense kernel to that
    sparsity, layer by layer (each kernel loses the fraction), with Zhu & Gupta's gradual schedule
    (arXiv:1710.01878; s_i = 0, masks updated every Δt steps) from 20% to 70% of the epochs, then training
    on with the masks fixed; the stem conv and the classifier stay dense [assume: the usual exception].
  - `int8`, `int4`: quantisation-aware training from the start: kernels fake-quantised per output channel
    (symmetric) and every Conv/Dense input per tensor (moving min/max), straight-through gradients; the
    first layer and the classifier at 8 bits (the LSQ convention) [assume].
  - `dw_sep`: the student with every residual block's 3x3 convs replaced by Moonshine's depthwise-separable
    substitute (Crowley et al., arXiv:1711.02613; `kd_jax.models.resnet_cifar.GroupedPointwiseConv`), from
    scratch.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import ml_collections

from kd_jax import models as kd_models
from kd_jax.errors import KDJaxError


@dataclasses.dataclass(frozen=True)
class Row:
  """One technique: `sparsity` (pruning target, 0 = none), `bits` (QAT width, 0 = float) or `conv` (the
  students' cheap convolution, None = standard); `label` is what the table shows."""

  label: str
  sparsity: float = 0.0
  bits: int = 0
  conv: Optional[str] = None


ROWS: Dict[str, Row] = {
    "baseline": Row("baseline"),
    "prune50": Row("magnitude pruning 50%", sparsity=0.5),
    "prune80": Row("magnitude pruning 80%", sparsity=0.8),
    "prune90": Row("magnitude pruning 90%", sparsity=0.9),
    "int8": Row("QAT int8", bits=8),
    "int4": Row("QAT int4", bits=4),
    "dw_sep": Row("depthwise-separable convs", conv="dw_sep"),
}
LOSSES = {
    "ce": {"ce": {"weight": 1.0}},
    "kd": {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}},
}
# Kernels kept dense: the stem conv (named `conv1` at the top of the CIFAR ResNets and WRNs; inside blocks
# `conv1` is not at the start of the path) and the classifier.
PRUNE_EXCLUDE = ("^conv1/", "^fc/")
PRUNE_BEGIN, PRUNE_END = 0.2, 0.7  # fractions of the epochs: Zhu & Gupta's schedule runs in the middle


def cheap_student(model: str, conv: str) -> str:
  """The registered name of `model` with its blocks' convolutions replaced by `conv` (e.g. 'resnet8_dw_sep')."""
  cheap = f"{model}_{conv}"
  if cheap not in kd_models.MODELS:
    variants = sorted(n[:-len(conv) - 1] for n in kd_models.MODELS if n.endswith(f"_{conv}"))
    raise KDJaxError(f"No {conv} variant of student {model!r} is registered; the models with one are "
                     f"{', '.join(variants)}.")
  return cheap


def row_and_loss(name: str):
  """`(row, loss)` of a run name '<row>_<loss>', e.g. 'prune80_kd' -> ('prune80', 'kd')."""
  row, _, loss = name.rpartition("_")
  if row not in ROWS or loss not in LOSSES:
    raise KDJaxError(f"Unknown orthogonality run {name!r}: give '<row>_<loss>' with row one of "
                     f"{', '.join(ROWS)} and loss one of {', '.join(LOSSES)} (e.g. 'prune80_kd').")
  return row, loss


def apply_row(c: ml_collections.ConfigDict, row: str, loss: str, *, prune_every_steps: int
              ) -> ml_collections.ConfigDict:
  """`c` (a student config with its student model and epochs set) trained as row `row` with loss `loss`
  ('ce' or 'kd'). The pruning schedule is placed in epochs of `c.epochs`; `prune_every_steps` is Δt."""
  if row not in ROWS:
    raise KDJaxError(f"Unknown orthogonality row {row!r}; choose one of {', '.join(ROWS)}.")
  if loss not in LOSSES:
    raise KDJaxError(f"Unknown loss {loss!r} for an orthogonality row; choose one of {', '.join(LOSSES)}.")
  spec = ROWS[row]
  c.loss = ml_collections.ConfigDict(LOSSES[loss])
  if spec.conv is not None:
    c.student.model = cheap_student(c.student.model, spec.conv)
  if spec.sparsity:
    c.compression.sparsity = spec.sparsity
    c.compression.initial_sparsity = 0.0
    c.compression.prune_scope = "layer"
    c.compression.prune_exclude = PRUNE_EXCLUDE
    c.compression.prune_begin_epoch = int(round(PRUNE_BEGIN * c.epochs))
    c.compression.prune_end_epoch = int(round(PRUNE_END * c.epochs))
    c.compression.prune_every_steps = prune_every_steps
  if spec.bits:
    c.compression.weight_bits = c.compression.activation_bits = spec.bits
    c.compression.weight_range = c.compression.activation_range = "minmax"
    c.compression.first_last_bits = 8
    c.compression.quant_begin_epoch = 0
  return c
