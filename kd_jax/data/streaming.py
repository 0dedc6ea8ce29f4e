"""Streaming splits for image classification data too large for memory (ImageNet): JPEGs read from tfds,
decoded and augmented on the host by grain worker processes.

A `StreamingSplit` keeps only positions and labels in memory and reads examples from a tfds build
(`tfds.data_source`, array_record files, no TensorFlow) when asked:

  * `get(indices)` is the evaluation view, as `Split.get` returns it: resize the shorter side to
    `floor(image_size / 0.875)` (256 for 224), crop the centre `image_size` square, normalise.
  * `augmented(indices, seed=, step=)` is the training view: the Inception / torchvision random-resized crop
    (area in [0.08, 1] of the image, aspect ratio in [3/4, 4/3], 10 tries, then a centre crop) resized to
    `image_size`, then (if the split's `flip`) a horizontal flip with probability 1/2, then the same
    normalisation. The randomness of
    each example is drawn from `np.random.default_rng([seed, tag, step, position])`, so it depends on nothing
    but the seed, the step and the example.
  * `train_batches(split, ...)` yields this process's rows of the training batches of steps start, start+1, ...
    (`pipeline.batch_indices` picks the examples, exactly as for in-memory splits), built ahead by grain
    workers; `eval_batches` covers the split in order, padded with 'mask', as `pipeline.eval_batches` does.

Every batch is a pure function of (seed, step, rows): any worker count gives the same batches, and a run
resumed at step s is fed exactly the batches an uninterrupted run was, with no iterator state to checkpoint.
Grain hands each worker whole batches (step s goes to worker s mod W) and returns them in step order.

Images reach the device normalised (float32), as in-memory splits deliver them (the classification task's
device-side augmentation assumes normalised inputs). That augmentation must not run again on streamed batches:
for them `config.data.flip` is applied here, on the host, and the train step is built without it
(`kd_jax.train.run.step_function`); `config.data.crop_pad` must be 0 (`kd_jax.train.run.load_data` checks it).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
from concurrent import futures
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from kd_jax.data.datasets import (VAL_STREAM, Dataset, DatasetSpec, carve_stratified, check_positions,
                                  not_prepared_message, seed_entropy)
from kd_jax.data.pipeline import batch_indices
from kd_jax.errors import KDJaxError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.08, 1.0)       # the random-resized crop's share of the image area
CROP_RATIO = (3 / 4, 4 / 3)    # and its aspect ratio (width / height)
CROP_TRIES = 10                # draws before falling back to a centre crop (torchvision's count)
EVAL_CROP_FRACTION = 0.875     # evaluation: the centre crop covers this share of the resized shorter side
# Tag mixed into the run seed for the augmentation's draws, so they are distinct from the streams that
# shuffle the batches ([seed, epoch]) and carve the validation split ([seed, VAL_STREAM]).
_AUGMENT_STREAM = 0x617567  # "aug"
# Name prefix that streams any tfds image-classification build: config.data.name = 'tfds:food101'.
TFDS_PREFIX = "tfds:"
# Labels of a split, cached beside its array_record files (reading them means reading every record).
_LABELS_FILE = "kd_jax-labels-{split}.npy"


# ---------------------------------------------------------------------------------------------------
# Geometry of the augmentation: pure functions of the image size and a numpy Generator.


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale: Tuple[float, float] = CROP_SCALE,
                            ratio: Tuple[float, float] = CROP_RATIO) -> Tuple[int, int, int, int]:
  """The Inception-style random crop of an image of `height` x `width`: `(top, left, crop_h, crop_w)`.

  Up to `CROP_TRIES` times: draw an area share uniformly from `scale` and an aspect ratio (w / h)
  log-uniformly from `ratio`; keep the first box that fits and place it uniformly. If none fits, take the
  largest centred box whose ratio is clamped into `ratio`. This is torchvision's `RandomResizedCrop` and
  Szegedy et al.'s "Going deeper with convolutions" (2014, arXiv:1409.4842) augmentation.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(CROP_TRIES):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def eval_resize_shape(height: int, width: int, image_size: int) -> Tuple[int, int]:
  """`(h, w)` after resizing the shorter side to `floor(image_size / 0.875)` (256 for 224), keeping the
  aspect ratio (the longer side truncated, as torchvision's `Resize(int)` does)."""
  short = int(math.floor(image_size / EVAL_CROP_FRACTION))
  if height <= width:
    return short, int(short * width / height)
  return int(short * height / width), short


