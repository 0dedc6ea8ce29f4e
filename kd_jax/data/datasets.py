"""Datasets as random-access, in-memory splits: the embedded digits, tfds CIFAR, or your own arrays (and,
through `kd_jax.data.streaming`, tfds JPEG datasets too large for memory, such as ImageNet).

A `Dataset` holds three `Split`s (train / val / test). The validation split is always carved from the
training data, so anything chosen during a run (best epoch, calibration temperature) is chosen on it; the
test split is only reported.

Determinism:
  * digits: the test split is a fixed stratified 30% of scikit-learn's 1797 images, the same for every
    seed; the validation split is a stratified `val_fraction` of the rest, drawn from `seed`.
  * tfds datasets: test is tfds' own 'test' split; validation is a stratified `val_fraction` of tfds'
    'train' split, drawn from `seed`. Positions refer to the order tfds stored the examples in, which is
    fixed once the dataset is built.
  * `from_arrays`: like tfds, with `x_test`/`y_test` (if given) as the test split.
Inside every split examples keep their source order; shuffling happens in `pipeline.batch_indices`.

Only `tfds.data_source` (array_record files) and `tfds.builder(...).info` are used, so no TensorFlow is
needed. Whole splits are read into memory once (uint8) and normalised per batch in `Split.get`; that suits
CIFAR-sized data. ImageNet-sized data (source 'tfds_stream': `imagenet2012`, or any build named
'tfds:<builder>') is read by `kd_jax.data.streaming.StreamingSplit`, which has the same `get` contract and
decodes and augments JPEGs on the host as batches are needed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from kd_jax.errors import KDJaxError

ArrayLike = Union[np.ndarray, Sequence]

# Fraction of the digits data held out as a fixed test split, and the seed that draws it (never the run's
# seed: every run reports on the same test images).
DIGITS_TEST_FRACTION = 0.3
_DIGITS_TEST_SEED = 0
# Tag mixed into the run seed when drawing the validation split, so that stream is distinct from the
# (seed, epoch) streams that shuffle the training batches.
VAL_STREAM = 0x76616C  # "val"


def check_positions(indices: ArrayLike, size: int, what: str) -> np.ndarray:
  """`indices` as int64 positions into a split of `size` examples; IndexError unless 1-D integers in range."""
  idx = np.asarray(indices)
  if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
    raise IndexError(f"{what} wants a 1-D array of integer positions, got shape {idx.shape} dtype {idx.dtype}.")
  idx = idx.astype(np.int64)
  if idx.size and (idx.min() < 0 or idx.max() >= size):
    raise IndexError(f"positions must be in [0, {size}), got min {idx.min()} max {idx.max()}.")
  return idx


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """A random-access split held in memory.

  `images` are stored raw ([n, H, W, C], uint8 or float32, read-only); `get` returns them as
  `(images * scale - mean) / std` in float32, so `mean`/`std` ([C]) are in units of `images * scale`.

  Attributes:
    images: [n, H, W, C] raw images.
    labels: [n] int32 class ids.
    mean: [C] float32 per-channel mean subtracted after scaling.
    std: [C] float32 per-channel standard deviation divided by after centring.
    scale: multiplies the raw images first (1/255 for uint8 CIFAR, 1 otherwise).
  """
  images: np.ndarray
  labels: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  scale: float = 1.0

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

  def get(self, indices: ArrayLike) -> Dict[str, np.ndarray]:
    """The examples at `indices` (positions in this split).

    Returns {'image': float32 [n, H, W, C] normalised, 'label': int32 [n], 'index': int32 [n]}, where
    'index' echoes the positions (contrastive distillers such as CRD key their memory on it).
    """
    idx = check_positions(indices, len(self), "Split.get")
    gain = (self.scale / self.std).astype(np.float32)
    offset = (-self.mean / self.std).astype(np.float32)
    images = self.images[idx].astype(np.float32) * gain + offset
    return {"image": images, "label": self.labels[idx], "index": idx.astype(np.int32)}


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
  """A random-access split of named arrays with a common leading axis, for data that is not images (a
  rating split holds 'user', 'item' and 'rating'). `get` returns the rows at `indices` of every array, plus
  'index' (the positions), as `Split.get` does."""
  arrays: Mapping[str, np.ndarray]

  def __len__(self) -> int:
    return int(len(next(iter(self.arrays.values()))))

  def get(self, indices: ArrayLike) -> Dict[str, np.ndarray]:
    idx = check_positions(indices, len(self), "ArraySplit.get")
    return {**{k: v[idx] for k, v in self.arrays.items()}, "index": idx.astype(np.int32)}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """Train / val / test splits plus what a run needs to know about them.

  `task` names the `kd_jax.tasks` task whose batches the splits hold; `info` carries what that task's
  models need to know besides `num_classes` (a rating dataset's `num_users` and `num_items`).
  `augment_pad` / `augment_flip` say which augmentation suits the data (random crop after padding by
  `augment_pad`, random horizontal flip); they are advice for configs (`config.data.crop_pad`,
  `config.data.flip`), nothing applies them implicitly. Digits, for instance, must not be mirrored.
  """
  name: str
  train: Union[Split, ArraySplit, Any]  # Any: a kd_jax.data.streaming.StreamingSplit
  val: Union[Split, ArraySplit, Any]
  test: Union[Split, ArraySplit, Any]
  num_classes: int
  image_shape: Tuple[int, ...]
  augment_pad: int = 0
  augment_flip: bool = False
  task: str = "classification"
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How to load one named dataset.

  Attributes:
    source: 'embedded' (shipped with a Python package), 'tfds' (array_record build in a data_dir, read into
      memory) or 'tfds_stream' (array_record build of JPEGs, streamed: `kd_jax.data.streaming`).
    tfds_name: the tfds builder name (for source 'tfds').
    num_classes: number of classes.
    image_shape: (H, W, C) of every image (streamed: the default crop, `config.data.image_size` overrides it).
    mean, std: per-channel normalisation in [0, 1] units (images are scaled by 1/255 first); None means
      computed from the training data (before the validation split is carved, so independent of the seed).
    augment_pad, augment_flip: the augmentation that suits the data (see `Dataset`).
    train_split, test_split: tfds split names.
    image_key, label_key: feature names in the tfds examples.
  """
  source: str
  num_classes: int
  image_shape: Tuple[int, int, int]
  tfds_name: str = ""
  mean: Optional[Tuple[float, ...]] = None
  std: Optional[Tuple[float, ...]] = None
  augment_pad: int = 0
  augment_flip: bool = False
  train_split: str = "train"
  test_split: str = "test"
  image_key: str = "image"
  label_key: str = "label"


DATASETS: Dict[str, DatasetSpec] = {
    "digits": DatasetSpec(source="embedded", num_classes=10, image_shape=(8, 8, 1)),
    "cifar10": DatasetSpec(
        source="tfds", tfds_name="cifar10", num_classes=10, image_shape=(32, 32, 3),
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), augment_pad=4, augment_flip=True),
    "cifar100": DatasetSpec(
        source="tfds", tfds_name="cifar100", num_classes=100, image_shape=(32, 32, 3),
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), augment_pad=4, augment_flip=True),
    # Streamed: augmented on the host (random-resized crop, and the flip if config.data.flip), never padded.
    # tfds has no labelled ImageNet test split: its 'validation' split is the reported test split.
    "imagenet2012": DatasetSpec(
        source="tfds_stream", tfds_name="imagenet2012", num_classes=1000, image_shape=(224, 224, 3),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), augment_flip=True, test_split="validation"),
}


