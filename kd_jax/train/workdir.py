"""A run directory remembers the config its checkpoints were trained with.

Running the same command again resumes; running a *different* config on a directory that holds
checkpoints would silently continue someone else's run and then claim its results. So the first start
writes `config.json`, and every later start compares: a difference in anything that changes what is
computed is refused with the differing keys listed (`KDJaxError`, nothing rewritten), unless the caller
allows it explicitly (`allow_config_change`, the CLI's `--allow-config-change`). Keys that only change
bookkeeping or how long the run goes (`BOOKKEEPING`) may differ. Every accepted difference is appended to
`config_changes.jsonl` (step, key, old, new), and `config.json` then holds the config in force.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from kd_jax.errors import KDJaxError

CONFIG = "config.json"
CHANGES = "config_changes.jsonl"
# Which kernels ran the run's CPU convolutions (`pin_cpu_conv_kernels`).
KERNELS = "kernels.json"
# Keys (or section prefixes) that change logging, checkpoint cadence, where data and caches live, how the
# same computation is laid out on the hardware, or how long the run goes; a resume may change them.
BOOKKEEPING = ("log_every_steps", "progress_bar", "checkpoint_every_epochs", "keep_checkpoints", "epochs",
               "max_steps", "eval_batch_size", "steps_per_call", "conv_backward", "cpu_conv_kernels",
               "distributed.", "sharding.", "data.data_dir", "data.num_workers", "data.prefetch",
               "teacher.cache_dir", "teacher.cache_max_gb")


def prepare_workdir(workdir: str) -> str:
  """`workdir` made absolute, created, and checked writable."""
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise KDJaxError(f"Cannot create workdir {workdir!r}: {e.strerror}. Choose a writable directory.") from e
  if not os.access(workdir, os.W_OK):
    raise KDJaxError(f"Workdir {workdir!r} is not writable. Choose a writable directory.")
  return workdir


def flatten_config(tree: Any, prefix: str = "") -> Dict[str, Any]:
  """A config as JSON (nested dicts) flattened to `{dotted key: value}`."""
  if isinstance(tree, dict):
    flat = {}
    for key, value in tree.items():
      flat.update(flatten_config(value, f"{prefix}{key}."))
    return flat if flat or not prefix else {prefix[:-1]: {}}
  return {prefix[:-1]: tree}


def config_differences(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
  """`{dotted key: (old, new)}` for every key whose value differs (a missing key reads as None). A key the
  old config lacks because an older kd_jax did not have it is no difference while it holds its default."""
  from kd_jax.config import base_config
  a, b = flatten_config(old), flatten_config(new)
  defaults = flatten_config(_as_json(base_config()))
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and not (k not in a and k in defaults and b.get(k) == defaults[k])}


def is_bookkeeping(key: str) -> bool:
  return any(key == k or (k.endswith(".") and key.startswith(k)) for k in BOOKKEEPING)


def _as_json(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def stored_config(workdir: str) -> Optional[Dict[str, Any]]:
  path = os.path.join(workdir, CONFIG)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def check_config(workdir: str, config: ml_collections.ConfigDict, reference: Optional[Dict[str, Any]],
                 allow_change: bool = False) -> Dict[str, Tuple[Any, Any]]:
  """The differences between `config` and `reference` (the config the workdir's checkpoints were trained
  with; None for a fresh run), refused unless they are bookkeeping or `allow_change`."""
  if reference is None:
    return {}
  changes = config_differences(reference, _as_json(config))
  computed = {k: v for k, v in changes.items() if not is_bookkeeping(k)}
  if computed and not allow_change:
    shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(computed.items())[:8])
    more = f"; and {len(computed) - 8} more" if len(computed) > 8 else ""
    raise KDJaxError(
        f"{workdir} holds checkpoints of a run with a different config ({shown}{more}). Resuming would mix two "
        "runs. Use a new --workdir for the new config, or, to continue this run with the change on purpose, "
        "pass --allow-config-change (train_and_evaluate(..., allow_config_change=True)).")
  return changes


def record_config(workdir: str, config: ml_collections.ConfigDict, changes: Dict[str, Tuple[Any, Any]],
                  step: int) -> None:
  """Writes `config.json` (atomically) and appends the accepted `changes` to `config_changes.jsonl`."""
  if changes:
    with open(os.path.join(workdir, CHANGES), "a") as f:
      for key, (old, new) in changes.items():
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": step, "key": key, "old": old,
                            "new": new}) + "\n")
  path = os.path.join(workdir, CONFIG)
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(path + ".tmp", path)


_KERNEL_CODES = ("xla", "ynnpack", "onednn")


def _gather_choices(kernels: str) -> List[str]:
  """Every process's `kernels`, in process order (a collective: every process must call it)."""
  from jax.experimental import multihost_utils
  codes = multihost_utils.process_allgather(np.asarray([_KERNEL_CODES.index(kernels)], np.int32))
  return [_KERNEL_CODES[int(c)] for c in np.asarray(codes).reshape(-1)]


