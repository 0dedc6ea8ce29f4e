"""Super-resolution data: (low-resolution, high-resolution) image pairs for the task 'super_resolution'.

Three sources, all giving a `Dataset` whose `task` is 'super_resolution' and whose `info['scale']` is the
upscaling factor:
  * `load_photos` (name 'sr_photos', the embedded default): the RGB and greyscale photos scikit-image and
    scikit-learn ship. Training and held-out images never share a photo (`PHOTOS_TEST`).
  * `from_folders` (name 'sr_folders'): an HR folder and optionally an LR folder of PNGs, for DIV2K, Set5,
    Set14, B100 or Urban100 prepared by the user (layouts in its docstring).
  * `load_div2k` (name 'div2k'): tfds' `div2k/bicubic_x<s>` read through `tfds.data_source` where prepared.

Where no LR image is given it is made as SR benchmarks make it: the HR image cropped to a multiple of the
scale (`modcrop`), then MATLAB's bicubic `imresize` by 1/scale with its antialiasing kernel, rounded to
8 bits (`kd_jax.data.resize.bicubic_downscale`).

Splits. Training uses fixed-size sub-images ("tiles", as BasicSR's `extract_subimages` prepares DIV2K):
a grid of non-overlapping HR tiles of `tile` pixels over every training image, cut lazily from the whole
images by `PatchPairs.get`; the task then crops a random LR patch of `config.data.patch_size` (and the
matching HR patch) from each tile inside the train step, with flips and 90° rotations. The validation
split is a seeded `val_fraction` of those tiles, evaluated whole (it shares photos with training, never
pixels). The test split holds whole images (`PairedImages`), evaluated one shape at a time.
All arrays are uint8 in memory and float32 in [0, 1] in batches: {'lr': [n, h, w, C], 'hr': [n, h·s,
w·s, C], 'index': [n]}.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from kd_jax.data.datasets import Dataset, check_positions, seed_entropy
from kd_jax.data.resize import bicubic_downscale, modcrop
from kd_jax.errors import KDJaxError

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
SR_DATASETS = ("sr_photos", "sr_folders", "div2k")
_VAL_STREAM = 0x737276  # "srv": the tile carve's stream, distinct from the batch shuffling streams

# The embedded photos. Held out (test): three photos of the kind SR benchmarks show (a portrait, an
# animal, an object scene). Training: the other colour photos and greyscale textures and scenes, which
# SR training sets (DIV2K, Flickr2K) also contain; greyscale images are used as three equal channels.
PHOTOS_TEST = ("astronaut", "chelsea", "coffee")
PHOTOS_TRAIN = ("rocket", "hubble_deep_field", "immunohistochemistry", "sklearn:china.jpg",
                "sklearn:flower.jpg", "camera", "brick", "grass", "gravel", "moon", "coins", "clock")


@dataclasses.dataclass(frozen=True, eq=False)
class PairedImages:
  """Whole (LR, HR) image pairs of any sizes: an evaluation split.

  `get` stacks the pairs at `indices`, which must share one shape; `shape_groups()` lists the positions
  of each shape, which is how `kd_jax.data.eval_batches` covers a split of mixed sizes.
  """
  lr: Tuple[np.ndarray, ...]
  hr: Tuple[np.ndarray, ...]
  names: Tuple[str, ...]
  scale: int

  def __len__(self) -> int:
    return len(self.hr)

  def shape_groups(self) -> List[np.ndarray]:
    """Positions grouped by LR shape, groups in order of first appearance, positions ascending."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, image in enumerate(self.lr):
      groups.setdefault(image.shape, []).append(i)
    return [np.asarray(g, np.int64) for g in groups.values()]

  def get(self, indices) -> Dict[str, np.ndarray]:
    idx = check_positions(indices, len(self), "PairedImages.get")
    shapes = {self.lr[i].shape for i in idx}
    if len(shapes) > 1:
      raise KDJaxError(f"PairedImages.get stacks images of one shape; positions {idx.tolist()} have LR shapes "
                       f"{sorted(shapes)} (use shape_groups()).")
    lr = np.stack([self.lr[i] for i in idx]) if len(idx) else np.zeros((0, 1, 1, 3), np.uint8)
    hr = np.stack([self.hr[i] for i in idx]) if len(idx) else np.zeros((0, self.scale, self.scale, 3), np.uint8)
    return {"lr": lr.astype(np.float32) / 255.0, "hr": hr.astype(np.float32) / 255.0,
            "index": idx.astype(np.int32)}