def dataset_names() -> List[str]:
  """The names `load_dataset` knows, sorted."""
  return sorted(DATASETS)


def load_dataset(name: str, *, data_dir: Optional[str] = None, val_fraction: float = 0.1,
                 seed: int = 0, image_size: Optional[int] = None, flip: bool = True, num_workers: int = 0,
                 prefetch: int = 2) -> Dataset:
  """Loads a named dataset (see `DATASETS`) with a validation split carved from its training data.

  Args:
    name: 'digits' (embedded, scikit-learn's 8x8 digits), 'cifar10' or 'cifar100' (tfds array_record
      builds in `data_dir`), 'imagenet2012' or 'tfds:<builder>' (tfds builds of JPEGs, streamed).
    data_dir: tfds data directory; None means tfds' default (~/tensorflow_datasets or $TFDS_DATA_DIR).
    val_fraction: fraction of the training data moved to the validation split, in [0, 1); 0 gives an
      empty validation split. Streamed datasets also take a whole number of examples (>= 1).
    seed: draws the validation split (stratified by class).
    image_size, flip, num_workers, prefetch: streamed datasets only (`kd_jax.data.streaming`): the side of
      the crops (default: the spec's), the training images' random flip (done on the host), grain worker
      processes (0: a thread of this process), batches built ahead.

  Raises:
    KDJaxError: unknown name, bad val_fraction, or tfds data not prepared in `data_dir`.
  """
  spec = DATASETS.get(name)
  if name.startswith("tfds:") or (spec is not None and spec.source == "tfds_stream"):
    from kd_jax.data import streaming  # pylint: disable=g-import-not-at-top  (it imports this module)

    data_dir = os.path.expanduser(data_dir) if data_dir else None
    spec = spec or streaming.spec_for(name, data_dir)
    return streaming.load_streaming_dataset(name, spec, data_dir=data_dir, val_fraction=val_fraction, seed=seed,
                                            image_size=image_size, flip=flip, num_workers=num_workers,
                                            prefetch=prefetch)
  if spec is None:
    raise KDJaxError(f"Unknown dataset {name!r}; known datasets: {', '.join(dataset_names())} (or "
                     "'tfds:<builder>' to stream a tfds image-classification build). For your own arrays use "
                     "kd_jax.data.from_arrays.")
  _check_fraction(val_fraction)
  if spec.source == "embedded":
    if name != "digits":
      raise KDJaxError(f"No embedded loader for dataset {name!r}.")
    return _load_digits(spec, val_fraction, seed)
  if spec.source == "tfds":
    return _load_tfds(name, spec, data_dir, val_fraction, seed)
  raise KDJaxError(f"Dataset {name!r} has unknown source {spec.source!r}; expected 'embedded', 'tfds' or "
                   "'tfds_stream'.")


