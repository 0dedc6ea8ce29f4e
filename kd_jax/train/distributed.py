"""Multi-process runs: `jax.distributed` initialisation from `config.distributed` or the environment.

A multi-process run is one program started once per host (GPU clusters) or per TPU-VM worker; each process
sees its own local devices, and `jax.devices()` lists the devices of all of them. Every process runs the same
loop on the same config; the train step is one SPMD program over the global mesh, and each process feeds the
rows of the global batch that belong to its devices (`sharding.process_rows`). docs/scaling.md says how to
launch such a run.

Where the settings come from, per field, first match wins:

1. `config.distributed.{coordinator_address, num_processes, process_id, local_device_ids}`;
2. the environment: `KD_JAX_COORDINATOR_ADDRESS`, `KD_JAX_NUM_PROCESSES`, `KD_JAX_PROCESS_ID` (for launchers
   that export per-process variables, e.g. a Kubernetes indexed job);
3. with `config.distributed.auto_detect=True`, JAX's own cluster detection fills what is still missing:
   Cloud TPU VMs (pods), SLURM (`srun`), Open MPI (`mpirun`), Kubernetes with the `kubernetes` package, and
   `mpi4py` when asked for. JAX itself also reads `JAX_COORDINATOR_ADDRESS` and `JAX_LOCAL_DEVICE_IDS`.

With none of these given the run is single-process and nothing is initialised. Initialisation must come before
anything touches a JAX backend (`jax.devices()`, any computation): the CLI calls `initialize` before it builds
anything, and `train_and_evaluate` calls it again, which is a no-op once done.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional, Tuple

import jax
import ml_collections
import numpy as np

from kd_jax.errors import KDJaxError

ENV_COORDINATOR = "KD_JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "KD_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "KD_JAX_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class Settings:
  """Arguments for `jax.distributed.initialize`; `None` leaves a field to JAX's cluster detection."""

  coordinator_address: Optional[str]
  num_processes: Optional[int]
  process_id: Optional[int]
  local_device_ids: Optional[Tuple[int, ...]]
  auto_detect: bool
  initialization_timeout: int


def _env_int(env: Mapping[str, str], name: str) -> Optional[int]:
  text = env.get(name, "").strip()
  if not text:
    return None
  try:
    return int(text)
  except ValueError:
    raise KDJaxError(f"Environment variable {name}={text!r} must be an integer.") from None


def resolve(config: ml_collections.ConfigDict, env: Optional[Mapping[str, str]] = None) -> Optional[Settings]:
  """The initialisation this config asks for, or None for a single-process run.

  Explicit settings (config or `KD_JAX_*` variables) must give all of coordinator address, number of processes
  and process id; half of them is an error that names what is missing, since guessing the rest would start a
  run that waits for processes that never come, or a second single-process run writing to the same workdir.
  """
  env = os.environ if env is None else env
  section = config.get("distributed", ml_collections.ConfigDict())
  address = section.get("coordinator_address", "") or env.get(ENV_COORDINATOR, "").strip() or None
  num = section.get("num_processes", 0) or _env_int(env, ENV_NUM_PROCESSES)
  pid = section.get("process_id", -1)
  if pid is None or pid < 0:
    pid = _env_int(env, ENV_PROCESS_ID)
  ids = tuple(int(i) for i in section.get("local_device_ids", ())) or None
  auto = bool(section.get("auto_detect", False))
  timeout = int(section.get("initialization_timeout", 300))

  if num is not None and num < 1:
    raise KDJaxError(f"config.distributed.num_processes must be >= 1, got {num}.")
  if num is not None and pid is not None and not 0 <= pid < num:
    raise KDJaxError(f"config.distributed.process_id={pid} must be in [0, num_processes={num}).")
  if address is not None and ":" not in address:
    raise KDJaxError(f"config.distributed.coordinator_address={address!r} must be 'host:port' (process 0's "
                     "address and a free port, the same on every process).")
  given = {"coordinator_address": address, "num_processes": num, "process_id": pid}
  if not auto:
    missing = [k for k, v in given.items() if v is None]
    if len(missing) == len(given):
      if ids is not None:
        raise KDJaxError("config.distributed.local_device_ids is set but no multi-process run is configured; "
                         "set coordinator_address, num_processes and process_id too, or auto_detect=True.")
      return None
    if missing:
      raise KDJaxError(
          f"config.distributed is half-specified: {', '.join(missing)} missing (given: "
          f"{', '.join(f'{k}={v!r}' for k, v in given.items() if v is not None)}). A multi-process run needs "
          "coordinator_address, num_processes and process_id on every process (or the environment variables "
          f"{ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); under SLURM, Open MPI or on a TPU pod set "
          "config.distributed.auto_detect=True instead.")
  return Settings(address, num, pid, ids, auto, timeout)


def initialize(config: ml_collections.ConfigDict, env: Optional[Mapping[str, str]] = None) -> bool:
  """Starts `jax.distributed` as `config.distributed` asks; True if this is a multi-process run.

  Safe to call again: once initialised it only checks that the process count agrees with the config.
  """
  settings = resolve(config, env)
  if jax.distributed.is_initialized():
    if settings is not None and settings.num_processes not in (None, jax.process_count()):
      raise KDJaxError(f"config.distributed.num_processes={settings.num_processes} but jax.distributed is "
                       f"already initialised with {jax.process_count()} processes.")
    return jax.process_count() > 1
  if settings is None:
    return False
  explicit = None not in (settings.coordinator_address, settings.num_processes, settings.process_id)
  # JAX's preemption service installs its own SIGTERM handler, which swallows a SIGTERM that arrives before
  # the loop installs kd_jax's (the run then trains on until the scheduler kills it). Without it SIGTERM
  # behaves as in a single-process run: the loop's handler checkpoints, and the processes agree on the step
  # (`any_process`); orbax treats the service's absence as "no preemption".
  jax.config.update("jax_enable_preemption_service", False)
  try:
    jax.distributed.initialize(
        coordinator_address=settings.coordinator_address, num_processes=settings.num_processes,
        process_id=settings.process_id,
        local_device_ids=list(settings.local_device_ids) if settings.local_device_ids else None,
        # Explicit settings mean exactly those: no cluster detection overriding e.g. the visible devices.
        cluster_detection_method="deactivate" if explicit and not settings.auto_detect else None,
        initialization_timeout=settings.initialization_timeout)
  except RuntimeError as e:
    if "must be called before" in str(e):
      raise KDJaxError("jax.distributed must be initialised before anything uses JAX in this process; call "
                       "kd_jax.train.distributed.initialize(config) (or jax.distributed.initialize) at the start "
                       "of the program, or use `python -m kd_jax train`, which does.") from e
    raise KDJaxError(f"jax.distributed.initialize failed: {e}") from e
  except ValueError as e:  # auto-detection found no cluster and something is still unset
    raise KDJaxError(f"config.distributed.auto_detect found no cluster environment to fill in the missing "
                     f"settings ({e}); set coordinator_address, num_processes and process_id explicitly.") from e
  return jax.process_count() > 1


def is_main_process() -> bool:
  """Process 0 writes the run's files (results, config, metrics, exported model) and shows progress."""
  return jax.process_index() == 0


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any: a decision all processes act on at the same step.

  A collective: every process must call it at the same point of the loop. Free for one process.
  """
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))
