"""Data parallelism as `jit` over a device mesh: the batch is split on a `data` axis, the state replicated.

XLA inserts the gradient all-reduce itself; plain BatchNorm then sees global-batch statistics, so a run on
8 devices matches a run on one up to float reassociation.

One exception to "replicated": a distiller's `memory` collection (CRD's memory banks, one row per training
example) is split along its leading axis over the `data` axis, so a bank costs N/D rows per device instead
of N. Distillers that keep such banks pad their row count to a multiple of the device count.

`config.sharding.params = 'fsdp'` shards parameters and optimizer state too (fully sharded data parallel,
ZeRO-3 style, over the same `data` axis): each large array is split along one of its dimensions, so a device
holds about 1/D of the model, the optimizer moments and the frozen teachers. The step is the same program; XLA's
SPMD partitioner all-gathers a weight where a layer needs it whole and reduce-scatters its gradient, so the
update of each shard runs where the shard lives. Values equal the replicated run's up to float reassociation.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kd_jax.config import CHOICES
from kd_jax.errors import KDJaxError


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh named `data` over the given devices (default: every visible device of every process).

  Devices are grouped by process (a stable sort, so one process keeps JAX's order), which gives each process
  one contiguous block of the global batch: with P processes, process p feeds rows [p·B/P, (p+1)·B/P).
  """
  devices = list(devices if devices is not None else jax.devices())
  return Mesh(np.asarray(sorted(devices, key=lambda d: d.process_index)), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  if batch_size % mesh.size:
    processes = len({d.process_index for d in mesh.devices.flat})
    where = f" ({processes} processes together)" if processes > 1 else ""
    raise KDJaxError(f"{what}={batch_size} is not divisible by the {mesh.size} devices of the mesh{where}; "
                     f"choose a multiple of {mesh.size}. {what} is the global batch, split over all devices.")


@functools.lru_cache(maxsize=16)
def process_rows(batch_size: int, mesh: Mesh) -> slice:
  """The rows of a global batch of `batch_size` that this process feeds: those its devices hold.

  With `make_mesh`'s order and P processes of equal device counts this is [p·B/P, (p+1)·B/P) for process p,
  the same rows of the same global batch that a single process would feed, so results match.
  """
  check_batch_size(batch_size, mesh)
  index_map = data_sharded(mesh).addressable_devices_indices_map((batch_size,))
  starts = sorted({(idx[0].start or 0, idx[0].stop if idx[0].stop is not None else batch_size)
                   for idx in index_map.values()})
  for (_, stop), (start, _) in zip(starts, starts[1:]):
    if stop != start:
      raise KDJaxError("This process's devices are not contiguous on the mesh's `data` axis; build the mesh "
                       "with sharding.make_mesh(), which groups devices by process.")
  return slice(starts[0][0], starts[-1][1])


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, *,
                global_batch_size: Optional[int] = None) -> dict[str, jax.Array]:
  """A global batch on the mesh, split along the leading axis over the `data` devices.

  `batch` is the whole global batch (every process passes the same one; each keeps only its
  `process_rows`), or, with `global_batch_size` given, just this process's rows of a batch of that size
  (which saves reading the other processes' examples).
  """
  batch = {k: np.asarray(v) for k, v in batch.items()}
  if global_batch_size is None:
    global_batch_size = len(next(iter(batch.values())))
    rows = process_rows(global_batch_size, mesh)
    batch = {k: v[rows] for k, v in batch.items()}
  return _place_rows(batch, mesh, global_batch_size, ())


def shard_batches(batches: Sequence[Mapping[str, np.ndarray]], mesh: Mesh, *,
                  global_batch_size: int) -> dict[str, jax.Array]:
  """k of this process's batch shares (see `shard_batch`) stacked into arrays [k, global_batch_size, ...],
  split along axis 1 over the `data` devices: the input of a call that runs k steps."""
  stacked = {k: np.stack([np.asarray(b[k]) for b in batches]) for k in batches[0]}
  return _place_rows(stacked, mesh, global_batch_size, (len(batches),))


