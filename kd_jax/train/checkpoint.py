"""Checkpoints (orbax): resumable train states, and exported models that later runs load as teachers and
`load_model` rebuilds for use outside training.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a crash never
leaves a half-written checkpoint that looks finished. Nothing here uses pickle.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from kd_jax import backends
from kd_jax import models as kd_models
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


ARCHITECTURE_KEYS = ("inner_widths",)  # model arguments an export may record beyond the task's sizes


def architecture_kwargs(info: dict) -> dict:
  """The model arguments `info` (a `model.json`) records beyond the task's sizes: a filter-pruned ResNet's
  `inner_widths`."""
  return {k: tuple(info[k]) for k in ARCHITECTURE_KEYS if k in info}


def as_exported(model: nn.Module, info: dict) -> Any:
  """`model` as the run that exported `info` (its `model.json`) trained it: wrapped in a
  `kd_jax.compression.CompressedModel` when the run pruned or quantised it (masks, observers and LSQ step
  sizes are among the exported variables; a quantised export computes quantised, as the run evaluated it)."""
  settings = info.get("compression")
  if not settings:
    return model
  from kd_jax.compression.model import CompressedModel, compression_from_settings  # late: optional part
  pruning, quant = compression_from_settings(settings)
  return CompressedModel(model, pruning, quant, quantize=bool(settings.get("quantized", quant is not None)))


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


RUN_CONFIG = "config.json"


def load_model(workdir: str, *, with_info: bool = False, kernels: Optional[backends.Kernels] = None
               ) -> Union[Tuple[nn.Module, Any], Tuple[nn.Module, Any, dict]]:
  """The model a finished kd_jax run exported, ready to apply: `(model, variables)`.

      model, variables = kd_jax.load_model(workdir)
      out = model.apply(variables, images, train=False)   # a ModelOutput; out.prediction

  Works for any task and scheme: `workdir` is a run's `--workdir` (its student) or, for the other networks
  of a 'mutual'/'adversarial' run, `<workdir>/networks/<name>`. The model is rebuilt from what the run
  recorded: the registered name and the task's sizes (class count, scale, user and item counts) in
  `model.json`, the computation dtype (`compute_dtype`) in the run's `config.json` (float32 if absent), and
  the variables are the exported ones, checked parameter by parameter against the model
  (`load_exported_model`). `kernels` (a `kd_jax.backends.Kernels`) defaults to XLA's kernels; the run's
  choice changes only the order of the sums, never the parameters.

  Inputs are what the run's data pipeline fed the model: NHWC float32 images normalised as `kd_jax.data`
  normalises them, `(raw * scale - mean) / std` per channel (`Split.get`; CIFAR: the dataset's constant
  mean and std of pixels in [0, 1]; digits and `from_arrays` data: the moments of the training pool; other
  tasks' loaders document theirs); a rating model takes `{'user': int32 [B], 'item': int32 [B]}`. The
  export does not store the mean and std: `info['dataset']` names the data, and `kd_jax.data.load_dataset`
  with the run's config gives splits that apply them (their `mean`, `std` and `scale`).

  Args:
    workdir: a finished run's directory.
    with_info: also return the run's record, `(model, variables, info)`: `model.json` (model, dataset,
      task, image_shape, step, network and the sizes) plus `dtype` (the computation dtype's name) and
      `config` (the run's `config.json` as a dict, or None where there is none).
    kernels: the convolutions' kernels (default `kd_jax.backends.DEFAULT_KERNELS`).

  Raises:
    KDJaxError: `workdir` does not exist, is not a kd_jax run, has not finished (no exported model yet),
      or holds an export that does not fit the model its record names.
  """
  info = _finished_run_info(workdir)
  config = _run_config(workdir)
  dtype = str((config or {}).get("compute_dtype", "float32"))
  name = info["model"]
  sizes = {k: tuple(info[k]) if isinstance(info[k], list) else info[k] for k in kd_models.model_arguments(name)
           if k in info and k not in ("dtype", "param_dtype", "kernels")}
  model = as_exported(kd_models.create_model(name, dtype=dtype, kernels=backends.DEFAULT_KERNELS if kernels is None
                                             else kernels, **sizes), info)
  variables = load_exported_model(workdir, model, _sample_inputs(info, config))
  if not with_info:
    return model, variables
  return model, variables, {**info, "dtype": dtype, "config": config}


def _finished_run_info(workdir: str) -> dict:
  """`model.json` of a finished run, with a `KDJaxError` saying what `workdir` is when it is not one."""
  if not os.path.isdir(workdir):
    raise KDJaxError(f"{workdir!r} does not exist or is not a directory. Pass the --workdir of a finished kd_jax "
                     "run (or <workdir>/networks/<name> for another network of a multi-network run).")
  if not os.path.isfile(os.path.join(workdir, EXPORT_INFO)):
    if os.path.isdir(os.path.join(workdir, "checkpoints")) or os.path.isfile(os.path.join(workdir, RUN_CONFIG)):
      raise KDJaxError(f"The run in {workdir!r} has not finished: it holds no exported model ({EXPORT_INFO} is "
                       "missing). Run the same command with the same --workdir again to resume and finish it.")
    raise KDJaxError(f"{workdir!r} is not a kd_jax run directory (no {EXPORT_INFO}, {RUN_CONFIG} or checkpoints). "
                     "Pass the --workdir of a finished kd_jax run.")
  try:
    info = read_export_info(workdir)
  except json.JSONDecodeError as e:
    raise KDJaxError(f"{os.path.join(workdir, EXPORT_INFO)} is not valid JSON ({e}); the export is damaged. Run "
                     "the training again in a new --workdir.") from e
  if not isinstance(info, dict) or not isinstance(info.get("model"), str):
    raise KDJaxError(f"{os.path.join(workdir, EXPORT_INFO)} names no model; it was not written by kd_jax's export. "
                     "Pass the --workdir of a finished kd_jax run.")
  if not os.path.isdir(os.path.join(workdir, EXPORT_DIR)):
    raise KDJaxError(f"{workdir!r} has {EXPORT_INFO} but no exported variables ({EXPORT_DIR}/ is missing). Run the "
                     "training again in a new --workdir.")
  return info


def _run_config(workdir: str) -> Optional[dict]:
  """The run's `config.json`: in `workdir`, or two levels up for `<workdir>/networks/<name>`; None if absent."""
  here = os.path.abspath(workdir)
  parent = os.path.dirname(here)
  candidates = [here] + ([os.path.dirname(parent)] if os.path.basename(parent) == "networks" else [])
  for directory in candidates:
    path = os.path.join(directory, RUN_CONFIG)
    if os.path.isfile(path):
      with open(path) as f:
        return json.load(f)
  return None


def _sample_inputs(info: dict, config: Optional[dict]) -> Any:
  """One example of the inputs the run's models were applied to (`Task.inputs` of a batch), zeros: what
  `load_exported_model` traces the model on to learn its parameter shapes."""
  if info.get("task") == "rating":
    return {"user": jnp.zeros((1,), jnp.int32), "item": jnp.zeros((1,), jnp.int32)}
  shape = [int(d) for d in info.get("image_shape", ())]
  if not shape:
    raise KDJaxError(f"The export record of model {info['model']!r} has no image_shape, so its input size is "
                     "unknown; it was written by another kd_jax version. Train it again with this version.")
  channels = ((config or {}).get("data") or {}).get("student_channels") or ()
  if info.get("task") == "segmentation" and channels:
    shape[-1] = len(channels)  # the networks of a privileged-modality run see only the student's channels
  return jnp.zeros([1] + shape, jnp.float32)
