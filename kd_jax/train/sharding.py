"""Data parallelism as `jit` over a device mesh: the batch is split on a `data` axis, the state replicated.

XLA inserts the gradient all-reduce itself; plain BatchNorm then sees global-batch statistics, so a run on
8 devices matches a run on one up to float reassociation.

One exception to "replicated": a distiller's `memory` collection (CRD's memory banks, one row per training
example) is split along its leading axis over the `data` axis, so a bank costs N/D rows per device instead
of N. Distillers that keep such banks pad their row count to a multiple of the device count.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kd_jax.errors import KDJaxError


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh named `data` over the given devices (default: every visible device of every process)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  if batch_size % mesh.size:
    raise KDJaxError(f"{what}={batch_size} is not divisible by the {mesh.size} devices of the mesh; "
                     f"choose a multiple of {mesh.size}.")


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places this process's part of a global batch on the mesh, split along the leading axis."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))


MEMORY_COLLECTION = "memory"


def state_shardings(state: Any, mesh: Mesh) -> Any:
  """Shardings for a `TrainState`: replicated, except `distiller_state['memory']` split by rows."""
  shardings = jax.tree.map(lambda _: replicated(mesh), state)
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