@dataclasses.dataclass(frozen=True, eq=False)
class PatchPairs:
  """Fixed-size (LR, HR) tiles cut from whole image pairs on demand: a training (or validation) split.

  Attributes:
    lr, hr: the whole images (uint8 [h, w, C] and [h·s, w·s, C]).
    tiles: int64 [n, 3], per tile (image, top, left) in LR pixels.
    tile: the LR tile size (the HR tile is `tile · scale`).
    scale: the upscaling factor.
  """
  lr: Tuple[np.ndarray, ...]
  hr: Tuple[np.ndarray, ...]
  tiles: np.ndarray
  tile: int
  scale: int

  def __len__(self) -> int:
    return int(self.tiles.shape[0])

  def get(self, indices) -> Dict[str, np.ndarray]:
    idx = check_positions(indices, len(self), "PatchPairs.get")
    t, s = self.tile, self.scale
    lr = np.empty((len(idx), t, t, self.lr[0].shape[-1]), np.float32)
    hr = np.empty((len(idx), t * s, t * s, self.hr[0].shape[-1]), np.float32)
    for row, (image, top, left) in enumerate(self.tiles[idx]):
      lr[row] = self.lr[image][top:top + t, left:left + t]
      hr[row] = self.hr[image][top * s:(top + t) * s, left * s:(left + t) * s]
    return {"lr": lr / 255.0, "hr": hr / 255.0, "index": idx.astype(np.int32)}


def tile_grid(lr_shapes: Sequence[Tuple[int, ...]], tile: int) -> np.ndarray:
  """(image, top, left) of every whole `tile`×`tile` LR tile on a non-overlapping grid, image by image in
  raster order; a margin narrower than a tile at the bottom and right is left out."""
  rows = [(i, y, x) for i, shape in enumerate(lr_shapes)
          for y in range(0, shape[0] - tile + 1, tile) for x in range(0, shape[1] - tile + 1, tile)]
  return np.asarray(rows, np.int64).reshape(-1, 3)


def make_pairs(hr_images: Sequence[np.ndarray], scale: int) -> Tuple[Tuple[np.ndarray, ...], Tuple[np.ndarray, ...]]:
  """`(LR images, HR images)`: each HR image cropped to a multiple of `scale` and its bicubic LR."""
  hr = tuple(modcrop(np.ascontiguousarray(image), scale) for image in hr_images)
  return tuple(bicubic_downscale(image, scale) for image in hr), hr


def sr_dataset(name: str, train_lr: Sequence[np.ndarray], train_hr: Sequence[np.ndarray],
               test_lr: Sequence[np.ndarray], test_hr: Sequence[np.ndarray], *, scale: int, tile: int,
               val_fraction: float, seed: int, test_names: Sequence[str] = ()) -> Dataset:
  """A super-resolution `Dataset` from whole training and test pairs (see the module docstring).

  Args:
    train_lr, train_hr, test_lr, test_hr: uint8 images; each HR image is `scale` times its LR image.
    scale: the upscaling factor.
    tile: the LR tile size of the training and validation splits.
    val_fraction: fraction of the tiles moved to the validation split, drawn from `seed`.
  """
  _check_scale(scale)
  if not isinstance(tile, (int, np.integer)) or tile < 1:
    raise KDJaxError(f"The LR tile size must be a positive integer, got {tile!r}.")
  if not 0.0 <= float(val_fraction) < 1.0:
    raise KDJaxError(f"val_fraction must be in [0, 1), got {val_fraction}.")
  for lr_set, hr_set, what in ((train_lr, train_hr, "training"), (test_lr, test_hr, "test")):
    for i, (lr, hr) in enumerate(zip(lr_set, hr_set)):
      if lr.ndim != 3 or hr.ndim != 3 or hr.shape != (lr.shape[0] * scale, lr.shape[1] * scale, lr.shape[2]):
        raise KDJaxError(f"{what} pair {i} of {name!r}: HR shape {hr.shape} is not {scale}x the LR shape "
                         f"{lr.shape}; each HR image must be exactly `scale` times its LR image.")
  tiles = tile_grid([lr.shape for lr in train_lr], tile)
  if len(tiles) == 0:
    raise KDJaxError(f"No training image of {name!r} holds one {tile * scale}-pixel HR tile; lower "
                     "config.data.tile_size or add larger images.")
  order = np.random.default_rng([seed_entropy(seed), _VAL_STREAM]).permutation(len(tiles))
  n_val = int(round(val_fraction * len(tiles)))
  val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
  if len(train_rows) == 0:
    raise KDJaxError(f"val_fraction={val_fraction} leaves no training tiles out of {len(tiles)}.")
  frozen = lambda images: tuple(_read_only(image) for image in images)
  train_lr, train_hr = frozen(train_lr), frozen(train_hr)
  patches = lambda rows: PatchPairs(train_lr, train_hr, _read_only(tiles[rows]), int(tile), int(scale))
  channels = int(train_lr[0].shape[-1])
  return Dataset(name=name, train=patches(train_rows), val=patches(val_rows),
                 test=PairedImages(frozen(test_lr), frozen(test_hr), tuple(test_names) or tuple(
                     f"image{i}" for i in range(len(test_lr))), int(scale)),
                 num_classes=0, image_shape=(int(tile), int(tile), channels), task="super_resolution",
                 info={"scale": int(scale), "tile": int(tile), "channels": channels})