def from_arrays(x_train: ArrayLike, y_train: ArrayLike, *, x_test: Optional[ArrayLike] = None,
                y_test: Optional[ArrayLike] = None, num_classes: Optional[int] = None,
                val_fraction: float = 0.1, seed: int = 0, name: str = "arrays",
                mean: Optional[ArrayLike] = None, std: Optional[ArrayLike] = None,
                augment_pad: int = 0, augment_flip: bool = False) -> Dataset:
  """A `Dataset` from in-memory arrays.

  Images are always NHWC: `x` of shape [N, H, W, C] is kept, [N, H, W] becomes [N, H, W, 1] and flat
  features [N, D] become [N, 1, 1, D] (MLP students flatten them back; do not augment such data).
  uint8 arrays are stored as uint8, anything else as float32; values are used as given (no /255).

  Args:
    x_train, y_train: training images and integer labels in [0, num_classes).
    x_test, y_test: optional test split (both or neither); without them the test split is empty.
    num_classes: defaults to 1 + the largest label seen.
    val_fraction, seed: validation split carved (stratified) from the training arrays, drawn from `seed`.
    name: the dataset's name in logs and results.
    mean, std: per-channel (or scalar) normalisation in the units of `x`; default: computed from all of
      `x_train` (before the validation carve, so independent of `seed`).
    augment_pad, augment_flip: the augmentation that suits the data (advice, see `Dataset`).

  Raises:
    KDJaxError: mismatched lengths, bad shapes, non-integer or out-of-range labels.
  """
  _check_fraction(val_fraction)
  x_tr = _as_images(x_train, "x_train")
  y_tr = _as_labels(y_train, "y_train", len(x_tr))
  if (x_test is None) != (y_test is None):
    raise KDJaxError("Pass both x_test and y_test, or neither (then the test split is empty).")
  if x_test is not None:
    x_te = _as_images(x_test, "x_test")
    y_te = _as_labels(y_test, "y_test", len(x_te))
    if x_te.shape[1:] != x_tr.shape[1:]:
      raise KDJaxError(f"x_test examples have shape {x_te.shape[1:]} but x_train examples have "
                       f"{x_tr.shape[1:]}; they must match.")
  else:
    x_te = np.zeros((0,) + x_tr.shape[1:], x_tr.dtype)
    y_te = np.zeros((0,), np.int32)
  if len(x_tr) == 0:
    raise KDJaxError("x_train is empty; pass at least one training example.")

  seen = int(max(y_tr.max(), y_te.max() if len(y_te) else -1)) + 1
  if num_classes is None:
    num_classes = seen
  elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise KDJaxError(f"num_classes must be a positive integer, got {num_classes!r}.")
  for labels, what in ((y_tr, "y_train"), (y_te, "y_test")):
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
      raise KDJaxError(f"{what} has labels in [{labels.min()}, {labels.max()}] but num_classes="
                       f"{num_classes} needs them in [0, {num_classes - 1}].")

  channels = x_tr.shape[-1]
  data_mean, data_std = _moments(x_tr, 1.0) if mean is None or std is None else (None, None)
  mean_v = _channel_stat(mean, channels, "mean") if mean is not None else data_mean
  std_v = _channel_stat(std, channels, "std") if std is not None else data_std
  if np.any(std_v <= 0):
    raise KDJaxError(f"std must be positive in every channel, got {std_v.tolist()}.")
  train_idx, val_idx = carve_stratified(y_tr, val_fraction, np.random.default_rng([seed_entropy(seed), VAL_STREAM]))
  if len(train_idx) == 0:
    raise KDJaxError(f"val_fraction={val_fraction} leaves no training examples out of {len(y_tr)}.")
  make = lambda x, y: _split(x, y, mean_v, std_v, 1.0)
  return Dataset(name=name, train=make(x_tr[train_idx], y_tr[train_idx]),
                 val=make(x_tr[val_idx], y_tr[val_idx]), test=make(x_te, y_te),
                 num_classes=int(num_classes), image_shape=tuple(int(d) for d in x_tr.shape[1:]),
                 augment_pad=int(augment_pad), augment_flip=bool(augment_flip))


