"""The streaming input pipeline (kd_jax.data.streaming): JPEGs from a tfds build, decoded and augmented on the
host, batches a pure function of (seed, step, rows) whatever the worker count, and a run on them that trains,
evaluates and resumes bit-identically."""

import dataclasses
import io
import math
import os
import shutil

import chex
import numpy as np
import pytest
from PIL import Image

from kd_jax import data as kd_data
from kd_jax import models
from kd_jax.data import streaming
from kd_jax.data.testing import build_jpeg_dataset
from kd_jax.errors import KDJaxError
from kd_jax.train import checkpoint as ckpt
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train.run import load_data

from helpers import small_config

SIZE = 32  # crops of 32 x 32: a tiny model trains on them in a few steps


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory):
  """40 training and 10 validation JPEGs of sides 24..96, 3 classes, built once for the module."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  name = build_jpeg_dataset(data_dir)
  return data_dir, "tfds:" + name


@pytest.fixture(scope="module")
def dataset(jpeg_dir):
  data_dir, name = jpeg_dir
  return kd_data.load_dataset(name, data_dir=data_dir, val_fraction=0.2, seed=0, image_size=SIZE)


def _batches(split, **kwargs):
  with streaming.train_batches(split, 8, **kwargs) as stream:
    return list(stream)


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    chex.assert_trees_all_equal(x, y)


def test_the_dataset_carves_validation_from_train_and_reports_tfds_validation_as_test(dataset, jpeg_dir):
  assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (32, 8, 10)
  assert dataset.num_classes == 3 and dataset.image_shape == (SIZE, SIZE, 3)
  assert dataset.test.source.split == "validation" and dataset.val.source.split == "train"
  assert not set(dataset.train.positions) & set(dataset.val.positions)
  # Stratified: 40 examples of 3 classes (14, 13, 13) give 8 validation examples as (3, 3, 2) or so.
  assert sorted(np.bincount(dataset.val.labels, minlength=3)) == [2, 3, 3]
  # The labels were read once and cached beside the build; a whole number of examples is a valid val_fraction.
  data_dir, name = jpeg_dir
  assert os.path.isfile(os.path.join(data_dir, "synthetic_jpeg", "tiny", "1.0.0", "kd_jax-labels-train.npy"))
  assert len(kd_data.load_dataset(name, data_dir=data_dir, val_fraction=6, image_size=SIZE).val) == 6
  batch = dataset.val.get(np.arange(3))
  assert batch["image"].shape == (3, SIZE, SIZE, 3) and batch["image"].dtype == np.float32
  np.testing.assert_array_equal(batch["label"], dataset.val.labels[:3])


def test_batches_do_not_depend_on_the_worker_count(dataset):
  in_process = _batches(dataset.train, seed=3, start=0, stop=6)
  workers = _batches(dataclasses.replace(dataset.train, num_workers=2, prefetch=3), seed=3, start=0, stop=6)
  _assert_same(in_process, workers)
  # The batch of step s holds the examples `batch_indices` picks, each augmented afresh per step.
  for step, batch in enumerate(in_process):
    np.testing.assert_array_equal(batch["index"], kd_data.batch_indices(32, 8, seed=3, step=step))
  assert not np.array_equal(in_process[0]["image"], dataset.train.get(in_process[0]["index"])["image"])


def test_a_stream_opened_at_step_s_is_the_tail_of_the_uninterrupted_stream(dataset):
  whole = _batches(dataset.train, seed=1, start=0, stop=7)
  _assert_same(_batches(dataset.train, seed=1, start=3, stop=7), whole[3:])
  assert not np.array_equal(_batches(dataset.train, seed=2, start=0, stop=1)[0]["image"], whole[0]["image"])


def test_two_processes_rows_concatenate_to_the_one_process_batch(dataset):
  whole = _batches(dataset.train, seed=0, start=2, stop=5)
  first = _batches(dataset.train, seed=0, start=2, stop=5, rows=slice(0, 4))
  second = _batches(dataset.train, seed=0, start=2, stop=5, rows=slice(4, 8))
  for w, a, b in zip(whole, first, second):
    for key in w:
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), w[key])


def test_eval_batches_cover_the_split_in_order_padded_with_a_mask(dataset):
  batches = list(kd_data.eval_batches(dataset.test, 4))
  assert [b["mask"].tolist() for b in batches] == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches])[:10], np.arange(10))
  np.testing.assert_array_equal(batches[2]["index"], [8, 9, 8, 8])
  chex.assert_trees_all_equal(batches[1]["image"], dataset.test.get(np.arange(4, 8))["image"])


def test_random_resized_crop_respects_its_bounds_and_falls_back_to_a_centre_crop():
  rng = np.random.default_rng(0)
  for _ in range(1000):  # any image: the box lies inside it
    height, width = (int(s) for s in rng.integers(1, 600, 2))
    top, left, h, w = streaming.random_resized_crop_box(height, width, rng)
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
  # On a 400 x 400 image: areas spread over [0.08, 1] of it, ratios over [3/4, 4/3] (up to the rounding of
  # the sides to whole pixels), as many wide boxes as tall ones (a square image rejects both alike).
  boxes = np.array([streaming.random_resized_crop_box(400, 400, rng) for _ in range(2000)])
  areas, ratios = boxes[:, 2] * boxes[:, 3] / 400 ** 2, boxes[:, 3] / boxes[:, 2]
  assert np.all((areas > 0.08 * 0.97) & (areas <= 1.0)) and areas.min() < 0.09 and areas.max() > 0.95
  assert np.all((ratios > 0.75 * 0.99) & (ratios < 4 / 3 * 1.01)) and ratios.min() < 0.76 and ratios.max() > 1.32
  assert np.mean(ratios > 1) == pytest.approx(0.5, abs=0.05)
  assert np.mean(areas < 0.3) == pytest.approx((0.3 - 0.08) / 0.92, abs=0.05)  # small boxes always fit: uniform
  # A panorama no box of ratio <= 4/3 and area >= 8% fits often: the fallback is the centred 4:3 window.
  class Never:  # a Generator whose draws always ask for the whole area at ratio 4/3, which cannot fit
    def uniform(self, low, high):
      return high
  assert streaming.random_resized_crop_box(10, 1000, Never()) == (0, 493, 10, 13)
  assert streaming.random_resized_crop_box(1000, 10, Never()) == (493, 0, 13, 10)


def _png(pixels):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")  # lossless, so the expected pixels are exact
  return buffer.getvalue()


def test_eval_view_resizes_the_shorter_side_to_256_and_crops_the_centre_224():
  pixels = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
  # By hand: 300 x 400 -> shorter side 224 / 0.875 = 256, longer side int(256 * 400 / 300) = 341; the centre
  # 224 square starts at row round(32 / 2) = 16, column round(117 / 2) = 58.
  assert streaming.eval_resize_shape(300, 400, 224) == (256, 341)
  assert streaming.centre_crop_origin(256, 341, 224) == (16, 58)
  resized = np.asarray(Image.fromarray(pixels).resize((341, 256), Image.BILINEAR))
  np.testing.assert_array_equal(streaming.eval_view(_png(pixels), 224), resized[16:240, 58:282])
  # A portrait image: its width is the shorter side.
  assert streaming.eval_resize_shape(500, 375, 224) == (341, 256)


def test_train_view_is_the_drawn_crop_resized_then_maybe_mirrored():
  pixels = np.random.default_rng(1).integers(0, 256, (120, 90, 3), dtype=np.uint8)
  flips = []
  for k in range(40):
    out = streaming.train_view(_png(pixels), 24, np.random.default_rng(k))
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    rng = np.random.default_rng(k)
    top, left, h, w = streaming.random_resized_crop_box(120, 90, rng)
    crop = np.asarray(Image.fromarray(pixels[top:top + h, left:left + w]).resize((24, 24), Image.BILINEAR))
    flipped = rng.random() < 0.5
    np.testing.assert_array_equal(out, crop[:, ::-1] if flipped else crop)
    flips.append(flipped)
  assert 0 < sum(flips) < 40


def test_a_missing_build_says_how_to_prepare_it(tmp_path):
  with pytest.raises(KDJaxError, match=r"tfds build imagenet2012 --file_format=array_record"):
    kd_data.load_dataset("imagenet2012", data_dir=str(tmp_path))


def _config(jpeg_dir, **overrides):
  data_dir, name = jpeg_dir
  return small_config(**{"data.name": name, "data.data_dir": data_dir, "data.image_size": SIZE,
                         "data.val_fraction": 0.2, "batch_size": 8, "eval_batch_size": 8, "epochs": 2,
                         "data.flip": True, "max_steps": 0, "log_every_steps": 4, **overrides})


def test_a_padded_crop_is_refused_and_the_flip_is_done_on_the_host_only(jpeg_dir):
  with pytest.raises(KDJaxError, match=r"random-resized crops.*crop_pad=0"):
    load_data(_config(jpeg_dir, **{"data.crop_pad": 4}))
  assert load_data(_config(jpeg_dir, **{"data.flip": True})).train.flip
  assert not load_data(_config(jpeg_dir, **{"data.flip": False})).train.flip


def test_a_run_on_streamed_data_trains_evaluates_and_resumes_bit_identically(tmp_path, jpeg_dir):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  result = train_and_evaluate(_config(jpeg_dir, keep_checkpoints=2), straight)  # 2 epochs of 4 steps
  assert result["steps"] == 8 and 0.0 <= result["test_accuracy"] <= 1.0 and math.isfinite(result["val_nll"])
  # The run as a preemption after epoch 1 leaves it (one run fewer to compile than stopping one by max_steps):
  # its files with the last checkpoint gone; the same command resumes from epoch 1's and streams from step 4.
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "8"))
  again = train_and_evaluate(_config(jpeg_dir, keep_checkpoints=2), resumed)
  assert os.path.isdir(os.path.join(resumed, "checkpoints", "8"))  # epoch 2 was trained again
  assert again["steps"] == 8
  sample = np.zeros((1, SIZE, SIZE, 3), np.float32)
  load = lambda w: ckpt.load_exported_model(w, models.create_model("cnn_tiny", 3), sample)
  chex.assert_trees_all_equal(load(resumed), load(straight))
  assert again["test_accuracy"] == result["test_accuracy"] and again["val_nll"] == result["val_nll"]
