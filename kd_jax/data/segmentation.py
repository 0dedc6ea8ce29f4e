"""Segmentation datasets (task 'segmentation'): the embedded synthetic 'buildings' tiles (EO + SAR) and folders.

Batches are `{'image': float32 [B, H, W, C], 'label': int32 [B, H, W] (class per pixel, 255 = ignore),
'index': int32 [B]}` (an `ArraySplit`). Images are standardised per channel with the mean and standard
deviation of the non-test pool (no label information, independent of the run seed).

Splits: without test arrays the test split is a fixed `test_fraction` of the tiles drawn with seed 0 whatever
the run seed; the validation split is a `val_fraction` of the rest drawn from `seed`.

'buildings' (`buildings_arrays`): synthetic 32×32 tiles of a scene with three classes, 0 ground, 1 building,
2 road, and four channels: red, green, blue (an EO-like optical image) and SAR (a radar-like backscatter).
Every number of the generator is our choice [assume]:
  * ground: a green-brown colour with a smooth per-tile texture and pixel noise; SAR backscatter 0.25;
  * road (in 60% of the tiles): a horizontal or vertical band 3 pixels wide, dark grey; SAR 0.06 (specular);
  * buildings: 1–4 axis-aligned rectangles of 4–9 pixels per side, roofs grey, red or brown; in the SAR channel
    the bright return (0.95) of a building is displaced by a LAYOVER of 2 pixels towards the top of the tile
    (the sensor side), the rest of its footprint is medium (0.55) and a 2-pixel radar shadow (0.03) follows its
    far side;
  * SAR speckle: every SAR value is multiplied by Gamma(4, 1/4) noise (4-look intensity speckle, mean 1);
  * clouds (in 70% of the tiles): 1–2 ellipses with radii 6–12 pixels where the EO values are replaced by a
    bright white cloud texture; the SAR channel sees through them.
So under clouds only the SAR channel tells buildings from ground: a teacher on EO+SAR can know what a student
on EO alone cannot (Choi et al. 2022, METHODS.md item 15a). The generator has its own fixed seed
(`BUILDINGS_SEED`), never the run's.

'segmentation_folders' (`read_segmentation_folders`): `data_dir/images/<stem>.png|.npy` (RGB PNGs scaled to
[0, 1], or float arrays [H, W] / [H, W, C]), `data_dir/masks/<stem>.png|.npy` (class per pixel, 255 =
ignore) and optionally `data_dir/sar/<stem>.png|.npy` stacked after the image channels. Every stem must have
all its files, all of the same height and width; all tiles must share one size.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from kd_jax.data.datasets import ArraySplit, Dataset
from kd_jax.errors import KDJaxError, one_of

SEGMENTATION_DATASETS = ("buildings", "segmentation_folders")
IGNORE = 255
_TEST_SEED = 0
_VAL_STREAM = 0x73766C  # "svl"

BUILDINGS_SEED = 2115
BUILDINGS_TILES = 300
BUILDINGS_SIZE = 32
BUILDINGS_CHANNELS = ("red", "green", "blue", "sar")
BUILDINGS_CLASSES = ("ground", "building", "road")
LAYOVER = 2


def _smooth_noise(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
  """[size, size] noise in about [-1, 1], smooth over size / cells pixels (bilinear upsampling of a grid)."""
  grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
  pos = np.linspace(0, cells, size)
  i = np.minimum(pos.astype(int), cells - 1)
  f = pos - i
  rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
  return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def buildings_arrays(num_tiles: int = BUILDINGS_TILES, size: int = BUILDINGS_SIZE,
                     seed: int = BUILDINGS_SEED) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The synthetic 'buildings' tiles (see the module docstring): `(images float32 [N, S, S, 4] (red, green,
  blue, SAR; unstandardised), labels int32 [N, S, S], clouds bool [N, S, S])`. Deterministic in its arguments."""
  rng = np.random.default_rng([seed])
  images = np.zeros((num_tiles, size, size, 4), np.float32)
  labels = np.zeros((num_tiles, size, size), np.int32)
  clouds = np.zeros((num_tiles, size, size), bool)
  rows, cols = np.mgrid[0:size, 0:size]
  roofs = np.array([[0.55, 0.55, 0.58], [0.62, 0.30, 0.25], [0.48, 0.38, 0.30]])
  for n in range(num_tiles):
    label = np.zeros((size, size), np.int32)
    eo = np.empty((size, size, 3))
    ground = np.array([0.36, 0.46, 0.26]) * rng.uniform(0.85, 1.15)
    eo[:] = ground + 0.08 * _smooth_noise(rng, size)[..., None]
    sar = np.full((size, size), 0.25)
    if rng.random() < 0.6:
      at, vertical = rng.integers(4, size - 7), rng.random() < 0.5
      road = ((cols if vertical else rows) >= at) & ((cols if vertical else rows) < at + 3)
      label[road], eo[road], sar[road] = 2, np.array([0.30, 0.30, 0.32]), 0.06
    footprint = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, 5)):
      h, w = rng.integers(4, 10, 2)
      top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
      box = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
      footprint |= box
      eo[box] = roofs[rng.integers(0, len(roofs))] * rng.uniform(0.9, 1.1)
      shadow = (rows >= top + h) & (rows < top + h + 2) & (cols >= left) & (cols < left + w)
      sar[shadow & ~footprint] = 0.03
    label[footprint] = 1
    sar[footprint] = 0.55
    bright = np.zeros_like(footprint)
    bright[:size - LAYOVER] = footprint[LAYOVER:]  # the bright return moves LAYOVER pixels towards the top
    sar[bright] = 0.95
    eo += rng.normal(0.0, 0.03, eo.shape)
    sar = sar * rng.gamma(4.0, 0.25, (size, size))
    cloud = np.zeros((size, size), bool)
    if rng.random() < 0.7:
      for _ in range(rng.integers(1, 3)):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(6, 12, 2)
        cloud |= ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0
      white = 0.88 + 0.06 * _smooth_noise(rng, size, 8) + rng.normal(0.0, 0.02, (size, size))
      eo[cloud] = (white[..., None] * np.array([0.98, 0.99, 1.0]))[cloud]
    images[n, ..., :3], images[n, ..., 3] = eo, sar
    labels[n], clouds[n] = label, cloud
  return images, labels, clouds