def from_ratings(users: ArrayLike, items: ArrayLike, ratings: ArrayLike, *, num_users: Optional[int] = None,
                 num_items: Optional[int] = None, test_fraction: float = 0.1, val_fraction: float = 0.1,
                 seed: int = 0, name: str = "ratings") -> Dataset:
  """A rating dataset (task 'rating') from (user, item, rating) triples.

  The test split is a fixed `test_fraction` of the triples (drawn with seed 0, the same for every run
  seed); the validation split is a `val_fraction` of the rest, drawn from `seed`. Ids are integers in
  [0, num_users) and [0, num_items) (defaults: 1 + the largest id); ratings are floats.

  Raises:
    KDJaxError: mismatched lengths, non-integer or negative ids, non-finite ratings, bad fractions.
  """
  _check_fraction(val_fraction)
  _check_fraction(test_fraction)
  u, i, r = (np.asarray(a) for a in (users, items, ratings))
  if not (u.ndim == i.ndim == r.ndim == 1) or not len(u) == len(i) == len(r):
    raise KDJaxError(f"users, items and ratings must be 1-D arrays of one length; got shapes {u.shape}, "
                     f"{i.shape}, {r.shape}.")
  if len(u) == 0:
    raise KDJaxError("from_ratings got no ratings; pass at least one (user, item, rating) triple.")
  for ids, what in ((u, "users"), (i, "items")):
    if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0:
      raise KDJaxError(f"{what} must be non-negative integer ids, got dtype {ids.dtype} with minimum {ids.min()}.")
  if not np.all(np.isfinite(r)):
    raise KDJaxError("ratings must be finite numbers.")
  num_users = int(u.max()) + 1 if num_users is None else int(num_users)
  num_items = int(i.max()) + 1 if num_items is None else int(num_items)
  if u.max() >= num_users or i.max() >= num_items:
    raise KDJaxError(f"ids exceed num_users={num_users} / num_items={num_items}: largest user {u.max()}, "
                     f"largest item {i.max()}.")
  n = len(u)
  test_idx = np.sort(np.random.default_rng([_DIGITS_TEST_SEED]).permutation(n)[:int(round(test_fraction * n))])
  pool = np.setdiff1d(np.arange(n), test_idx)
  carve = np.random.default_rng([seed_entropy(seed), VAL_STREAM]).permutation(len(pool))
  val_idx = np.sort(pool[carve[:int(round(val_fraction * len(pool)))]])
  train_idx = np.setdiff1d(pool, val_idx)
  if len(train_idx) == 0:
    raise KDJaxError(f"test_fraction={test_fraction} and val_fraction={val_fraction} leave no training ratings.")

  def split(idx):
    arrays = {"user": u[idx].astype(np.int32), "item": i[idx].astype(np.int32), "rating": r[idx].astype(np.float32)}
    for a in arrays.values():
      a.setflags(write=False)
    return ArraySplit(arrays)

  return Dataset(name=name, train=split(train_idx), val=split(val_idx), test=split(test_idx), num_classes=0,
                 image_shape=(), task="rating", info={"num_users": num_users, "num_items": num_items,
                                                      "mean_rating": float(np.mean(r[train_idx]))})


# ---------------------------------------------------------------------------------------------------
# Loaders.


