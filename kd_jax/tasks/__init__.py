"""Tasks: what a batch holds, joint augmentation, the supervised loss, evaluation sums and metrics.

`get_task(name)` returns the registered task; `config.task` names it. Adding a task is one module with a
`Task` subclass and one line in `TASKS`.
"""

from __future__ import annotations

from typing import Any, Dict

from kd_jax.errors import KDJaxError
from kd_jax.tasks.base import Task
from kd_jax.tasks.classification import Classification
from kd_jax.tasks.rating import Rating
from kd_jax.tasks.regression import Regression
from kd_jax.tasks.segmentation import Segmentation
from kd_jax.tasks.super_resolution import SuperResolution

TASKS: Dict[str, Task] = {
    "classification": Classification(),
    "rating": Rating(),
    "regression": Regression(),
    "segmentation": Segmentation(),
    "super_resolution": SuperResolution(),
}


def task_names() -> list:
  return sorted(TASKS)


def get_task(name: str) -> Task:
  """The registered task `name`; unknown names raise `KDJaxError` listing the registered ones."""
  if name not in TASKS:
    raise KDJaxError(f"Unknown task {name!r}. Registered tasks: {', '.join(task_names())}.")
  return TASKS[name]


def task_for(config: Any, dataset: Any) -> Task:
  """The task `config.task` configured for `dataset` and `config.data` (see `Task.configured`)."""
  task = get_task(config.task)
  task.check_dataset(dataset)
  return task.configured(config.data, dataset)


__all__ = ["TASKS", "Classification", "Rating", "Regression", "Segmentation", "SuperResolution", "Task", "get_task", "task_for", "task_names"]
