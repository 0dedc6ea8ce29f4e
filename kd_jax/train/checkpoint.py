"""Checkpoints (orbax): resumable train states, and exported models that later runs load as teachers.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a crash never
leaves a half-written checkpoint that looks finished. Nothing here uses pickle.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

from kd_jax.errors import KDJaxError
from kd_jax.train.distributed import is_main_process

log = logging.getLogger(__name__)

EXPORT_DIR = "model"
EXPORT_INFO = "model.json"


def checkpoint_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)), force=True)


UNREADABLE = "unreadable_checkpoints"


def stored_meta(manager: ocp.CheckpointManager) -> dict:
  """The `meta` record of the newest checkpoint whose record reads ({} if none does)."""
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception:  # noqa: BLE001 - a damaged record: try the previous checkpoint
      continue
  return {}


def restore_latest(manager: ocp.CheckpointManager,
                   template: Any | Callable[[int], Any]) -> Tuple[Optional[Any], Optional[dict]]:
  """Restores the newest readable checkpoint into `template`'s structure and shardings.

  `template` may be a function of the checkpoint's step, for states whose structure depends on it (a
  multi-phase run's optimizer state).

  A checkpoint that fails to read (e.g. truncated by a crash outside orbax's atomic rename) is moved aside
  to `<workdir>/unreadable_checkpoints/<step>` (kept for inspection) with a warning, and the previous one is
  used; the run then trains those steps again and checkpoints them afresh. A checkpoint that reads but holds
  a differently shaped state (another model, another kd_jax version's layout) is not moved: that raises
  `KDJaxError` naming the differences. With none readable the run starts from scratch only if there were
  none at all.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  for step in steps:
    target = template(step) if callable(template) else template
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      return restored["state"], restored["meta"]
    except Exception as e:  # noqa: BLE001 - any read failure means "try the previous checkpoint"
      mismatch = _layout_mismatch(manager, step, abstract)
      if mismatch:
        raise KDJaxError(f"The checkpoint at step {step} in {manager.directory} holds a different train state "
                         f"than this config builds ({mismatch}). It belongs to another model or kd_jax version: "
                         "use a new --workdir.") from e
      moved = set_aside(manager, step)
      log.warning("Checkpoint at step %d in %s is unreadable (%s); moved to %s, falling back to the previous "
                  "one.", step, manager.directory, " ".join(str(e).split())[:300], moved)
  if steps:
    raise KDJaxError(f"No readable checkpoint in {manager.directory} (tried steps {steps}; they were moved to "
                     f"{os.path.join(os.path.dirname(str(manager.directory)), UNREADABLE)}). Run again to start "
                     "from scratch.")
  return None, None


def _path_str(path: Tuple[Any, ...]) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _layout_mismatch(manager: ocp.CheckpointManager, step: int, abstract: Any) -> str:
  """A description of how checkpoint `step`'s stored tree differs from `abstract` in paths or shapes;
  '' when it matches or when its metadata cannot be read (a damaged checkpoint, not a different one)."""
  try:
    stored = ocp.StandardCheckpointer().metadata(
        os.path.join(str(manager.directory), str(step), "state")).item_metadata.tree
    have = {_path_str(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_leaves_with_path(stored)}
  except Exception:  # noqa: BLE001 - unreadable metadata: damaged
    return ""
  want = {_path_str(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_leaves_with_path(abstract)}
  problems = [f"{k}: {have[k]} stored, {want[k]} expected" for k in sorted(want) if k in have and have[k] != want[k]]
  problems += [f"{k} missing" for k in sorted(set(want) - set(have))]
  problems += [f"{k} not expected" for k in sorted(set(have) - set(want))]
  return "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")


def set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves checkpoint `step` to `<workdir>/unreadable_checkpoints/<step>[-n]` (process 0; the others wait)
  and makes the manager forget it, so the run can save that step again."""
  directory = os.path.join(os.path.dirname(str(manager.directory)), UNREADABLE)
  target = os.path.join(directory, str(step))
  if is_main_process():
    os.makedirs(directory, exist_ok=True)
    n = 1
    while os.path.exists(target):
      target, n = os.path.join(directory, f"{step}-{n}"), n + 1
    os.rename(os.path.join(str(manager.directory), str(step)), target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"kd_jax set aside checkpoint {step}")
  manager.reload()
  return target


def export_model(workdir: str, variables: Any, info: dict) -> str:
  """Writes the final model variables (`params`, `batch_stats`) and a JSON description for reuse."""
  path = os.path.join(os.path.abspath(workdir), EXPORT_DIR)
  checkpointer = ocp.StandardCheckpointer()
  # Empty collections (an MLP's batch_stats) are dropped so the export matches `model.init`'s structure.
  # Host copies: in a multi-process run every process calls this (orbax saves collectively, process 0 writes
  # the host arrays); `host_values` gathers arrays that are split across processes.
  variables = {k: v for k, v in host_values(variables).items() if jax.tree.leaves(v)}
  checkpointer.save(path, variables, force=True)
  checkpointer.wait_until_finished()
  if is_main_process():
    with open(os.path.join(workdir, EXPORT_INFO), "w") as f:
      json.dump(info, f, indent=2)
  return path


def host_values(tree: Any) -> Any:
  """`jax.device_get(tree)`, also for arrays split across processes (FSDP in a multi-process run).

  Replicated and process-local arrays are read from this process's devices; an array whose parts live on
  other processes is all-gathered, a collective that every process must reach in the same order.
  """
  def get(leaf):
    if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable or leaf.is_fully_replicated):
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return jax.device_get(leaf)
  return jax.tree.map(get, tree)


def read_export_info(workdir: str) -> dict:
  info_path = os.path.join(workdir, EXPORT_INFO)
  if not os.path.isfile(info_path):
    raise KDJaxError(f"{workdir!r} holds no exported model ({EXPORT_INFO} is missing). Point "
                     "config.teacher.workdir at a kd_jax run that finished training (run it again with the "
                     "same --workdir to resume and finish it).")
  with open(info_path) as f:
    return json.load(f)


def _flat_shapes(tree: Any) -> dict:
  return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def load_exported_model(workdir: str, model: nn.Module, sample_images: jax.Array) -> Any:
  """Loads an exported model's variables, checking every parameter against `model`'s shapes.

  A mismatch raises `KDJaxError` naming the parameter, e.g. a resnet32x4 checkpoint given to a resnet8x4.
  """
  path = os.path.join(os.path.abspath(workdir), EXPORT_DIR)
  checkpointer = ocp.StandardCheckpointer()
  expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), sample_images, train=False))
  stored = checkpointer.metadata(path).item_metadata.tree
  want, have = _flat_shapes(expected), _flat_shapes(stored)
  problems = [f"{k}: model expects {want[k]}, checkpoint has {have[k]}" for k in sorted(want)
              if k in have and want[k] != have[k]]
  problems += [f"{k}: missing from the checkpoint" for k in sorted(set(want) - set(have))]
  problems += [f"{k}: in the checkpoint but not in the model" for k in sorted(set(have) - set(want))]
  if problems:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    raise KDJaxError(f"The model exported in {workdir!r} does not fit the configured model: {shown}.")
  return checkpointer.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, expected))
