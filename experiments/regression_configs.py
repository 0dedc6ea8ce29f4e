"""The configs of the regression and pseudo-label experiments (METHODS.md item 16), shared by
`regression_teacher.py`, `regression_pseudo_label.py`, `trajectory_teacher.py`, `trajectory_pseudo_label.py`
and `regression_study.py` (experiment files import it from their folder; the library never does).

Two datasets (`kd_jax.data.regression`), each with a large teacher and a small student:
  * 'diabetes' (scikit-learn's, 442 × 10, one target): `regression_mlp_large` (256-256) → `regression_mlp_small`
    (16), batch 32, 100 epochs of 9 steps.
  * 'trajectories' (synthetic agents, 8 observed → 12 future positions): `gru_trajectory_large` (GRU 64) →
    `gru_trajectory_small` (GRU 16), batch 64, 30 epochs of 22 steps.
Both: Adam (decoupled weight decay 1e-4) at 3e-3 with a cosine schedule, the L2 supervised loss on the labeled
examples, 20% of the training split labeled. The settings are ours, sized to take seconds per run on 2 CPU
cores [assume].

Methods (`METHODS`):
  * 'teacher': the large model on the labeled examples.
  * 'labeled': the student on the labeled examples alone.
  * 'pseudo_label': (1 − α)·supervised + α·pseudo_label from the teacher on every example, α = 0.5 [assume].
  * 'ensemble': the same from a 2-teacher ensemble (the teacher and a second one trained with another
    `config.seed`), examples weighted by the teachers' agreement (`weighting='ensemble'`, τ 0.1).
  * 'full': the student with every training label (labeled_fraction 1), the upper reference.
Every run of one seed uses `config.data.split_seed = seed`, so the teachers, trained with seeds `seed` and
`seed + SECOND_TEACHER_OFFSET`, see the student's split and labeled subset and differ only in initialisation
and batch order.
"""

from __future__ import annotations

from typing import Sequence

import ml_collections

from kd_jax.config import base_config

DATASETS = {
    "diabetes": {"teacher": "regression_mlp_large", "student": "regression_mlp_small", "batch_size": 32,
                 "epochs": 100},
    "trajectories": {"teacher": "gru_trajectory_large", "student": "gru_trajectory_small", "batch_size": 64,
                     "epochs": 30},
}
METHODS = ("teacher", "labeled", "pseudo_label", "ensemble", "full")
LABELED_FRACTION = 0.2  # [assume]
ALPHA = 0.5             # weight of the pseudo-label term, 1 − α on the ground truth [assume]
SECOND_TEACHER_OFFSET = 100  # config.seed of the ensemble's second teacher: seed + this


def regression_base_config(dataset: str = "diabetes", seed: int = 0,
                           labeled_fraction: float = LABELED_FRACTION) -> ml_collections.ConfigDict:
  """What every run on `dataset` shares: the data, its split seed, the optimizer, the schedule."""
  spec = DATASETS[dataset]
  c = base_config()
  c.seed = seed
  c.task = "regression"
  c.data.name = dataset
  c.data.labeled_fraction = labeled_fraction
  c.data.split_seed = seed
  c.student.model = spec["student"]
  c.loss = ml_collections.ConfigDict({"supervised": {"weight": 1.0}})
  c.optim.name = "adamw"
  c.optim.lr = 3e-3
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.batch_size = spec["batch_size"]
  c.eval_batch_size = 512
  c.epochs = spec["epochs"]
  c.log_every_steps = 100
  c.checkpoint_every_epochs = max(1, spec["epochs"] // 4)
  c.keep_checkpoints = 1
  return c


def regression_config(dataset: str = "diabetes", method: str = "pseudo_label", seed: int = 0,
                      teacher_workdirs: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of `method` (see `METHODS`) on `dataset`; `teacher_workdirs` are the finished teacher runs
  ('pseudo_label': one; 'ensemble': two)."""
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  c = regression_base_config(dataset, seed, 1.0 if method == "full" else LABELED_FRACTION)
  if method == "teacher":
    c.student.model = DATASETS[dataset]["teacher"]
  elif method in ("pseudo_label", "ensemble"):
    term = {"weight": ALPHA, "norm": "l2", "on": "all"}
    if method == "ensemble":
      term.update(weighting="ensemble", tau=0.1)
    c.loss = ml_collections.ConfigDict({"supervised": {"weight": 1.0 - ALPHA}, "pseudo_label": term})
    c.teacher.workdir = teacher_workdirs[0] if teacher_workdirs else ""
    c.teacher.extra_workdirs = tuple(teacher_workdirs[1:])
  return c