def from_segmentation_arrays(images, labels, *, num_classes: Optional[int] = None, x_test=None, y_test=None,
                             val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                             standardize: bool = True, name: str = "segmentation",
                             channel_names: Optional[Sequence[str]] = None) -> Dataset:
  """A segmentation `Dataset` from images [N, H, W, C] and label maps [N, H, W] (see the module docstring).

  `num_classes` None = the largest label other than 255, plus one. Raises `KDJaxError` for non-finite images,
  shapes that do not match, labels that are negative or ≥ num_classes (other than 255), empty splits.
  """
  x, y = _images(images, "images"), _labels(labels, "labels")
  _check_pair(x, y, "images", "labels")
  if (x_test is None) != (y_test is None):
    raise KDJaxError("Pass both x_test and y_test, or neither (then a fixed test_fraction of the tiles is held out).")
  if x_test is not None:
    x_te, y_te = _images(x_test, "x_test"), _labels(y_test, "y_test")
    _check_pair(x_te, y_te, "x_test", "y_test")
    if x_te.shape[1:] != x.shape[1:]:
      raise KDJaxError(f"Test images have shape {x_te.shape[1:]} but training images {x.shape[1:]}; they must match.")
    pool_x, pool_y = x, y
  else:
    if not 0.0 <= test_fraction < 1.0:
      raise KDJaxError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    n_test = int(round(test_fraction * len(x)))
    if n_test == 0:
      raise KDJaxError(f"test_fraction={test_fraction} of {len(x)} tiles leaves no test split.")
    test_idx = np.sort(np.random.default_rng([_TEST_SEED]).permutation(len(x))[:n_test])
    pool_idx = np.setdiff1d(np.arange(len(x)), test_idx)
    x_te, y_te, pool_x, pool_y = x[test_idx], y[test_idx], x[pool_idx], y[pool_idx]
  every = np.concatenate([pool_y.reshape(-1), y_te.reshape(-1)])
  real = every[every != IGNORE]
  if num_classes is None:
    num_classes = int(real.max()) + 1 if real.size else 1
  bad = real[(real < 0) | (real >= num_classes)]
  if bad.size:
    raise KDJaxError(f"Labels must be in [0, {num_classes}) or {IGNORE} (ignore); found {np.unique(bad)[:5].tolist()} "
                     f"in {bad.size} pixel(s). Fix the masks or map those values to {IGNORE}.")
  if not 0.0 <= val_fraction < 1.0:
    raise KDJaxError(f"val_fraction must be in [0, 1), got {val_fraction}.")
  carve = np.random.default_rng([int(seed) % (1 << 64), _VAL_STREAM]).permutation(len(pool_x))
  val_idx = np.sort(carve[:int(round(val_fraction * len(pool_x)))])
  train_idx = np.setdiff1d(np.arange(len(pool_x)), val_idx)
  if len(train_idx) == 0:
    raise KDJaxError(f"val_fraction={val_fraction} leaves no training tiles out of {len(pool_x)}.")
  if standardize:
    flat = pool_x.reshape(-1, pool_x.shape[-1])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std > 0, std, 1.0)
  else:
    mean, std = 0.0, 1.0

  def split(xs, ys):
    arrays = {"image": ((xs - mean) / std).astype(np.float32), "label": ys.astype(np.int32)}
    for a in arrays.values():
      a.setflags(write=False)
    return ArraySplit(arrays)

  channels = int(x.shape[-1])
  return Dataset(name=name, train=split(pool_x[train_idx], pool_y[train_idx]),
                 val=split(pool_x[val_idx], pool_y[val_idx]), test=split(x_te, y_te), num_classes=int(num_classes),
                 image_shape=tuple(int(d) for d in x.shape[1:]), augment_pad=0, augment_flip=True,
                 task="segmentation",
                 info={"channel_names": tuple(channel_names or (f"c{i}" for i in range(channels))),
                       "ignore_index": IGNORE})