def agree_on_kernels(kernels: str, why: str, choices: Sequence[str]) -> Tuple[str, str]:
  """One `cpu_conv_kernels='auto'` choice for all processes of a run, given each process's (`choices`).

  Every process traces the same programs, so they must agree: where oneDNN builds and passes its
  self-check on some hosts but not on others, every process uses XLA's kernels, which all of them have.
  Returns `(kernels, why)`: this process's own when all agree.
  """
  if len(set(choices)) <= 1:
    return kernels, why
  without = [i for i, choice in enumerate(choices) if choice != "onednn"]
  return "xla", (f"XLA (oneDNN is not usable on process(es) {', '.join(map(str, without))} of this run, and all "
                 "processes must run the same kernels)")


def pin_cpu_conv_kernels(workdir: str, config: ml_collections.ConfigDict, resuming: bool,
                         write: bool = True) -> ml_collections.ConfigDict:
  """`config` with `cpu_conv_kernels` set to the kernels this run uses, recorded in `kernels.json`.

  Why: `cpu_conv_kernels='auto'` picks oneDNN's kernels where they build and pass a self-check and XLA's
  elsewhere (`kd_jax.backends.cpu_conv_kernels_for`), so the same command could switch kernels between a
  run's start and its resume when oneDNN is installed or removed in between; a resumed run would then no
  longer match an uninterrupted one bit for bit. So a fresh run (`resuming` False: no checkpoints yet)
  decides and records `{"cpu_conv_kernels": ..., "why": ...}`, and a resumed run with 'auto' takes the
  recorded kernels (a workdir from before the record existed: the concrete setting in its config.json). A
  recorded 'onednn' that cannot be built or fails its self-check here is a KDJaxError that says how to go
  on. An explicit setting ('xla', 'ynnpack', 'onednn') is used as given and recorded. In a multi-process
  run a fresh 'auto' choice is agreed between the processes (`agree_on_kernels`). Prints one line saying
  which kernels and why; `write` False (other processes of a multi-process run) records nothing.
  """
  from kd_jax import backends
  from kd_jax.backends.cpu import onednn
  setting = config.get("cpu_conv_kernels", "auto")
  path = os.path.join(workdir, KERNELS)
  recorded = None
  if resuming and setting == "auto":
    if os.path.isfile(path):
      with open(path) as f:
        recorded = json.load(f).get("cpu_conv_kernels")
    else:
      recorded = flatten_config(stored_config(workdir) or {}).get("cpu_conv_kernels")
    if recorded not in ("xla", "ynnpack", "onednn"):  # nothing usable recorded ('auto' in an older config.json)
      recorded = None
  if recorded is None:
    kernels, why = backends.cpu_conv_kernels_for(config)
    if setting == "auto" and jax.process_count() > 1:
      kernels, why = agree_on_kernels(kernels, why, _gather_choices(kernels))
  else:
    problem = onednn.self_check() if recorded == "onednn" else None
    if problem is not None:
      raise KDJaxError(
          f"{workdir} was trained with oneDNN's CPU convolutions (recorded in {path}), and they cannot be used "
          f"here: {problem.splitlines()[0].rstrip('.')}. To resume it as it started, install oneDNN again "
          "(`pip install -e '.[cpu]'`, kd_jax.backends.cpu.onednn); to continue with XLA's kernels on purpose, pass "
          "--config.cpu_conv_kernels=xla (the values then differ from an uninterrupted run by float32 rounding).")
    name = {"xla": "XLA", "ynnpack": "YNNPACK", "onednn": None}[recorded] or onednn.describe()
    kernels, why = recorded, f"{name} (recorded in {KERNELS} when the run started; a resume keeps it)"
  if write:
    print(f"[kd_jax] CPU convolutions: {why}", flush=True)
    with open(path + ".tmp", "w") as f:
      json.dump({"cpu_conv_kernels": kernels, "why": why, "setting": setting}, f, indent=2)
    os.replace(path + ".tmp", path)
  pinned = config.copy_and_resolve_references()
  pinned.cpu_conv_kernels = kernels
  return pinned