# ---------------------------------------------------------------------------------------------------
# The embedded photos.


def photo(name: str) -> np.ndarray:
  """One embedded photo as uint8 [H, W, 3] (greyscale images repeated over three channels)."""
  if name.startswith("sklearn:"):
    from sklearn.datasets import load_sample_image  # pylint: disable=g-import-not-at-top
    image = load_sample_image(name.split(":", 1)[1])
  else:
    try:
      import skimage.data  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise KDJaxError("The embedded SR photos come from scikit-image: `pip install scikit-image` "
                       "(kd_jax's own install does this).") from e
    image = getattr(skimage.data, name)()
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def load_photos(*, scale: int = 2, tile: int = 48, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
  """The embedded SR dataset ('sr_photos'): `PHOTOS_TRAIN` tiled for training and validation, the whole
  `PHOTOS_TEST` images for testing, LR made by MATLAB-style bicubic downscaling (see the module docstring)."""
  _check_scale(scale)
  train_lr, train_hr = make_pairs([photo(n) for n in PHOTOS_TRAIN], scale)
  test_lr, test_hr = make_pairs([photo(n) for n in PHOTOS_TEST], scale)
  return sr_dataset("sr_photos", train_lr, train_hr, test_lr, test_hr, scale=scale, tile=tile,
                    val_fraction=val_fraction, seed=seed, test_names=PHOTOS_TEST)


# ---------------------------------------------------------------------------------------------------
# Folders of images prepared by the user.


def read_image(path: str) -> np.ndarray:
  """An image file as uint8 [H, W, 3] (greyscale and palette images converted to RGB, alpha dropped)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"), np.uint8)
  except OSError as e:
    raise KDJaxError(f"Cannot read image {path!r}: {e}.") from e


def _image_files(folder: str, what: str) -> List[str]:
  if not folder or not os.path.isdir(os.path.expanduser(folder)):
    raise KDJaxError(f"{what} folder {folder!r} does not exist. " + FOLDER_LAYOUT)
  folder = os.path.expanduser(folder)
  files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise KDJaxError(f"{what} folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}). " + FOLDER_LAYOUT)
  return [os.path.join(folder, f) for f in files]


FOLDER_LAYOUT = ("Expected layout: an HR folder of images (e.g. DIV2K_train_HR/0001.png or Set5/HR/baby.png) "
                 "and optionally an LR folder for the scale whose files have the HR file's name, or that name "
                 "with 'x<scale>' appended before the extension (DIV2K_train_LR_bicubic/X2/0001x2.png); without "
                 "an LR folder the LR images are made by bicubic downscaling.")


def read_pairs(hr_dir: str, lr_dir: str, scale: int, what: str) -> Tuple[list, list, list]:
  """`(LR images, HR images, names)` of a folder pair (`lr_dir` '' = make LR by bicubic downscaling).

  An HR image up to `scale − 1` pixels larger than `scale ×` its LR image is cropped at the bottom and right
  (`modcrop`); any other size disagreement is an error naming both files.
  """
  _check_scale(scale)
  hr_files = _image_files(hr_dir, f"{what} HR")
  names = [os.path.splitext(os.path.basename(f))[0] for f in hr_files]
  hr_images = [read_image(f) for f in hr_files]
  if not lr_dir:
    lr_images, hr_images = make_pairs(hr_images, scale)
    return list(lr_images), list(hr_images), names
  lr_files = {os.path.splitext(os.path.basename(f))[0]: f for f in _image_files(lr_dir, f"{what} LR")}
  lr_images, kept_hr = [], []
  for name, hr_file, hr in zip(names, hr_files, hr_images):
    lr_file = lr_files.get(name) or lr_files.get(f"{name}x{scale}")
    if lr_file is None:
      raise KDJaxError(f"No LR image for {hr_file!r} in {lr_dir!r} (looked for {name} and {name}x{scale} with an "
                       f"image extension). " + FOLDER_LAYOUT)
    lr = read_image(lr_file)
    h, w = lr.shape[0] * scale, lr.shape[1] * scale
    if not (h <= hr.shape[0] < h + scale and w <= hr.shape[1] < w + scale):
      raise KDJaxError(f"HR image {hr_file!r} is {hr.shape[1]}x{hr.shape[0]} but its LR image {lr_file!r} is "
                       f"{lr.shape[1]}x{lr.shape[0]}, which at scale {scale} needs an HR image of {w}x{h}; is the "
                       f"LR folder for another scale?")
    lr_images.append(lr)
    kept_hr.append(np.ascontiguousarray(hr[:h, :w]))
  return lr_images, kept_hr, names


def from_folders(hr_dir: str, *, test_hr_dir: str, scale: int, lr_dir: str = "", test_lr_dir: str = "",
                 tile: int = 96, val_fraction: float = 0.02, seed: int = 0, name: str = "sr_folders") -> Dataset:
  """An SR dataset from image folders: training pairs from `hr_dir` (+ `lr_dir`), test pairs from
  `test_hr_dir` (+ `test_lr_dir`). See `FOLDER_LAYOUT`; e.g. DIV2K training with Set5 testing:

      from_folders('DIV2K/DIV2K_train_HR', lr_dir='DIV2K/DIV2K_train_LR_bicubic/X2',
                   test_hr_dir='benchmark/Set5/HR', test_lr_dir='benchmark/Set5/LR_bicubic/X2', scale=2)
  """
  train_lr, train_hr, _ = read_pairs(hr_dir, lr_dir, scale, "Training")
  test_lr, test_hr, names = read_pairs(test_hr_dir, test_lr_dir, scale, "Test")
  return sr_dataset(name, train_lr, train_hr, test_lr, test_hr, scale=scale, tile=tile,
                    val_fraction=val_fraction, seed=seed, test_names=names)


# ---------------------------------------------------------------------------------------------------
# tfds.


def load_div2k(*, scale: int, data_dir: Optional[str] = None, tile: int = 96, val_fraction: float = 0.02,
               seed: int = 0) -> Dataset:
  """DIV2K from tfds' `div2k/bicubic_x<scale>` array_record build (read with `tfds.data_source`, no
  TensorFlow): its 800 'train' pairs tiled for training, its 100 'validation' pairs as the test split.

  Whole splits are read into memory as uint8 (about 6 GB for the ×2 training pairs).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if scale not in (2, 3, 4, 8):
    raise KDJaxError(f"tfds div2k has bicubic builds for scales 2, 3, 4 and 8, not {scale}.")
  builder = f"div2k/bicubic_x{scale}"
  pairs = {}
  for split in ("train", "validation"):
    try:
      source = tfds.data_source(builder, split=split, data_dir=data_dir, download=False)
      examples = [source[i] for i in range(len(source))]
    except Exception as e:  # tfds raises many types when a build is missing
      raise KDJaxError(f"tfds {builder!r} (split {split!r}) is not prepared in {data_dir or 'the default data_dir'} "
                       f"as array_record files. On a machine with internet run `tfds build {builder} "
                       f"--file_format=array_record`, copy the data_dir here and pass --config.data.data_dir=DIR; "
                       f"or use data.name='sr_folders' with the DIV2K PNGs. (tfds said: {type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]})") from e
    lr = [np.asarray(ex["lr"], np.uint8) for ex in examples]
    hr = [np.ascontiguousarray(np.asarray(ex["hr"], np.uint8)[:l.shape[0] * scale, :l.shape[1] * scale])
          for ex, l in zip(examples, lr)]
    pairs[split] = (lr, hr)
  return sr_dataset("div2k", *pairs["train"], *pairs["validation"], scale=scale, tile=tile,
                    val_fraction=val_fraction, seed=seed)


