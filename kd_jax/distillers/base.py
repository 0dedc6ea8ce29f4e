"""The distiller interface and the weighted sum of distillers.

A distiller binds a pure loss from `kd_jax.losses` to the model outputs it reads, and owns any trainable
extra parts (regressors, connectors, ...) as Flax modules. It is an immutable dataclass: its fields are
hyper-parameters, so it can be hashed and closed over by a jitted train step.

Variables follow Flax's convention, a dict of collections: `{'params': ..., 'batch_stats': ...}`.
`params` are trained by the optimizer together with the student; any other collection is state that the
distiller returns updated (e.g. a connector's BatchNorm statistics, a memory bank).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput

Variables = Dict[str, Any]
Metrics = Dict[str, jax.Array]
Batch = Mapping[str, jax.Array]


TeacherOutput = Union[None, ModelOutput, Tuple[ModelOutput, ...]]
# forward(images, mask=None) -> (student output in train mode, teacher output): the models at this step's
# parameters on other images (a mixed or augmented copy of the batch), or on other model inputs in general
# (a recommender's `{'user', 'item'}` ids of items sampled for the batch's users), in the form of the
# batch's input field; each model gets its own view of them (`Task.views`: a segmentation student and
# teacher see different channels). Gradients flow through the student pass. `mask` ([B] bool): the rows
# the student's BatchNorm takes its batch statistics from (a reference that forwards only a subset of the
# batch); the others still pass through. The distill scheme's step keeps each extra pass's update of the
# running statistics, in call order after the main pass, as PyTorch's train-mode forwards do. Under a
# weighted sum, a term that picks teachers gets their outputs only; under the mutual scheme the "teacher"
# is the other network (detached) and the extra passes' statistics are discarded.
Forward = Callable[..., Tuple[ModelOutput, TeacherOutput]]


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """What `Distiller.prepare` may read about the training split (host-side, before training starts).

  Attributes:
    teacher_logits: returns the first teacher's logits [N, C] on the un-augmented training images, as the
      distillers see them (calibration included); computed on first call only, so a distiller that does
      not call it costs no teacher pass.
    labels: the training labels [N], in the order of `batch['index']`.
    num_classes: C.
    rated: rating data only (else None): [num_users, num_items] bool, the (user, item) pairs the training
      split rates, which the recommender distillers exclude when they rank "unrated" items.
    teacher_scores: rating data only (else None): `teacher_scores(k)` is teacher k's predicted rating of every
      (user, item) pair [num_users, num_items] (k numbers the teachers the distiller sees, in the order of
      its `teacher` argument); computed on first call only.
  """

  teacher_logits: Callable[[], np.ndarray]
  labels: np.ndarray
  num_classes: int
  rated: Optional[np.ndarray] = None
  teacher_scores: Optional[Callable[[int], np.ndarray]] = None

  @property
  def num_examples(self) -> int:
    return int(len(self.labels))


@dataclasses.dataclass(frozen=True)
class Context:
  """Where in training a loss is evaluated.

  Attributes:
    rng: this step's key for this distiller (None outside training).
    train: True inside the train step (connectors' BatchNorm then uses batch statistics).
    step: updates already applied.
    epoch: the 1-based epoch this step belongs to (mdistiller's `epoch` for warm-ups).
    forward: see `Forward`; None where no model is at hand (unit tests of the pure parts).
    task: the run's `kd_jax.tasks.Task` (the `supervised` term asks it for the loss); None means
      classification.
    kernels: the run's `kd_jax.backends.Kernels`, the convolutions its networks use; a distiller's own
      convolutions (regressors, ReviewKD's fusion) take them through `conv_of(ctx.kernels)`. None: XLA's.
  """

  rng: Optional[jax.Array] = None
  train: bool = False
  step: Any = 0
  epoch: Any = 1
  forward: Optional[Forward] = None
  task: Any = None
  kernels: Any = None


def conv_of(kernels: Any) -> Callable[..., jax.Array]:
  """The `conv_general_dilated` for a distiller module's `nn.Conv`: `kernels.conv_general_dilated` (the run's
  kernels, `Context.kernels`), or `lax.conv_general_dilated` when `kernels` is None. Either computes the same
  values, so a module's parameters do not depend on it (its `init` may leave it None)."""
  return jax.lax.conv_general_dilated if kernels is None else kernels.conv_general_dilated


@dataclasses.dataclass(frozen=True)
class Distiller:
  """Base class. Subclasses override `loss` and, if they own trainable parts, `init`.

  `needs_teacher` is False for terms that never read the teacher (plain cross-entropy): a run made only
  of such terms skips the teacher's forward pass.
  """

  needs_teacher = True

  def init(self, rng: jax.Array, student: ModelOutput, teacher: Optional[ModelOutput],
           batch: Batch) -> Variables:
    """Initial variables, built from sample outputs so that shapes (e.g. a regressor's) fit the models."""
    del rng, student, teacher, batch
    return {}

  def prepare(self, data: TrainingData) -> "Distiller":
    """A copy with the constants that depend on the whole training split.

    Energy KD's thresholds (a pass of the frozen teacher) and CRD's bank size are examples. The loop
    stores the fields a `prepare` changed in the run directory, so a resumed run uses exactly the same
    constants; they must therefore be JSON-serialisable (numbers, strings, tuples). The default needs
    nothing.
    """
    del data
    return self

  def loss(self, variables: Variables, student: ModelOutput, teacher: TeacherOutput, batch: Batch,
           ctx: Context) -> Tuple[jax.Array, Metrics, Variables]:
    """Returns `(loss, metrics, new_state)`; `new_state` holds the updated non-`params` collections.

    `teacher` is the teacher's `ModelOutput` (a tuple of them for several teachers, None when
    `needs_teacher` is False); `batch` holds at least 'image' (the augmented view both models saw) and
    'label'; `ctx` says where in training this step is.
    """
    raise NotImplementedError

  def __call__(self, variables: Variables, student: ModelOutput, teacher: TeacherOutput, batch: Batch, *,
               rng: Optional[jax.Array] = None, train: bool = False, step: jax.Array | int = 0,
               epoch: jax.Array | int = 1, forward: Optional[Forward] = None,
               task: Any = None, kernels: Any = None) -> Tuple[jax.Array, Metrics, Variables]:
    return self.loss(variables, student, teacher, batch, Context(rng, train, step, epoch, forward, task, kernels))


def require_positive(name: str, **values: float) -> None:
  """Raises ValueError naming the distiller and the hyper-parameter unless every value is > 0."""
  for key, value in values.items():
    if not value > 0:
      raise ValueError(f"{name}: {key} must be > 0, got {value}.")


def require_fraction(name: str, **values: float) -> None:
  """Raises ValueError naming the distiller and the hyper-parameter unless every value is in [0, 1)."""
  for key, value in values.items():
    if not 0.0 <= value < 1.0:
      raise ValueError(f"{name}: {key} must be in [0, 1), got {value}.")


def class_rows(logits: jax.Array) -> jax.Array:
  """Logits with the class axis last as rows [N, C]: [B, C] unchanged, per-pixel [B, H, W, C] as B·H·W rows.

  Logit distillers read `class_rows(out.logits)`, so on per-pixel logits (segmentation) every pixel is an
  example and their batch means become means over pixels and batch.
  """
  return logits.reshape(-1, logits.shape[-1]) if logits.ndim > 2 else logits


def label_rows(labels: jax.Array) -> jax.Array:
  """Labels matching `class_rows`: [B] unchanged, [B, H, W] flattened."""
  return labels.reshape(-1) if labels.ndim > 1 else labels


def split_state(variables: Variables) -> Tuple[Any, Variables]:
  """Splits Flax-style variables into `(params, other collections)`."""
  params = variables.get("params", {})
  state = {k: v for k, v in variables.items() if k != "params"}
  return params, state


@dataclasses.dataclass(frozen=True)
class WeightedSum(Distiller):
  """`L = Σ_i w_i · L_i`, itself a distiller.

  Each term's variables live under its name inside every collection
  (`{'params': {name: ...}, 'batch_stats': {name: ...}}`) so the train step can still find all trainable
  parameters under `params`. Metrics are reported per term as `name/<metric>`, with the term's unweighted
  loss as `name/loss`.

  A term may read only some of the run's teachers (`teacher_picks`; the config's `teacher` key of a term):
  an index gives it that one teacher's output, a tuple of indices a tuple of outputs, in the order of
  `config.teacher.workdir` then `config.teacher.extra_workdirs`. Pacemaker KD's sequential phases (first
  the pacemaker, then the teacher) and any term that should not see every teacher use it.

  Attributes:
    terms: `(name, weight, distiller)` triples; names must be unique.
    teacher_picks: `(name, index or tuple of indices)` for the terms that read a subset of the teachers.
  """

  terms: Tuple[Tuple[str, float, Distiller], ...] = ()
  teacher_picks: Tuple[Tuple[str, Union[int, Tuple[int, ...]]], ...] = ()

  def __post_init__(self):
    names = [name for name, _, _ in self.terms]
    if len(set(names)) != len(names):
      raise ValueError(f"WeightedSum: term names must be unique, got {names}.")
    unknown = sorted({name for name, _ in self.teacher_picks} - set(names))
    if unknown:
      raise ValueError(f"WeightedSum: teacher_picks names terms {unknown} that are not in the sum {names}.")

  def teacher_for(self, name: str, teacher: TeacherOutput) -> TeacherOutput:
    """The teacher output(s) term `name` reads: all of them, or its pick."""
    pick = dict(self.teacher_picks).get(name)
    if pick is None or teacher is None:
      return teacher
    teachers = (teacher,) if isinstance(teacher, ModelOutput) else tuple(teacher)
    indices = (pick,) if isinstance(pick, int) else tuple(pick)
    bad = [i for i in indices if not 0 <= i < len(teachers)]
    if bad:
      raise KDJaxError(f"config.loss.{name}.teacher={pick!r} names teacher(s) {bad}, but the run has "
                       f"{len(teachers)} teacher(s), numbered from 0 in the order config.teacher.workdir, "
                       "config.teacher.extra_workdirs.")
    return teachers[pick] if isinstance(pick, int) else tuple(teachers[i] for i in indices)

  @property
  def needs_teacher(self) -> bool:  # type: ignore[override]
    return any(d.needs_teacher for _, _, d in self.terms)

  @staticmethod
  def _sub(variables: Variables, name: str) -> Variables:
    return {col: tree[name] for col, tree in variables.items() if name in tree}

  def prepare(self, data: TrainingData) -> "WeightedSum":
    return dataclasses.replace(self, terms=tuple(
        (name, weight, d.prepare(self._data_for(name, data))) for name, weight, d in self.terms))

  def _data_for(self, name: str, data: TrainingData) -> TrainingData:
    """`data` as term `name` sees it: `teacher_scores(k)` numbers its picked teachers, as its `loss` does."""
    pick = dict(self.teacher_picks).get(name)
    if pick is None or data.teacher_scores is None:
      return data
    indices = (pick,) if isinstance(pick, int) else tuple(pick)

    def scores(k: int) -> np.ndarray:
      if not 0 <= k < len(indices):
        raise KDJaxError(f"config.loss.{name} reads its teacher {k}, but its `teacher` key ({pick!r}) gives it "
                         f"{len(indices)}: list one run's teacher index per teacher it reads.")
      return data.teacher_scores(indices[k])

    return dataclasses.replace(data, teacher_scores=scores)

  def _forward_for(self, name: str, forward: Optional[Forward]) -> Optional[Forward]:
    """`forward` with the teacher outputs term `name` reads (its pick), as its `teacher` argument has them."""
    if forward is None or dict(self.teacher_picks).get(name) is None:
      return forward

    def picked(inputs, mask=None):
      student, teacher = forward(inputs) if mask is None else forward(inputs, mask=mask)
      return student, self.teacher_for(name, teacher)

    return picked

  def prepared_fields(self, prepared: "WeightedSum") -> Dict[str, Dict[str, Any]]:
    """`{term: {field: value}}` for the hyper-parameters that `prepared` (from `self.prepare`) changed."""
    changed = {}
    for (name, _, before), (_, _, after) in zip(self.terms, prepared.terms):
      diff = {f.name: getattr(after, f.name) for f in dataclasses.fields(after)
              if getattr(after, f.name) != getattr(before, f.name)}
      if diff:
        changed[name] = diff
    return changed

  def with_fields(self, fields: Mapping[str, Mapping[str, Any]]) -> "WeightedSum":
    """The sum with `prepared_fields` output applied (how a resumed run restores prepared constants)."""
    return dataclasses.replace(self, terms=tuple(
        (name, weight, dataclasses.replace(d, **fields.get(name, {}))) for name, weight, d in self.terms))

  def init(self, rng, student, teacher, batch):
    variables: Variables = {}
    for i, (name, _, distiller) in enumerate(self.terms):
      term_teacher = self.teacher_for(name, teacher)
      for col, tree in distiller.init(jax.random.fold_in(rng, i), student, term_teacher, batch).items():
        variables.setdefault(col, {})[name] = tree
    return variables

  def loss(self, variables, student, teacher, batch, ctx):
    total = jnp.zeros((), jnp.float32)
    metrics: Metrics = {}
    new_state: Variables = {}
    for i, (name, weight, distiller) in enumerate(self.terms):
      term_ctx = dataclasses.replace(ctx, rng=None if ctx.rng is None else jax.random.fold_in(ctx.rng, i),
                                     forward=self._forward_for(name, ctx.forward))
      value, term_metrics, term_state = distiller.loss(self._sub(variables, name), student,
                                                       self.teacher_for(name, teacher), batch, term_ctx)
      total = total + weight * value
      metrics[f"{name}/loss"] = value
      metrics.update({f"{name}/{k}": v for k, v in term_metrics.items()})
      for col, tree in term_state.items():
        new_state.setdefault(col, {})[name] = tree
    return total, metrics, new_state
