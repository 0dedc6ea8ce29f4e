"""A synthetic tfds dataset of JPEGs, for the streaming pipeline's tests and `tools/bench_input.py`.

`build_jpeg_dataset(data_dir, ...)` writes a tfds build (array_record files, features `image` (JPEG) and
`label`) of photo crops of varied sizes, the layout of tfds `imagenet2012`, without a download and without
TensorFlow. The builder lives here, in an importable module, because tfds registers builders by import and
grain's worker processes (started with 'spawn') must be able to import whatever the pipeline refers to.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Optional, Tuple

import numpy as np
import tensorflow_datasets as tfds

NAME = "synthetic_jpeg"


@dataclasses.dataclass
class JpegConfig(tfds.core.BuilderConfig):
  """What `SyntheticJpeg` generates: example counts, classes, the range of image sides, the JPEG quality."""
  num_train: int = 40
  num_validation: int = 10
  num_classes: int = 3
  sides: Tuple[int, int] = (24, 96)
  fixed_size: Optional[Tuple[int, int]] = None  # (height, width) of every image instead of random sides
  quality: int = 90
  seed: int = 0


class SyntheticJpeg(tfds.core.GeneratorBasedBuilder):
  """Crops of scikit-image's photos, resized to random sizes and stored as JPEGs; label = example id % classes.

  Photo content (not noise) keeps the JPEGs' size and decode cost close to real photographs'.
  """

  VERSION = tfds.core.Version("1.0.0")
  # tfds looks for a checksums file beside a packaged builder's source, which needs `importlib_resources`;
  # this builder downloads nothing, so it has no such file.
  code_path = None
  BUILDER_CONFIGS = [JpegConfig(name="builtin", version="1.0.0")]  # callers pass their own (not "builtin")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=self.builder_config.num_classes)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    splits = {"train": self._generate_examples(c.num_train, 0)}
    if c.num_validation:  # tfds refuses an empty split
      splits["validation"] = self._generate_examples(c.num_validation, 1)
    return splits

  def _generate_examples(self, count: int, stream: int):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from skimage import data as photos  # pylint: disable=g-import-not-at-top

    c = self.builder_config
    sources = [photos.astronaut(), photos.chelsea(), photos.coffee(), photos.rocket()]
    rng = np.random.default_rng([c.seed, stream])
    for i in range(count):
      photo = sources[i % len(sources)]
      if c.fixed_size is not None:
        height, width = c.fixed_size
      else:
        height, width = (int(s) for s in rng.integers(c.sides[0], c.sides[1] + 1, 2))
      # A random window of the photo at least half its size, resized to (width, height).
      ph, pw = photo.shape[:2]
      ch, cw = int(rng.integers(ph // 2, ph + 1)), int(rng.integers(pw // 2, pw + 1))
      top, left = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
      image = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((width, height), Image.BILINEAR)
      buffer = io.BytesIO()
      image.save(buffer, format="JPEG", quality=c.quality)
      buffer.seek(0)
      # tfds stores a file object's bytes as they are (encoding an array would need TensorFlow).
      yield i, {"image": buffer, "label": i % c.num_classes}


def build_jpeg_dataset(data_dir: str, *, config_name: str = "tiny", num_train: int = 40, num_validation: int = 10,
                       num_classes: int = 3, sides: Tuple[int, int] = (24, 96),
                       fixed_size: Optional[Tuple[int, int]] = None, quality: int = 90, seed: int = 0) -> str:
  """Builds (once per `data_dir` and `config_name`) the synthetic JPEG dataset; returns its tfds name,
  `'synthetic_jpeg/<config_name>'`, for `tfds.data_source(name, data_dir=data_dir)` or
  `config.data.name = 'tfds:' + name`."""
  config = JpegConfig(name=config_name, version="1.0.0", num_train=num_train, num_validation=num_validation, num_classes=num_classes,
                      sides=tuple(sides), fixed_size=None if fixed_size is None else tuple(fixed_size),
                      quality=quality, seed=seed)
  builder = SyntheticJpeg(config=config, data_dir=os.path.expanduser(data_dir), file_format="array_record")
  builder.download_and_prepare()
  return f"{NAME}/{config_name}"