def load_sr_dataset(name: str, *, scale: int, tile: int, val_fraction: float, seed: int, data_dir: str = "",
                    hr_dir: str = "", lr_dir: str = "", test_hr_dir: str = "", test_lr_dir: str = "") -> Dataset:
  """The SR dataset `name` ('sr_photos', 'sr_folders' or 'div2k') with the config's settings."""
  if name == "sr_photos":
    return load_photos(scale=scale, tile=tile, val_fraction=val_fraction, seed=seed)
  if name == "sr_folders":
    if not hr_dir or not test_hr_dir:
      raise KDJaxError("data.name='sr_folders' reads data.hr_dir (training) and data.test_hr_dir (testing), "
                       "with data.lr_dir / data.test_lr_dir optional. " + FOLDER_LAYOUT)
    return from_folders(hr_dir, lr_dir=lr_dir, test_hr_dir=test_hr_dir, test_lr_dir=test_lr_dir, scale=scale,
                        tile=tile, val_fraction=val_fraction, seed=seed)
  if name == "div2k":
    return load_div2k(scale=scale, data_dir=data_dir or None, tile=tile, val_fraction=val_fraction, seed=seed)
  raise KDJaxError(f"Unknown super-resolution dataset {name!r}; known: {', '.join(SR_DATASETS)}.")


def _check_scale(scale: int) -> None:
  if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
    raise KDJaxError(f"The SR scale must be an integer >= 2, got {scale!r}.")


def _read_only(a: np.ndarray) -> np.ndarray:
  view = np.ascontiguousarray(a).view()  # a view: the caller's own array stays writable
  view.setflags(write=False)
  return view