def _load_digits(spec: DatasetSpec, val_fraction: float, seed: int) -> Dataset:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  bunch = load_digits()
  images = (bunch.images.astype(np.float32) / 16.0)[..., None]  # [1797, 8, 8, 1] in [0, 1]
  labels = bunch.target.astype(np.int32)
  pool_idx, test_idx = carve_stratified(labels, DIGITS_TEST_FRACTION, np.random.default_rng([_DIGITS_TEST_SEED]))
  mean, std = _moments(images[pool_idx], 1.0)
  train_idx, val_idx = carve_stratified(labels[pool_idx], val_fraction,
                              np.random.default_rng([seed_entropy(seed), VAL_STREAM]))
  train_idx, val_idx = pool_idx[train_idx], pool_idx[val_idx]
  make = lambda idx: _split(images[idx], labels[idx], mean, std, 1.0)
  return Dataset(name="digits", train=make(train_idx), val=make(val_idx), test=make(test_idx),
                 num_classes=spec.num_classes, image_shape=spec.image_shape,
                 augment_pad=spec.augment_pad, augment_flip=spec.augment_flip)


def _load_tfds(name: str, spec: DatasetSpec, data_dir: Optional[str], val_fraction: float,
               seed: int) -> Dataset:
  train_x, train_y = _read_tfds_split(name, spec, data_dir, spec.train_split)
  test_x, test_y = _read_tfds_split(name, spec, data_dir, spec.test_split)
  scale = 1.0 / 255.0 if train_x.dtype == np.uint8 else 1.0
  if spec.mean is not None and spec.std is not None:
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
  else:
    mean, std = _moments(train_x, scale)
  train_idx, val_idx = carve_stratified(train_y, val_fraction,
                              np.random.default_rng([seed_entropy(seed), VAL_STREAM]))
  make = lambda x, y: _split(x, y, mean, std, scale)
  return Dataset(name=name, train=make(train_x[train_idx], train_y[train_idx]),
                 val=make(train_x[val_idx], train_y[val_idx]), test=make(test_x, test_y),
                 num_classes=spec.num_classes, image_shape=spec.image_shape,
                 augment_pad=spec.augment_pad, augment_flip=spec.augment_flip)


def not_prepared_message(name: str, spec: DatasetSpec, data_dir: Optional[str], split: str,
                          cause: BaseException) -> str:
  where = repr(data_dir) if data_dir else "tfds' default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
  shown_dir = data_dir or "DIR"
  detail = " ".join(str(cause).split())
  detail = detail if len(detail) <= 300 else detail[:297] + "..."
  return (f"Dataset {name!r} (tfds {spec.tfds_name!r}, split {split!r}) is not prepared in {where} as "
          f"array_record files, which kd_jax reads without TensorFlow. To prepare it offline: on a machine "
          f"with internet run `tfds build {spec.tfds_name} --file_format=array_record --data_dir "
          f"{shown_dir}` (that step may need TensorFlow), then copy that directory to this machine and pass "
          f"--config.data.data_dir={shown_dir}. (tfds said: {type(cause).__name__}: {detail})")


def _read_tfds_split(name: str, spec: DatasetSpec, data_dir: Optional[str],
                     split: str) -> Tuple[np.ndarray, np.ndarray]:
  """All of one tfds split as (uint8 [n, H, W, C], int32 [n]), in the order tfds stored it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if data_dir is not None:
    data_dir = os.path.expanduser(data_dir)
  try:
    source = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir, download=False)
    n = len(source)
  except Exception as e:  # tfds raises many types here (NotImplementedError, AssertionError, OSError...)
    raise KDJaxError(not_prepared_message(name, spec, data_dir, split, e)) from e
  images = np.empty((n,) + tuple(spec.image_shape), np.uint8)
  labels = np.empty((n,), np.int32)
  for i in range(n):  # one example at a time: a few seconds for CIFAR, and memory stays at uint8
    example = source[i]
    image = np.asarray(example[spec.image_key])
    if image.shape != tuple(spec.image_shape):
      raise KDJaxError(f"Dataset {name!r} example {i} of split {split!r} has image shape {image.shape}, "
                       f"expected {tuple(spec.image_shape)}; is data_dir holding a different build?")
    images[i] = image
    labels[i] = int(example[spec.label_key])
  if n and (labels.min() < 0 or labels.max() >= spec.num_classes):
    raise KDJaxError(f"Dataset {name!r} split {split!r} has labels in [{labels.min()}, {labels.max()}], "
                     f"expected [0, {spec.num_classes - 1}].")
  return images, labels


# ---------------------------------------------------------------------------------------------------
# Helpers, shared with the streaming and super-resolution loaders.


def seed_entropy(seed: int) -> int:
  """Any Python int as a non-negative entropy word for numpy's SeedSequence."""
  return int(seed) % (1 << 64)


