"""Batches as pure functions of (seed, step): a resumed run sees exactly the batches an uninterrupted one would.

Training batches: epoch `e = step // steps_per_epoch` uses the permutation of `range(num_examples)` drawn
from `np.random.default_rng([seed, e])`; step `step` takes the `step % steps_per_epoch`-th slice of it.
The last `num_examples % batch_size` examples of each permutation are dropped (a different few each epoch),
so every training batch has the same shape. Nothing here holds state; there is no iterator to checkpoint.

Evaluation batches cover a split once, in order, and the last one is padded to full size; the `mask` field
(1 real, 0 padding) lets a jitted eval step see one shape and still count each example once.
"""

from __future__ import annotations

import functools
from typing import Dict, Iterator

import numpy as np

from kd_jax.data.datasets import Split
from kd_jax.errors import KDJaxError


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped); raises KDJaxError if there is not even one."""
  if batch_size < 1:
    raise KDJaxError(f"batch_size must be a positive integer, got {batch_size}.")
  if num_examples < batch_size:
    raise KDJaxError(f"batch_size={batch_size} exceeds the {num_examples} training examples; "
                     "lower the batch size.")
  return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  perm = np.random.default_rng([int(seed) % (1 << 64), epoch]).permutation(num_examples)
  perm.setflags(write=False)
  return perm


def batch_indices(num_examples: int, batch_size: int, *, seed: int, step: int) -> np.ndarray:
  """Positions (int64 [batch_size]) of the training batch at global step `step`.

  A pure function of its arguments: epoch `step // steps_per_epoch` is a permutation drawn from
  `np.random.default_rng([seed, epoch])` (seed taken mod 2**64), cut into consecutive full batches.
  """
  if step < 0:
    raise KDJaxError(f"step must be non-negative, got {step}.")
  per_epoch = steps_per_epoch(num_examples, batch_size)
  epoch, within = divmod(int(step), per_epoch)
  start = within * batch_size
  return np.array(_epoch_permutation(int(num_examples), int(seed), epoch)[start:start + batch_size])


def train_batch(split: Split, batch_size: int, *, seed: int, step: int) -> Dict[str, np.ndarray]:
  """The training batch at global step `step`: `split.get(batch_indices(...))` (image, label, index)."""
  return split.get(batch_indices(len(split), batch_size, seed=seed, step=step))


def eval_batches(split: Split, batch_size: int, multiple: int = 1) -> Iterator[Dict[str, np.ndarray]]:
  """Batches covering `split` once, in order, each of exactly `batch_size` examples.

  Every batch carries 'mask' (float32 [batch_size]; 1 real, 0 padding). The last batch is padded by
  repeating its first example, so padded rows are valid inputs; weight per-example results by 'mask'.
  An empty split yields nothing.

  A `StreamingSplit` (`kd_jax.data.streaming`) gives the same batches, built ahead by its grain workers.

  A split of examples of different shapes (whole images for super-resolution: it has `shape_groups()`)
  is covered one shape group at a time, each in batches of `min(batch_size, group size)` rounded up to a
  multiple of `multiple` (the devices a batch is split over), so a lone image is not padded to a full batch.
  """
  if batch_size < 1:
    raise KDJaxError(f"eval batch_size must be a positive integer, got {batch_size}.")
  if hasattr(split, "eval_batches"):  # a StreamingSplit: the same batches, decoded ahead by its workers
    stream = split.eval_batches(batch_size)
    try:
      yield from stream
    finally:
      stream.close()
    return
  if hasattr(split, "shape_groups"):
    for group in split.shape_groups():
      size = min(batch_size, -(-len(group) // multiple) * multiple)
      yield from _padded_batches(split, group, size)
    return
  yield from _padded_batches(split, np.arange(len(split)), batch_size)


def _padded_batches(split, positions: np.ndarray, batch_size: int) -> Iterator[Dict[str, np.ndarray]]:
  n = len(positions)
  for start in range(0, n, batch_size):
    real = positions[start:start + batch_size]
    idx = np.concatenate([real, np.full(batch_size - len(real), real[0], real.dtype)])
    batch = split.get(idx)
    mask = np.zeros(batch_size, np.float32)
    mask[:len(real)] = 1.0
    batch["mask"] = mask
    yield batch