def load_segmentation_dataset(name: str, *, data_dir: str = "", val_fraction: float = 0.1, seed: int = 0) -> Dataset:
  """The segmentation dataset `name` (config.data.name with config.task='segmentation')."""
  if name == "buildings":
    images, labels, _ = buildings_arrays()
    return from_segmentation_arrays(images, labels, num_classes=len(BUILDINGS_CLASSES), val_fraction=val_fraction,
                                    seed=seed, name="buildings", channel_names=BUILDINGS_CHANNELS)
  if name == "segmentation_folders":
    images, labels, channel_names = read_segmentation_folders(data_dir)
    return from_segmentation_arrays(images, labels, val_fraction=val_fraction, seed=seed,
                                    name=os.path.basename(os.path.normpath(data_dir)) or "segmentation_folders",
                                    channel_names=channel_names)
  raise KDJaxError(f"Unknown segmentation dataset {name!r}; config.task='segmentation' takes config.data.name "
                   f"{one_of(SEGMENTATION_DATASETS)}.")


# ---------------------------------------------------------------------------------------------------
# Folders.

_EXTENSIONS = (".png", ".npy")
LAYOUT = ("'segmentation_folders' reads config.data.data_dir/images/<stem>.png|.npy, data_dir/masks/<stem>.png|.npy "
          "(class per pixel, 255 = ignore) and optionally data_dir/sar/<stem>.png|.npy (extra channels).")


def _stems(folder: str) -> Dict[str, str]:
  files = {}
  for f in sorted(os.listdir(folder)):
    stem, ext = os.path.splitext(f)
    if ext.lower() in _EXTENSIONS:
      if stem in files:
        raise KDJaxError(f"{folder!r} holds two files for {stem!r}; keep one (.png or .npy).")
      files[stem] = os.path.join(folder, f)
  return files


def _read(path: str, kind: str) -> np.ndarray:
  if path.lower().endswith(".npy"):
    try:
      return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise KDJaxError(f"Cannot read {path!r}: {e}.") from e
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      if kind == "mask":
        return np.asarray(image.convert("L") if image.mode not in ("L", "P", "I") else image).astype(np.int64)
      if kind == "sar":
        return np.asarray(image.convert("L"), np.float32) / 255.0
      return np.asarray(image.convert("RGB"), np.float32) / 255.0
  except OSError as e:
    raise KDJaxError(f"Cannot read image {path!r}: {e}.") from e


