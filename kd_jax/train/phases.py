"""Multi-phase training: a run as a sequence of phases, each with its own losses, trainable parameters,
optimizer and length.

Methods such as FT (paraphraser pre-training, then the student with its translator), AB (connector
initialisation, then normal training) or FitNet's original hint stage need it. A config lists phases in
`config.phases`; each entry is a dict with the keys of `PHASE_KEYS`. Keys a phase leaves out come from the
top level of the config (`loss`, `optim`, `epochs`), so the usual final phase is just `{'name': 'main'}`.
With no phases a run is one phase made of the top-level keys.

Every phase's distiller terms share one variable tree, keyed by term name: a term named in two phases (FT's
`ft`) keeps its parameters from one phase to the next. Each phase starts a fresh optimizer (as the
reference codes create a new one per phase) whose updates are masked to the phase's `trainable` parameters;
parameters outside it, and the student's BatchNorm statistics when the student is frozen, do not change.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Sequence, Tuple

import ml_collections
import optax
from flax import traverse_util

from kd_jax.errors import KDJaxError
from kd_jax.train.optim import with_overrides

PHASE_KEYS = {
    "name": "a unique label, used in logs and checkpoints",
    "epochs": "length in epochs (default: config.epochs)",
    "loss": "this phase's weighted sum of distillers, as config.loss (default: config.loss)",
    "optim": "overrides of config.optim for this phase's fresh optimizer, e.g. {'lr': 0.1}",
    "trainable": "parameter groups updated: 'student', 'distiller', 'distiller/<term>[/<sub-module>]' "
                 "(default: ('student', 'distiller'))",
    "teacher_batch_statistics": "run the teachers' BatchNorm on batch statistics (AB's original code); "
                                "default False",
}
ALL_TRAINABLE = ("student", "distiller")


@dataclasses.dataclass(frozen=True)
class Phase:
  """One resolved phase; `start_epoch` counts the epochs of the phases before it."""

  name: str
  epochs: int
  loss: ml_collections.ConfigDict
  optim: ml_collections.ConfigDict
  trainable: Tuple[str, ...]
  teacher_batch_statistics: bool
  start_epoch: int

  def steps(self, steps_per_epoch: int) -> Tuple[int, int]:
    """`[start, end)` global step range."""
    return self.start_epoch * steps_per_epoch, (self.start_epoch + self.epochs) * steps_per_epoch

  @property
  def trains_student(self) -> bool:
    return "student" in self.trainable


def resolve_phases(config: ml_collections.ConfigDict) -> Tuple[Phase, ...]:
  """The config's phases with defaults filled in; bad entries raise `KDJaxError` saying what to fix."""
  specs = list(config.get("phases", ())) or [{"name": "main"}]
  phases, start, names = [], 0, set()
  for i, spec in enumerate(specs):
    spec = dict(spec)
    unknown = sorted(set(spec) - set(PHASE_KEYS))
    if unknown:
      valid = "; ".join(f"{k}: {v}" for k, v in PHASE_KEYS.items())
      raise KDJaxError(f"config.phases[{i}] has unknown key(s) {', '.join(unknown)}. Valid keys: {valid}.")
    name = spec.get("name") or f"phase{i}"
    if name in names:
      raise KDJaxError(f"config.phases: phase name {name!r} is used twice; names must be unique.")
    names.add(name)
    epochs = spec.get("epochs", config.epochs)
    if not isinstance(epochs, int) or epochs <= 0:
      raise KDJaxError(f"config.phases[{i}] ({name}): epochs must be a positive integer, got {epochs!r}.")
    optim = with_overrides(config.optim, spec.get("optim"), f"config.phases[{i}] ({name})")
    trainable = spec.get("trainable", ALL_TRAINABLE)
    trainable = (trainable,) if isinstance(trainable, str) else tuple(trainable)
    for group in trainable:
      if not (group in ALL_TRAINABLE or group.startswith("distiller/")):
        raise KDJaxError(f"config.phases[{i}] ({name}): trainable group {group!r} is not 'student', "
                         "'distiller' or 'distiller/<term>[/<sub-module>]'.")
    loss = ml_collections.ConfigDict(dict(spec["loss"])) if "loss" in spec else config.loss
    phases.append(Phase(name, epochs, loss, optim, trainable, bool(spec.get("teacher_batch_statistics", False)),
                        start))
    start += epochs
  return tuple(phases)


def phase_at(phases: Sequence[Phase], step: int, steps_per_epoch: int) -> int:
  """Index of the phase that runs global step `step` (the last phase for steps past the end)."""
  for i, phase in enumerate(phases):
    if step < phase.steps(steps_per_epoch)[1]:
      return i
  return len(phases) - 1


def _path(keys: Tuple[Any, ...]) -> str:
  return "/".join(str(k) for k in keys)


def trainable_labels(trainable_tree: Dict[str, Any], groups: Sequence[str]) -> Dict[str, Any]:
  """`'train'`/`'freeze'` per leaf of `{'student': ..., 'distiller': ...}`, by path prefix.

  A group that matches no parameter raises `KDJaxError` listing the groups that exist, so a typo cannot
  silently freeze everything.
  """
  # Empty subtrees (a distiller without parameters) are kept, so the labels have the tree's structure.
  flat = traverse_util.flatten_dict(trainable_tree, keep_empty_nodes=True)
  paths = {_path(k): k for k in flat}
  for group in groups:
    if not any(p == group or p.startswith(group + "/") for p in paths):
      existing = sorted({"/".join(k[:3]) for k in flat if k[0] == "distiller"} | {"student", "distiller"})
      raise KDJaxError(f"Trainable group {group!r} matches no parameter. Groups that exist: {', '.join(existing)}.")
  labels = {k: flat[k] if flat[k] is traverse_util.empty_node
            else "train" if any(p == g or p.startswith(g + "/") for g in groups) else "freeze"
            for p, k in paths.items()}
  return traverse_util.unflatten_dict(labels)


def masked_optimizer(tx: optax.GradientTransformation, trainable_tree: Dict[str, Any],
                     groups: Sequence[str]) -> optax.GradientTransformation:
  """`tx` on the trainable groups, zero updates elsewhere (no weight decay, no momentum state there).

  With every group trainable it is `tx` itself, so a single-phase run keeps exactly its optimizer.
  """
  if set(groups) >= set(ALL_TRAINABLE):
    return tx
  labels = trainable_labels(trainable_tree, groups)
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