def _check_fraction(val_fraction: float) -> None:
  if not 0.0 <= float(val_fraction) < 1.0:
    raise KDJaxError(f"val_fraction must be in [0, 1), got {val_fraction}.")


def carve_stratified(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """A stratified split of positions: (kept, carved), each sorted, with round(fraction * n) carved.

  Each class gives floor(fraction * n_c) examples; the remaining quota goes to the classes with the
  largest remainders (ties to the smaller class id), so class proportions are kept and the total is exact.
  """
  n = len(labels)
  classes, counts = np.unique(labels, return_counts=True)
  total = int(round(fraction * n))
  exact = fraction * counts
  quota = np.floor(exact).astype(np.int64)
  extra = total - int(quota.sum())
  if extra > 0:
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:extra]] += 1
  carved = []
  for c, k in zip(classes, quota):
    members = np.flatnonzero(labels == c)
    carved.append(rng.permutation(members)[:k])
  carved_idx = np.sort(np.concatenate(carved)) if carved else np.zeros((0,), np.int64)
  kept_mask = np.ones(n, bool)
  kept_mask[carved_idx] = False
  return np.flatnonzero(kept_mask), carved_idx


def _moments(images: np.ndarray, scale: float) -> Tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of `images * scale` (std of a constant channel is taken as 1)."""
  flat = images.reshape(-1, images.shape[-1]).astype(np.float64) * scale
  mean = flat.mean(axis=0)
  std = flat.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return mean.astype(np.float32), std.astype(np.float32)


def _split(images: np.ndarray, labels: np.ndarray, mean: np.ndarray, std: np.ndarray,
           scale: float) -> Split:
  images = np.ascontiguousarray(images)
  labels = np.ascontiguousarray(labels, dtype=np.int32)
  mean = np.asarray(mean, np.float32).copy()
  std = np.asarray(std, np.float32).copy()
  for a in (images, labels, mean, std):
    a.setflags(write=False)
  return Split(images=images, labels=labels, mean=mean, std=std, scale=float(scale))


def _as_images(x: ArrayLike, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
    raise KDJaxError(f"{what} must be a numeric array, got dtype {x.dtype}.")
  if x.ndim == 2:
    x = x[:, None, None, :]
  elif x.ndim == 3:
    x = x[..., None]
  elif x.ndim != 4:
    raise KDJaxError(f"{what} must be [N, H, W, C], [N, H, W] or [N, D]; got shape {x.shape}.")
  # Values are not checked for NaN: the train loop stops on a non-finite loss (and tests poison data so).
  return x if x.dtype == np.uint8 else x.astype(np.float32)


def _as_labels(y: ArrayLike, what: str, n: int) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim == 2 and y.shape[1] > 1:
    raise KDJaxError(f"{what} has shape {y.shape}; pass integer class ids of shape [N] "
                     f"(for one-hot labels use y.argmax(-1)).")
  y = y.reshape(-1) if y.ndim == 2 else y
  if y.ndim != 1:
    raise KDJaxError(f"{what} must be a 1-D array of integer class ids, got shape {y.shape}.")
  if len(y) != n:
    raise KDJaxError(f"{what} has {len(y)} labels but the matching images have {n} examples; "
                     "lengths must match.")
  if np.issubdtype(y.dtype, np.integer) and y.dtype != np.bool_:
    return y.astype(np.int32)
  if np.issubdtype(y.dtype, np.floating):
    bad = ~np.isfinite(y) | (y != np.round(y))
    if np.any(bad):
      first = int(np.flatnonzero(bad)[0])
      raise KDJaxError(f"{what} must hold integer class ids; found non-integer value "
                       f"{float(y[first])} at position {first}.")
    return y.astype(np.int32)
  raise KDJaxError(f"{what} must hold integer class ids, got dtype {y.dtype}.")


def _channel_stat(value: ArrayLike, channels: int, what: str) -> np.ndarray:
  v = np.asarray(value, np.float32).reshape(-1)
  if v.size == 1:
    return np.full((channels,), v[0], np.float32)
  if v.size != channels:
    raise KDJaxError(f"{what} must be a scalar or have one value per channel ({channels}), "
                     f"got {v.size} values.")
  return v