def read_segmentation_folders(data_dir: str) -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
  """`(images [N, H, W, C], labels [N, H, W], channel names)` of a `data_dir` laid out as the module
  docstring says; `KDJaxError` for missing folders, unmatched stems and size mismatches."""
  if not data_dir:
    raise KDJaxError("config.data.data_dir is empty. " + LAYOUT)
  root = os.path.expanduser(data_dir)
  folders = {k: os.path.join(root, k) for k in ("images", "masks", "sar")}
  for k in ("images", "masks"):
    if not os.path.isdir(folders[k]):
      raise KDJaxError(f"{folders[k]!r} does not exist. " + LAYOUT)
  images, masks = _stems(folders["images"]), _stems(folders["masks"])
  sar = _stems(folders["sar"]) if os.path.isdir(folders["sar"]) else None
  if not images:
    raise KDJaxError(f"{folders['images']!r} holds no .png or .npy files. " + LAYOUT)
  for other, what in ((masks, "masks"), (sar, "sar")):
    if other is None:
      continue
    missing, extra = sorted(set(images) - set(other)), sorted(set(other) - set(images))
    if missing or extra:
      raise KDJaxError(f"The stems of images/ and {what}/ differ: without a {what} file: {missing[:5]}; without an "
                       f"image: {extra[:5]}. " + LAYOUT)
  xs, ys = [], []
  for stem in images:
    x = _read(images[stem], "image").astype(np.float32)
    x = x[..., None] if x.ndim == 2 else x
    y = _read(masks[stem], "mask")
    if y.ndim == 3 and y.shape[-1] == 1:
      y = y[..., 0]
    if y.ndim != 2 or y.shape != x.shape[:2]:
      raise KDJaxError(f"{stem!r}: mask shape {y.shape} does not match image size {x.shape[:2]}.")
    if sar is not None:
      s = _read(sar[stem], "sar").astype(np.float32)
      s = s[..., None] if s.ndim == 2 else s
      if s.shape[:2] != x.shape[:2]:
        raise KDJaxError(f"{stem!r}: SAR size {s.shape[:2]} does not match image size {x.shape[:2]}.")
      x = np.concatenate([x, s], axis=-1)
    if xs and x.shape != xs[0].shape:
      raise KDJaxError(f"{stem!r} has shape {x.shape} but {next(iter(images))!r} has {xs[0].shape}; every tile "
                       "must have the same size and channels (cut the images into equal tiles).")
    xs.append(x)
    ys.append(y)
  c_img = xs[0].shape[-1] - (0 if sar is None else _read(sar[next(iter(images))], "sar").reshape(
      xs[0].shape[0], xs[0].shape[1], -1).shape[-1])
  names = tuple(f"image{i}" for i in range(c_img)) + tuple(f"sar{i}" for i in range(xs[0].shape[-1] - c_img))
  return np.stack(xs), np.stack(ys), names


def _images(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 4:
    raise KDJaxError(f"{what} must be [N, H, W, C]; got shape {x.shape}.")
  x = x.astype(np.float32)
  if not np.isfinite(x).all():
    raise KDJaxError(f"{what} holds NaN or infinite values.")
  return x


def _labels(y, what: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 3 or not np.issubdtype(y.dtype, np.integer):
    raise KDJaxError(f"{what} must be integer label maps [N, H, W]; got shape {y.shape}, dtype {y.dtype}.")
  return y.astype(np.int64)


def _check_pair(x: np.ndarray, y: np.ndarray, x_what: str, y_what: str) -> None:
  if x.shape[:3] != y.shape:
    raise KDJaxError(f"{x_what} {x.shape} and {y_what} {y.shape} must cover the same [N, H, W].")
  if len(x) == 0:
    raise KDJaxError(f"{x_what} is empty.")


__all__ = ["BUILDINGS_CHANNELS", "BUILDINGS_CLASSES", "BUILDINGS_SEED", "SEGMENTATION_DATASETS", "buildings_arrays",
           "from_segmentation_arrays", "load_segmentation_dataset", "read_segmentation_folders"]