def _place_rows(local: Mapping[str, np.ndarray], mesh: Mesh, global_batch_size: int,
                leading: Tuple[int, ...]) -> dict[str, jax.Array]:
  """Global arrays `leading + (global_batch_size, ...)` from this process's rows (the axis after `leading`),
  split along that axis over the `data` devices."""
  axis = len(leading)
  rows = process_rows(global_batch_size, mesh)
  if any(v.shape[axis] != rows.stop - rows.start for v in local.values()):
    raise KDJaxError(f"This process feeds rows [{rows.start}, {rows.stop}) of the global batch of "
                     f"{global_batch_size}, but got {[v.shape[axis] for v in local.values()]} rows.")
  placement = NamedSharding(mesh, P(*(None,) * axis, "data"))
  return {k: jax.make_array_from_process_local_data(placement, v, leading + (global_batch_size,) + v.shape[axis + 1:])
          for k, v in local.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))


MEMORY_COLLECTION = "memory"


PARAM_SHARDINGS = CHOICES["sharding.params"]
# Arrays smaller than this stay replicated under FSDP: biases and BatchNorm scales would cost a collective
# each for no memory worth saving.
DEFAULT_FSDP_MIN_SIZE = 1024


def fsdp_spec(shape: Tuple[int, ...], num_devices: int, min_size: int = DEFAULT_FSDP_MIN_SIZE) -> P:
  """The partition of one array under FSDP: its largest dimension divisible by `num_devices` on `data`.

  Arrays with fewer than `min_size` elements, or with no dimension the devices divide, stay replicated
  (`P()`). For a conv kernel [kh, kw, C_in, C_out] this is usually C_out or C_in; ties go to the last
  dimension, the output features, whose gradient XLA can reduce-scatter without a transpose.
  """
  if num_devices <= 1 or int(np.prod(shape, dtype=np.int64)) < max(min_size, 1):
    return P()
  candidates = [i for i, n in enumerate(shape) if n % num_devices == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: (shape[i], i))
  return P(*([None] * axis + ["data"]))


def param_shardings(tree: Any, mesh: Mesh, mode: str = "replicated",
                    min_size: int = DEFAULT_FSDP_MIN_SIZE) -> Any:
  """Shardings for a pytree of parameters (or anything shaped like them, e.g. optimizer moments).

  `mode='replicated'`: every array on every device. `mode='fsdp'`: each array split as `fsdp_spec` says.
  """
  if mode not in PARAM_SHARDINGS:
    raise KDJaxError(f"sharding.params must be one of {', '.join(PARAM_SHARDINGS)}, got {mode!r}.")
  if mode == "replicated":
    return jax.tree.map(lambda _: replicated(mesh), tree)
  return jax.tree.map(lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(getattr(leaf, 'shape', np.shape(leaf))), mesh.size, min_size)), tree)


def place_params(tree: Any, mesh: Mesh, mode: str = "replicated", min_size: int = DEFAULT_FSDP_MIN_SIZE) -> Any:
  """`tree` on the mesh, replicated or FSDP-sharded (frozen teachers under `mode='fsdp'`, for instance)."""
  return jax.device_put(tree, param_shardings(tree, mesh, mode, min_size))


def state_shardings(state: Any, mesh: Mesh, mode: str = "replicated", min_size: int = DEFAULT_FSDP_MIN_SIZE) -> Any:
  """Shardings for a `TrainState`.

  Replicated (`mode='replicated'`), or with the student's and distillers' parameters and the whole optimizer
  state FSDP-sharded (`mode='fsdp'`; BatchNorm statistics, the step and the rng stay replicated: they are
  small and every device updates them). `distiller_state['memory']` is split by rows in both modes.
  """
  shardings = jax.tree.map(lambda _: replicated(mesh), state)
  if mode != "replicated" and hasattr(state, "opt_state"):
    shardings = shardings.replace(
        params=param_shardings(state.params, mesh, mode, min_size),
        distiller_params=param_shardings(state.distiller_params, mesh, mode, min_size),
        opt_state=param_shardings(state.opt_state, mesh, mode, min_size))
  memory = getattr(state, "distiller_state", {}).get(MEMORY_COLLECTION)
  if not memory:
    return shardings

  def row_sharded(path, leaf):
    if leaf.ndim == 0 or leaf.shape[0] % mesh.size:
      name = "/".join(str(getattr(k, "key", k)) for k in path)
      raise KDJaxError(f"Distiller memory {name} has shape {leaf.shape}; its leading axis must be a multiple "
                       f"of the {mesh.size} devices so it can be split across them.")
    return NamedSharding(mesh, P("data"))

  memory_shardings = jax.tree_util.tree_map_with_path(row_sharded, memory)
  return shardings.replace(distiller_state=dict(shardings.distiller_state, **{MEMORY_COLLECTION: memory_shardings}))