def centre_crop_origin(height: int, width: int, image_size: int) -> Tuple[int, int]:
  """`(top, left)` of the centred `image_size` square in an image of `height` x `width`."""
  return int(round((height - image_size) / 2.0)), int(round((width - image_size) / 2.0))


def _decode(data: bytes):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  image = Image.open(io.BytesIO(data))
  return image.convert("RGB")  # greyscale and CMYK JPEGs exist in ImageNet


def train_view(data: bytes, image_size: int, rng: np.random.Generator, flip: bool = True) -> np.ndarray:
  """One JPEG decoded, random-resized-cropped to `image_size` (bilinear, antialiased) and, with `flip`, mirrored
  with probability 1/2: uint8 [image_size, image_size, 3]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  image = _decode(data)
  top, left, h, w = random_resized_crop_box(image.height, image.width, rng)
  # Crop, then resize (as torchvision): the filter sees only the crop's pixels.
  image = image.crop((left, top, left + w, top + h)).resize((image_size, image_size), Image.BILINEAR)
  pixels = np.asarray(image)
  if flip and rng.random() < 0.5:
    pixels = pixels[:, ::-1]
  return pixels


def eval_view(data: bytes, image_size: int) -> np.ndarray:
  """One JPEG decoded, its shorter side resized to `floor(image_size / 0.875)` (bilinear, antialiased), its
  centre `image_size` square cut: uint8 [image_size, image_size, 3]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  image = _decode(data)
  h, w = eval_resize_shape(image.height, image.width, image_size)
  image = image.resize((w, h), Image.BILINEAR)
  top, left = centre_crop_origin(h, w, image_size)
  return np.asarray(image)[top:top + image_size, left:left + image_size]


# ---------------------------------------------------------------------------------------------------
# The split.


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """Where a split's records live: a tfds build in `data_dir` (None = tfds' default) and one of its splits."""
  name: str
  data_dir: Optional[str]
  split: str
  image_key: str = "image"
  label_key: str = "label"

  def open(self):
    """The split's records (random access), JPEGs left encoded; opened once per process."""
    return _open_source(self)


@functools.lru_cache(maxsize=None)
def _open_source(source: TfdsSource):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tfds.data_source(source.name, split=source.split, data_dir=source.data_dir, download=False,
                          decoders={source.image_key: tfds.decode.SkipDecoding()})


