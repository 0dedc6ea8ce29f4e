"""Weight pruning on parameter pytrees: pure functions, params in, params out.

Used by R2KD's pruned teacher (Kim et al., arXiv:2311.13934; reference Seonghak35/R2KD,
`mdistiller/engine/utils.py::unstructured_pruning`) and meant for later work combining KD with pruning
(Park, Yoo, Kwak, "On the Orthogonality of Knowledge Distillation with Other Techniques: From an Ensemble
Perspective", arXiv:2009.04120), AB with gradual pruning included (Heo et al., AAAI 2019, arXiv:1811.03233).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _is_kernel(path, leaf) -> bool:
  last = path[-1] if path else None
  name = getattr(last, "key", getattr(last, "name", None))
  return name == "kernel" and getattr(leaf, "ndim", 0) >= 2


def num_to_prune(size: int, rate: float) -> int:
  """How many of `size` entries `prune_by_magnitude` zeroes: `round(rate·size)` (Python's round, half to
  even), the count `torch.nn.utils.prune.l1_unstructured(amount=rate)` uses for a float amount."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"prune_by_magnitude: rate must be in [0, 1], got {rate}.")
  return int(round(rate * size))


def prune_kernel(kernel: jax.Array, rate: float) -> jax.Array:
  """Zeroes exactly `num_to_prune(kernel.size, rate)` entries of one array: those with the smallest |w|.

  Ties in |w| at the threshold are broken by flat (row-major) index, lowest first (a stable sort), so the
  count is always exact; zeros already present count as the smallest magnitudes.
  """
  k = num_to_prune(kernel.size, rate)
  if k == 0:
    return kernel
  flat = kernel.reshape(-1)
  order = jnp.argsort(jnp.abs(flat), stable=True)
  keep = jnp.ones(flat.shape, bool).at[order[:k]].set(False)
  return jnp.where(keep, flat, jnp.zeros_like(flat)).reshape(kernel.shape)


def prune_by_magnitude(params: Any, rate: float = 0.1) -> Any:
  """Per-layer unstructured L1 (magnitude) pruning of every conv and dense kernel of a parameter pytree.

  In each leaf named `kernel` with ndim ≥ 2 (Flax `Conv`, `ConvTranspose`, `Dense`: HWIO or [in, out]), the
  `round(rate · size)` entries with the smallest |w| are set to zero, layer by layer (not a global
  threshold); biases, BatchNorm scales/offsets and any other leaf are returned unchanged. The zeros are
  simply values of the returned pytree: there is no mask, nothing re-grows them unless it is trained.

  This is what R2KD does to its teacher copy (Kim et al., "Robustness-Reinforced Knowledge Distillation
  with Correlation Distance and Network Pruning", IEEE TKDE 2024, arXiv:2311.13934; reference
  `engine/utils.py::unstructured_pruning`: `torch.nn.utils.prune.l1_unstructured` on every Conv2d and
  Linear weight with `PRUNE.RATE = 0.1`, then `prune.remove`, no fine-tuning). The count `round(rate·n)`
  is torch's; ties at the threshold go to the lowest flat index (torch's `topk` leaves that unspecified).

  Args:
    params: a parameter pytree (e.g. `variables['params']`); pass only params, not `batch_stats`.
    rate: fraction in [0, 1] of each kernel to zero (0.1 in R2KD).
  """
  num_to_prune(0, rate)  # validates the rate
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: prune_kernel(leaf, rate) if _is_kernel(path, leaf) else leaf, params)


def sparsity(params: Any) -> float:
  """Fraction of exact zeros over all kernels (leaves named `kernel`, ndim ≥ 2) of a pytree."""
  leaves = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if _is_kernel(path, leaf)]
  total = sum(int(leaf.size) for leaf in leaves)
  zeros = sum(int(jnp.sum(leaf == 0)) for leaf in leaves)
  return zeros / total if total else 0.0
