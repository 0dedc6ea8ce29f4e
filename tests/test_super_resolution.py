"""The super-resolution task and data: paired crops and flips, whole-image evaluation, the embedded photos,
folders of images, short runs that resume exactly, adversarial distillation from a frozen teacher, and
clear errors for bad input."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import cli
from kd_jax import data as kd_data
from kd_jax import metrics
from kd_jax import models
from kd_jax.data import super_resolution as sr
from kd_jax.data.resize import bicubic_downscale
from kd_jax.errors import KDJaxError
from kd_jax.tasks import get_task
from kd_jax.tasks.super_resolution import paired_crop, paired_flips
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import run as kd_run
from kd_jax.train import sharding
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train.schemes import adversarial
from kd_jax.train.step import apply_train

from helpers import small_config


def _box_down(hr, s):
  """Mean over s×s blocks: an LR image whose every pixel is the average of its HR block."""
  n, h, w, c = hr.shape
  return hr.reshape(n, h // s, s, w // s, s, c).mean(axis=(2, 4))


def _smooth_images(rng, count, size, channels=3):
  """uint8 images with structure at several scales (smoothed noise), as HR training material."""
  images = []
  for _ in range(count):
    x = rng.random((size // 4, size // 4, channels))
    x = np.repeat(np.repeat(x, 4, 0), 4, 1)
    x = 0.5 * x + 0.5 * rng.random((size, size, channels))
    images.append(np.round(x * 255).astype(np.uint8))
  return images


@pytest.fixture(scope="module")
def tiny_sr():
  """A small SR dataset at ×2: 6 training images of 64 pixels (LR tiles of 16), 3 test images of two sizes."""
  rng = np.random.default_rng(0)
  train_lr, train_hr = sr.make_pairs(_smooth_images(rng, 6, 64), 2)
  test_hr = _smooth_images(rng, 2, 40) + _smooth_images(rng, 1, 48)
  test_lr, test_hr = sr.make_pairs(test_hr, 2)
  return sr.sr_dataset("tiny_sr", train_lr, train_hr, test_lr, test_hr, scale=2, tile=16, val_fraction=0.2, seed=0)


def _sr_config(**overrides):
  return small_config(**{"task": "super_resolution", "data.name": "tiny_sr", "data.scale": 2, "data.tile_size": 16,
                         "data.patch_size": 8, "data.flip": True, "student.model": "sr_tiny",
                         "loss": {"supervised": {"weight": 1.0}}, "optim.name": "adamw", "optim.lr": 1e-3,
                         "optim.weight_decay": 0.0, "batch_size": 8, "eval_batch_size": 8, **overrides})


# ---------------------------------------------------------------------------------------------------
# Paired augmentation.


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paired_crops_and_flips_keep_lr_and_hr_aligned(scale):
  rng = np.random.default_rng(scale)
  hr = jnp.asarray(rng.random((6, 12 * scale, 12 * scale, 3)), jnp.float32)
  lr = jnp.asarray(_box_down(np.asarray(hr), scale))
  lr_c, hr_c = paired_crop(jax.random.PRNGKey(0), lr, hr, 5, scale)
  assert lr_c.shape == (6, 5, 5, 3) and hr_c.shape == (6, 5 * scale, 5 * scale, 3)
  np.testing.assert_allclose(_box_down(np.asarray(hr_c), scale), lr_c, atol=1e-6)
  lr_f, hr_f = paired_flips(jax.random.PRNGKey(1), lr_c, hr_c)
  np.testing.assert_allclose(_box_down(np.asarray(hr_f), scale), lr_f, atol=1e-6)
  # The crops land at different places per example, and some examples were flipped or transposed.
  assert len({float(x) for x in lr_c[:, 0, 0, 0]}) > 1
  assert not np.array_equal(np.asarray(lr_f), np.asarray(lr_c))


def test_the_eight_symmetries_are_each_drawn():
  x = jnp.arange(4.0).reshape(1, 2, 2, 1) * jnp.ones((512, 1, 1, 1))
  flipped, _ = paired_flips(jax.random.PRNGKey(0), x, x)
  seen = {tuple(np.asarray(v).ravel()) for v in flipped}
  assert len(seen) == 8  # the dihedral group of the square


def test_the_task_crops_patches_from_tiles_and_refuses_crop_pad(tiny_sr):
  task = get_task("super_resolution").configured(_sr_config().data, tiny_sr)
  assert (task.scale, task.patch_size) == (2, 8)
  batch = {k: jnp.asarray(v) for k, v in tiny_sr.train.get(np.arange(4)).items()}
  out = task.augment(jax.random.PRNGKey(0), batch, flip=True)
  assert out["lr"].shape == (4, 8, 8, 3) and out["hr"].shape == (4, 16, 16, 3)
  with pytest.raises(KDJaxError, match="crop_pad"):
    get_task("super_resolution").configured(_sr_config(**{"data.crop_pad": 4}).data, tiny_sr)
  with pytest.raises(KDJaxError, match="patch_size"):
    get_task("super_resolution").configured(_sr_config(**{"data.patch_size": 17}).data, tiny_sr)


# ---------------------------------------------------------------------------------------------------
# Data.


def test_tiles_cover_training_images_and_validation_shares_no_tile(tiny_sr):
  assert len(tiny_sr.train) + len(tiny_sr.val) == 6 * (32 // 16) ** 2
  train_tiles = {tuple(t) for t in tiny_sr.train.tiles}
  val_tiles = {tuple(t) for t in tiny_sr.val.tiles}
  assert not train_tiles & val_tiles and len(val_tiles) == round(0.2 * 24)
  batch = tiny_sr.train.get([0])
  image, top, left = tiny_sr.train.tiles[0]
  np.testing.assert_array_equal(batch["hr"][0] * 255, tiny_sr.train.hr[image][2 * top:2 * top + 32, 2 * left:2 * left + 32])
  assert batch["lr"].dtype == np.float32 and batch["lr"].max() <= 1.0


def test_whole_test_images_are_evaluated_one_shape_at_a_time(tiny_sr):
  assert [g.tolist() for g in tiny_sr.test.shape_groups()] == [[0, 1], [2]]
  batches = list(kd_data.eval_batches(tiny_sr.test, 8, multiple=2))
  # Two images of 20×20 LR in a batch of 2; one of 24×24 padded to 2 (a multiple of the devices), not to 8.
  assert [b["lr"].shape for b in batches] == [(2, 20, 20, 3), (2, 24, 24, 3)]
  assert [b["mask"].tolist() for b in batches] == [[1.0, 1.0], [1.0, 0.0]]


def test_the_task_metrics_equal_the_per_image_means(tiny_sr):
  """A split's PSNR is the mean over whole images of `kd_jax.metrics.psnr`, padding rows excluded, even
  when a padding row is a perfect reconstruction (PSNR +inf)."""
  task = get_task("super_resolution").configured(_sr_config().data, tiny_sr)
  sums = None
  for batch in kd_data.eval_batches(tiny_sr.test, 8, multiple=2):
    prediction = jnp.asarray(batch["hr"]) * 0.9  # a fixed, imperfect "model" ...
    prediction = jnp.where(jnp.asarray(batch["mask"])[:, None, None, None] > 0, prediction, batch["hr"])  # ... padding perfect
    part = task.eval_sums(prediction, {k: jnp.asarray(v) for k, v in batch.items()})
    sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
  values = [float(metrics.psnr(jnp.asarray(hr[None] / 255.0 * 0.9, jnp.float32), jnp.asarray(hr[None] / 255.0,
                                                                                              jnp.float32), scale=2)[0])
            for hr in tiny_sr.test.hr]
  np.testing.assert_allclose(task.metrics(sums)["psnr"], np.mean(values), rtol=1e-5)


def test_the_embedded_photos_keep_test_photos_out_of_training():
  assert not set(sr.PHOTOS_TEST) & set(sr.PHOTOS_TRAIN)
  dataset = sr.load_photos(scale=4, tile=24)
  assert dataset.task == "super_resolution" and dataset.info["scale"] == 4
  assert dataset.test.names == sr.PHOTOS_TEST
  for lr, hr, name in zip(dataset.test.lr, dataset.test.hr, sr.PHOTOS_TEST):
    assert hr.shape[0] % 4 == 0 and hr.shape[1] % 4 == 0
    np.testing.assert_array_equal(lr, bicubic_downscale(hr, 4))
    np.testing.assert_array_equal(hr, sr.photo(name)[:hr.shape[0], :hr.shape[1]])


def _write_png(path, image):
  from PIL import Image
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path)


def test_folder_pairs_are_read_matched_by_name_and_checked(tmp_path):
  rng = np.random.default_rng(1)
  images = _smooth_images(rng, 3, 32)
  for i, image in enumerate(images):
    _write_png(str(tmp_path / "hr" / f"{i:04d}.png"), image)
    _write_png(str(tmp_path / "lr" / f"{i:04d}x2.png"), bicubic_downscale(image, 2))
  _write_png(str(tmp_path / "test" / "baby.png"), images[0][:30, :26])
  dataset = sr.from_folders(str(tmp_path / "hr"), lr_dir=str(tmp_path / "lr"), test_hr_dir=str(tmp_path / "test"),
                            scale=2, tile=8, val_fraction=0.0)
  assert len(dataset.train) == 3 * 4 and dataset.test.names == ("baby",)
  np.testing.assert_array_equal(dataset.test.lr[0], bicubic_downscale(images[0][:30, :26], 2))
  # The same folders without the LR folder make the LR images by bicubic downscaling: the same pairs.
  made = sr.from_folders(str(tmp_path / "hr"), test_hr_dir=str(tmp_path / "test"), scale=2, tile=8, val_fraction=0.0)
  np.testing.assert_array_equal(made.train.get(np.arange(12))["lr"], dataset.train.get(np.arange(12))["lr"])
  with pytest.raises(KDJaxError, match="does not exist.*Expected layout"):
    sr.from_folders(str(tmp_path / "missing"), test_hr_dir=str(tmp_path / "test"), scale=2)
  for i, image in enumerate(images):  # LR files named as their HR files (BasicSR's benchmark layout)
    _write_png(str(tmp_path / "lr_same" / f"{i:04d}.png"), bicubic_downscale(image, 2))
  with pytest.raises(KDJaxError, match="another scale"):
    sr.from_folders(str(tmp_path / "hr"), lr_dir=str(tmp_path / "lr_same"), test_hr_dir=str(tmp_path / "test"),
                    scale=4)
  _write_png(str(tmp_path / "hr2" / "0009.png"), images[0])
  with pytest.raises(KDJaxError, match="No LR image"):
    sr.from_folders(str(tmp_path / "hr2"), lr_dir=str(tmp_path / "lr"), test_hr_dir=str(tmp_path / "test"), scale=2)


# ---------------------------------------------------------------------------------------------------
# Runs.


def _exported(workdir, dataset):
  return ckpt.load_exported_model(workdir, models.create_model("sr_tiny", scale=2), dataset.train.get([0])["lr"])


def test_a_short_sr_run_trains_and_resumes_bit_identically(tmp_path, tiny_sr):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  config = _sr_config(epochs=4, max_steps=0, log_every_steps=2)  # 2 steps per epoch, 8 steps
  results = train_and_evaluate(config, straight, dataset=tiny_sr)
  assert results["headline"] == "psnr" and np.isfinite(results["test_psnr"]) and 0 < results["test_ssim"] <= 1
  assert "| test psnr | test ssim |" in results["table"]
  train_and_evaluate(_sr_config(epochs=4, max_steps=4, log_every_steps=2), resumed, dataset=tiny_sr)
  again = train_and_evaluate(config, resumed, dataset=tiny_sr)
  assert again["steps"] == 8
  chex.assert_trees_all_equal(_exported(resumed, tiny_sr), _exported(straight, tiny_sr))
  assert again["test_psnr"] == results["test_psnr"]


@pytest.fixture(scope="module")
def sr_teacher(tmp_path_factory, tiny_sr):
  workdir = str(tmp_path_factory.mktemp("sr_teacher"))
  train_and_evaluate(_sr_config(**{"student.model": "edsr_2x16", "max_steps": 2}), workdir, dataset=tiny_sr)
  return workdir


def test_adversarial_distillation_from_a_teacher_calls_the_teachers_maps_real_by_hand(sr_teacher, tiny_sr):
  """Scheme 'adversarial' with a frozen teacher: one discriminator per (stage, pool) tap; the first step's
  discriminator loss equals the hand-computed sum over taps with the teacher's maps as real and the
  student's (through its transfer layer, to the teacher's width) as fake."""
  config = _sr_config(**{"scheme": "adversarial", "teacher.workdir": sr_teacher, "discriminators.stages": (0,),
                         "discriminators.teacher_stages": (1,), "discriminators.pools": (1, 2),
                         "discriminators.widths": (8,), "data.flip": False, "data.patch_size": 0})
  run = kd_run.build_run(config, tiny_sr, mesh=sharding.make_mesh(jax.devices()[:1]))
  assert [t.key for t in run.taps] == ["student_stage0_pool1", "student_stage0_pool2"]
  assert set(run.transfers) == {t.key for t in run.taps}  # sr_tiny (8 channels) → edsr_2x16 (16)
  state = kd_run.init_state(run)
  before = jax.device_get(state)
  host = tiny_sr.train.get(kd_data.batch_indices(len(tiny_sr.train), 8, seed=0, step=0))
  _, step_metrics = kd_run.make_step(run, state, 0)(state, sharding.shard_batch(host, run.mesh), run.teacher_variables)
  student = dict(run.models)["student"]
  out, _ = apply_train(student, before.params["student"], before.batch_stats["student"], jnp.asarray(host["lr"]))
  teacher_out = run.teachers(run.teacher_variables, jnp.asarray(host["lr"]))
  total = 0.0
  for tap in run.taps:
    fake = run.transfers[tap.key].apply({"params": before.params[adversarial.TRANSFER][tap.key]},
                                        adversarial.feature_map(out, 0, tap.pool))
    real = adversarial.feature_map(teacher_out, 1, tap.pool)
    params, stats = before.params["discriminators"][tap.key], before.batch_stats["discriminators"][tap.key]
    s_real, stats = apply_train(run.discriminator, params, stats, real)
    s_fake, _ = apply_train(run.discriminator, params, stats, fake)
    total += float(jnp.mean((1 - s_real) ** 2) + jnp.mean(s_fake ** 2))
  np.testing.assert_allclose(step_metrics["discriminator_loss"], total, rtol=1e-4)


def test_adversarial_teacher_mode_refuses_peers_too(sr_teacher, tiny_sr, tmp_path):
  with pytest.raises(KDJaxError, match="not both"):
    train_and_evaluate(_sr_config(**{"scheme": "adversarial", "teacher.workdir": sr_teacher, "peers": ("sr_tiny",)}),
                       str(tmp_path / "a"), dataset=tiny_sr)


def test_bad_sr_inputs_exit_with_code_2_and_say_what_to_do(tmp_path, capsys):
  config = tmp_path / "sr.py"
  config.write_text("from kd_jax.sr_study import sr_base_config\n\ndef get_config():\n  return sr_base_config()\n")
  base = ["train", "--config", str(config), "--workdir", str(tmp_path / "run")]
  assert cli.main(base + ["--config.data.scale=5"]) == 2
  assert "scale" in capsys.readouterr().err
  assert cli.main(base + ["--config.data.name=sr_folders", "--config.data.hr_dir=" + str(tmp_path / "none"),
                          "--config.data.test_hr_dir=" + str(tmp_path / "none")]) == 2
  assert "Expected layout" in capsys.readouterr().err
  assert cli.main(base + ["--config.data.name=digits"]) == 2
  assert "super-resolution dataset" in capsys.readouterr().err
  assert cli.main(base + ["--config.student.model=resnet20"]) == 2
  assert "does not fit task 'super_resolution'" in capsys.readouterr().err


def test_div2k_reads_tfds_pairs_through_data_source():
  """`data.name='div2k'`: tfds' train pairs tiled for training, its validation pairs whole for testing (tfds'
  mock data source stands in for a prepared build)."""
  import tensorflow_datasets as tfds
  rng = np.random.default_rng(3)
  hr = _smooth_images(rng, 3, 32)
  examples = [{"hr": image, "lr": bicubic_downscale(image, 2)} for image in hr]

  def source(self, split, **kwargs):
    del self, kwargs
    return examples if split == "train" else examples[:1]

  with tfds.testing.mock_data(as_data_source_fn=source):
    dataset = sr.load_div2k(scale=2, tile=8, val_fraction=0.0)
  assert dataset.name == "div2k" and len(dataset.train) == 3 * 4 and len(dataset.test) == 1
  np.testing.assert_array_equal(dataset.test.hr[0], hr[0])
  with pytest.raises(KDJaxError, match="not prepared"):
    sr.load_div2k(scale=2, data_dir="/nonexistent")
  with pytest.raises(KDJaxError, match="scales 2, 3, 4 and 8"):
    sr.load_div2k(scale=5)