@dataclasses.dataclass(frozen=True, eq=False)
class StreamingSplit:
  """A split whose images are read, decoded and augmented on demand (the `Split` contract: `len`, `get`,
  `labels`, `image_shape`).

  Attributes:
    source: the tfds split the records come from.
    positions: int64 [n] positions in `source` of this split's examples, in this split's order.
    labels: int32 [n] their class ids.
    image_size: side of the square images every view returns.
    mean, std: float32 [3] normalisation in [0, 1] units (images are scaled by 1/255 first).
    flip: whether the training view mirrors images at random (`config.data.flip`).
    num_workers: grain worker processes that build batches (0: a thread of this process).
    prefetch: batches built ahead of the one being consumed.
  """
  source: TfdsSource
  positions: np.ndarray
  labels: np.ndarray
  image_size: int
  mean: np.ndarray
  std: np.ndarray
  flip: bool = True
  num_workers: int = 0
  prefetch: int = 2

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)

  def _records(self, idx: np.ndarray) -> list:
    return self.source.open().__getitems__([int(p) for p in self.positions[idx]])

  def _batch(self, idx: np.ndarray, pixels: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    images = np.stack(pixels) if len(pixels) else np.zeros((0,) + self.image_shape, np.uint8)
    gain = (1.0 / (255.0 * self.std)).astype(np.float32)
    offset = (-self.mean / self.std).astype(np.float32)
    return {"image": images.astype(np.float32) * gain + offset, "label": self.labels[idx],
            "index": idx.astype(np.int32)}

  def get(self, indices) -> Dict[str, np.ndarray]:
    """The evaluation view of the examples at `indices` (positions in this split): {'image': float32
    [n, S, S, 3] normalised, 'label': int32 [n], 'index': int32 [n]}, as `Split.get` returns them."""
    idx = check_positions(indices, len(self), "StreamingSplit.get")
    records = self._records(idx)
    return self._batch(idx, [eval_view(r[self.source.image_key], self.image_size) for r in records])

  def augmented(self, indices, *, seed: int, step: int) -> Dict[str, np.ndarray]:
    """The training view of the examples at `indices` for global step `step` (see the module docstring):
    like `get`, with each example's crop and flip drawn from (seed, step, its position in this split)."""
    idx = check_positions(indices, len(self), "StreamingSplit.augmented")
    records = self._records(idx)
    pixels = [train_view(r[self.source.image_key], self.image_size,
                         np.random.default_rng([seed_entropy(seed), _AUGMENT_STREAM, int(step), int(i)]), self.flip)
              for r, i in zip(records, idx)]
    return self._batch(idx, pixels)

  def eval_batches(self, batch_size: int) -> Iterator[Dict[str, np.ndarray]]:
    """Batches covering the split once, in order, of exactly `batch_size` examples with 'mask' (the last one
    padded by repeating its first example), as `pipeline.eval_batches`; built ahead by the split's workers."""
    count = -(-len(self) // batch_size)
    return _stream(_EvalBatch(self, batch_size), range(count), self.num_workers, self.prefetch)


class _TrainBatch:
  """Step -> this process's rows of that step's training batch (picklable: grain sends it to its workers)."""

  def __init__(self, split: StreamingSplit, batch_size: int, seed: int, rows: slice):
    self.split, self.batch_size, self.seed, self.rows = split, batch_size, seed, rows

  def __call__(self, step: int) -> Dict[str, np.ndarray]:
    indices = batch_indices(len(self.split), self.batch_size, seed=self.seed, step=int(step))[self.rows]
    return self.split.augmented(indices, seed=self.seed, step=int(step))


class _EvalBatch:
  """Batch number -> that padded evaluation batch with its 'mask'."""

  def __init__(self, split: StreamingSplit, batch_size: int):
    self.split, self.batch_size = split, batch_size

  def __call__(self, number: int) -> Dict[str, np.ndarray]:
    start = int(number) * self.batch_size
    real = np.arange(start, min(start + self.batch_size, len(self.split)))
    idx = np.concatenate([real, np.full(self.batch_size - len(real), real[0], real.dtype)])
    batch = self.split.get(idx)
    mask = np.zeros(self.batch_size, np.float32)
    mask[:len(real)] = 1.0
    batch["mask"] = mask
    return batch


def train_batches(split: StreamingSplit, batch_size: int, *, seed: int, start: int, stop: int,
                  rows: slice = slice(None)) -> "BatchStream":
  """This process's `rows` of the training batches of steps `start`, ..., `stop - 1`, in order, built ahead
  by the split's grain workers. Each batch is `split.augmented(batch_indices(...)[rows], seed, step)`."""
  return _stream(_TrainBatch(split, batch_size, seed, rows), range(start, stop), split.num_workers, split.prefetch)


class BatchStream:
  """An iterator of batches that owns grain's worker processes: `close()` (or `with`) stops them.

  Batches arrive in grain's shared memory; they are copied into ordinary arrays so that nothing keeps a
  worker's buffer alive after the stream is closed.
  """

  def __init__(self, iterator):
    self._iterator = iterator

  def __iter__(self) -> "BatchStream":
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in next(self._iterator).items()}

  def close(self) -> None:
    close = getattr(self._iterator, "close", None)
    if close is not None:
      close()

  def __enter__(self) -> "BatchStream":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _stream(make: Callable[[int], Dict[str, np.ndarray]], keys: range, num_workers: int,
            prefetch: int) -> BatchStream:
  """`make(k)` for each k of `keys`, in order: computed by a prefetching thread of this process
  (`num_workers=0`) or by `num_workers` grain processes (each builds every num_workers-th batch whole, so the
  batches do not depend on the worker count), up to `prefetch` batches ahead."""
  import grain  # pylint: disable=g-import-not-at-top

  dataset = grain.MapDataset.range(keys.start, keys.stop).map(make)
  if num_workers == 0:
    return BatchStream(iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=1 if prefetch else 0,
                                                                       prefetch_buffer_size=prefetch))))
  _allow_grain_processes()
  # Inside a worker one batch is built at a time; the workers' buffers hold the batches built ahead.
  per_worker = grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)
  options = grain.MultiprocessingOptions(num_workers=num_workers,
                                         per_worker_buffer_size=max(1, -(-prefetch // num_workers)))
  return BatchStream(iter(dataset.to_iter_dataset(per_worker).mp_prefetch(options)))


def _allow_grain_processes() -> None:
  """grain reads its settings from absl flags when it starts workers; a program that never parsed absl's
  flags (pytest, a notebook, a script without `app.run`) would stop there, so mark them parsed (defaults)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


# ---------------------------------------------------------------------------------------------------
# Loading a streamed dataset.


def spec_for(name: str, data_dir: Optional[str]) -> DatasetSpec:
  """The `DatasetSpec` of `'tfds:<builder>'`: any tfds image-classification build streamed, its class count
  read from the build's metadata, its test split tfds' 'validation' if there is one (else 'test'), normalised
  with ImageNet's mean and std."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  tfds_name = name[len(TFDS_PREFIX):]
  probe = DatasetSpec(source="tfds_stream", tfds_name=tfds_name, num_classes=0, image_shape=(0, 0, 3))
  try:
    info = tfds.builder(tfds_name, data_dir=data_dir).info
  except Exception as e:  # tfds raises many types for a missing build
    raise KDJaxError(not_prepared_message(name, probe, data_dir, "train", e)) from e
  label = info.features["label"] if "label" in info.features else None
  if label is None or not hasattr(label, "num_classes"):
    raise KDJaxError(f"Dataset {name!r} has no 'label' ClassLabel feature (features: {', '.join(info.features)}); "
                     "streaming reads image-classification builds with 'image' and 'label' features.")
  test_split = "validation" if "validation" in info.splits else "test"
  return DatasetSpec(source="tfds_stream", tfds_name=tfds_name, num_classes=int(label.num_classes),
                     image_shape=(224, 224, 3), mean=IMAGENET_MEAN, std=IMAGENET_STD, augment_flip=True,
                     test_split=test_split)


def load_streaming_dataset(name: str, spec: DatasetSpec, *, data_dir: Optional[str], val_fraction: float, seed: int,
                           image_size: Optional[int] = None, flip: bool = True, num_workers: int = 0,
                           prefetch: int = 2) -> Dataset:
  """A `Dataset` of `StreamingSplit`s: validation carved (stratified, drawn from `seed`) from tfds'
  `spec.train_split`, the test split tfds' `spec.test_split` (ImageNet: 'validation', which is reported only).

  `val_fraction` is a fraction in [0, 1) of the training split, or a whole number >= 1 of examples (ImageNet:
  10000 is 10 per class). Labels are read once from every record and cached beside the build. `flip`: the
  training view's random horizontal flip.

  Raises:
    KDJaxError: data not prepared in `data_dir`, bad val_fraction / image_size / num_workers / prefetch.
  """
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  image_size = int(spec.image_shape[0] if image_size is None else image_size)
  if image_size < 1:
    raise KDJaxError(f"data.image_size must be a positive integer, got {image_size}.")
  if int(num_workers) < 0 or int(prefetch) < 0:
    raise KDJaxError(f"data.num_workers and data.prefetch must be >= 0, got {num_workers} and {prefetch}.")
  sources = {which: TfdsSource(spec.tfds_name, data_dir, split, spec.image_key, spec.label_key)
             for which, split in (("train", spec.train_split), ("test", spec.test_split))}
  train_labels = _labels(name, spec, sources["train"])
  test_labels = _labels(name, spec, sources["test"])
  carved = _val_count(val_fraction, len(train_labels))
  train_idx, val_idx = carve_stratified(train_labels, carved / max(len(train_labels), 1),
                              np.random.default_rng([seed_entropy(seed), VAL_STREAM]))
  if len(train_idx) == 0:
    raise KDJaxError(f"val_fraction={val_fraction} leaves no training examples out of {len(train_labels)}.")
  mean = np.asarray(spec.mean or IMAGENET_MEAN, np.float32)
  std = np.asarray(spec.std or IMAGENET_STD, np.float32)

  def split(source: TfdsSource, positions: np.ndarray, labels: np.ndarray) -> StreamingSplit:
    positions = np.ascontiguousarray(positions, np.int64)
    labels = np.ascontiguousarray(labels[positions], np.int32)
    for a in (positions, labels):
      a.setflags(write=False)
    return StreamingSplit(source=source, positions=positions, labels=labels, image_size=image_size, mean=mean,
                          std=std, flip=bool(flip), num_workers=int(num_workers), prefetch=int(prefetch))

  return Dataset(name=name, train=split(sources["train"], train_idx, train_labels),
                 val=split(sources["train"], val_idx, train_labels),
                 test=split(sources["test"], np.arange(len(test_labels)), test_labels),
                 num_classes=spec.num_classes, image_shape=(image_size, image_size, 3),
                 augment_flip=spec.augment_flip)


def _val_count(val_fraction: float, n: int) -> int:
  """Examples to carve: `round(val_fraction * n)` for a fraction in [0, 1), else `val_fraction` itself."""
  value = float(val_fraction)
  if 0.0 <= value < 1.0:
    return int(round(value * n))
  if value >= 1.0 and value == int(value):
    if value >= n:
      raise KDJaxError(f"val_fraction={int(value)} examples would leave none of the {n} training examples.")
    return int(value)
  raise KDJaxError(f"val_fraction must be a fraction in [0, 1) or a whole number of examples, got {val_fraction}.")


def _labels(name: str, spec: DatasetSpec, source: TfdsSource) -> np.ndarray:
  """int32 labels of every record of `source`, in stored order: from the cache file beside the build, else
  read from every record (with threads; ImageNet's training split takes minutes) and cached if writable."""
  try:
    records = source.open()
    n = len(records)
  except Exception as e:  # tfds raises many types here (NotImplementedError, AssertionError, OSError...)
    raise KDJaxError(not_prepared_message(name, spec, source.data_dir, source.split, e)) from e
  cache = _labels_cache_path(source)
  if cache and os.path.isfile(cache):
    labels = np.load(cache)
    if labels.shape == (n,):
      return labels.astype(np.int32)
  chunks = [range(s, min(s + 1024, n)) for s in range(0, n, 1024)]
  read = lambda chunk: [int(r[source.label_key]) for r in records.__getitems__(list(chunk))]
  if n > 50_000:
    print(f"[kd_jax] reading the labels of {name!r} split {source.split!r} ({n} records) once; they are cached "
          f"in {cache or '(not cached: the build directory is not writable)'}", flush=True)
  with futures.ThreadPoolExecutor(8) as pool:
    labels = np.asarray([y for part in pool.map(read, chunks) for y in part], np.int32).reshape(n)
  if n and (labels.min() < 0 or labels.max() >= spec.num_classes):
    raise KDJaxError(f"Dataset {name!r} split {source.split!r} has labels in [{labels.min()}, {labels.max()}], "
                     f"expected [0, {spec.num_classes - 1}] (an unlabelled split such as ImageNet's 'test' cannot "
                     "be used).")
  if cache:
    try:  # written whole, then renamed: other processes of a multi-process run may read it
      tmp = f"{cache}.{os.getpid()}.tmp.npy"
      np.save(tmp, labels)
      os.replace(tmp, cache)
    except OSError:
      pass
  return labels


def _labels_cache_path(source: TfdsSource) -> Optional[str]:
  """The labels cache file in the build's version directory, or None when that directory is not writable."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    directory = os.fspath(tfds.builder(source.name, data_dir=source.data_dir).data_dir)
  except Exception:  # pylint: disable=broad-except
    return None
  path = os.path.join(directory, _LABELS_FILE.format(split=source.split))
  return path if os.path.isfile(path) or os.access(directory, os.W_OK) else None
