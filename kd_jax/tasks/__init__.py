"""Tasks: what a batch holds, joint augmentation, the supervised loss, evaluation sums and metrics.

`get_task(name)` returns the registered task; `config.task` names it. Adding a task is one module with a
`Task` subclass and one line in `TASKS`.
"""

from __future__ import annotations

from typing import Dict

from kd_jax.errors import KDJaxError
from kd_jax.tasks.base import Task
from kd_jax.tasks.classification import Classification
from kd_jax.tasks.rating import Rating

TASKS: Dict[str, Task] = {
    "classification": Classification(),
    "rating": Rating(),
}


def task_names() -> list:
  return sorted(TASKS)


def get_task(name: str) -> Task:
  """The registered task `name`; unknown names raise `KDJaxError` listing the registered ones."""
  if name not in TASKS:
    raise KDJaxError(f"Unknown task {name!r}. Registered tasks: {', '.join(task_names())}.")
  return TASKS[name]


__all__ = ["TASKS", "Classification", "Rating", "Task", "get_task", "task_names"]
