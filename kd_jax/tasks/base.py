"""What a task is: the part of training that knows what a batch holds and what "good" means.

The train step, the evaluation and the loop ask the task; they assume neither labels nor images. A task is
an immutable dataclass (hashable, so jitted steps close over it) whose methods are pure functions of
arrays, traced inside the step.

The contract, for a batch (a dict of arrays with a leading batch axis, as `kd_jax.data` cuts them):
  * `inputs(batch)`: what the models are applied to (`model.apply(variables, task.inputs(batch), ...)`).
  * `teacher_inputs(batch)`: what the frozen teachers are applied to; `inputs(batch)` unless the teachers see
    another view of the same batch (segmentation with a privileged modality: more input channels).
  * `views(raw)`: the two views of other inputs of the batch's form (a mixed or augmented copy) for
    `ctx.forward`.
  * `augment(rng, batch, crop_pad=, flip=)`: the batch with its inputs and spatial targets transformed
    jointly (a crop of an input crops its mask or its high-resolution target the same way).
  * `loss(prediction, batch)`: the supervised loss, a scalar mean over the batch (the `supervised` term).
  * `train_metrics(prediction, batch)`: per-step means logged during training (e.g. accuracy).
  * `eval_sums(prediction, batch)`: sums over the real examples of an evaluation batch (`batch['mask']`
    marks them), so the host adds batches exactly and divides once in `metrics(sums)`.
  * `split_metrics(predictions, split)`: metrics that need a whole split's predictions at once and cannot be
    summed per batch (a recommender's per-user ranking metrics); host-side, after the batched pass. The
    loop gathers the predictions only for tasks that name such metrics in `split_metric_names`.
  * `headline`, `higher_is_better`: the metric a results table leads with and its direction.
  * `model_kwargs(dataset)`: what `kd_jax.models.create_model` needs besides the name (class count, user
    and item counts, upscaling factor).
  * `export_info(dataset)`, `check_teacher(info, dataset, workdir)`: what an exported model records besides
    its `model_kwargs` (a regression model's target standardisation), and the check that a teacher's record
    fits this run's data (most tasks record and check nothing more).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Mapping, Tuple

import jax
import numpy as np

from kd_jax.errors import KDJaxError

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
  """Base class; see the module docstring for the contract."""

  name: ClassVar[str] = ""
  headline: ClassVar[str] = ""
  higher_is_better: ClassVar[bool] = True
  # Batch keys the task reads besides the inputs; a dataset must provide them.
  fields: ClassVar[tuple] = ()
  # The metrics `split_metrics` computes (empty: the task has none, and evaluation gathers no predictions).
  split_metric_names: ClassVar[tuple] = ()

  def check_dataset(self, dataset: Any) -> None:
    """Raises `KDJaxError` saying what to change when `dataset` is not data of this task."""
    if getattr(dataset, "task", "classification") != self.name:
      raise KDJaxError(f"Dataset {dataset.name!r} holds {dataset.task} data but config.task is {self.name!r}; "
                       f"set config.task={dataset.task!r} (or choose a {self.name} dataset).")

  def configured(self, data_config: Any, dataset: Any) -> "Task":
    """This task with the settings it takes from `config.data` and the dataset (super-resolution: the scale
    and the patch size); raises `KDJaxError` for settings that do not fit. Most tasks have none."""
    del data_config, dataset
    return self

  def model_kwargs(self, dataset: Any) -> Dict[str, Any]:
    raise NotImplementedError

  def export_info(self, dataset: Any) -> Dict[str, Any]:
    """JSON-serialisable facts an exported model of `dataset` records besides `model_kwargs`."""
    del dataset
    return {}

  def check_teacher(self, info: Mapping[str, Any], dataset: Any, workdir: str) -> None:
    """Raises `KDJaxError` when the teacher exported in `workdir` (its record `info`) does not fit `dataset`."""
    del info, dataset, workdir

  def inputs(self, batch: Batch) -> Any:
    return batch["image"]

  def teacher_inputs(self, batch: Batch) -> Any:
    """The frozen teachers' view of `batch` (default: the students' view, `inputs(batch)`)."""
    return self.inputs(batch)

  def views(self, raw: Any) -> Tuple[Any, Any]:
    """(students' input, teachers' input) made from `raw`, inputs in the form of the batch's input field (an
    augmented copy of the images, with every channel): what `ctx.forward` applies the models to. Both are
    `raw` unless the teachers see another view (segmentation: each model its own channels)."""
    return raw, raw

  def augment(self, rng: jax.Array, batch: Batch, *, crop_pad: int = 0, flip: bool = False) -> Dict[str, Any]:
    del rng, crop_pad, flip
    return dict(batch)

  def loss(self, prediction: jax.Array, batch: Batch) -> jax.Array:
    raise NotImplementedError

  def train_metrics(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    del prediction, batch
    return {}

  def eval_sums(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    raise NotImplementedError

  def metrics(self, sums: Mapping[str, Any]) -> Dict[str, float]:
    raise NotImplementedError

  def split_metrics(self, predictions: np.ndarray, split: Any) -> Dict[str, float]:
    """Metrics of a whole split from its predictions (host arrays, one row per example in the split's order);
    called only for tasks with `split_metric_names`."""
    del predictions, split
    return {}

  def better(self, a: float, b: float) -> bool:
    """Whether headline value `a` is better than `b`."""
    return a > b if self.higher_is_better else a < b
