"""Segmentation with a privileged modality (METHODS.md item 15a): metrics, task, losses, data, models, runs."""

from __future__ import annotations

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kd_jax import distillers, losses, metrics, models, tasks
from kd_jax import data as kd_data
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.train import sharding
from kd_jax.train import run as kd_run
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train.teachers import Teachers

from helpers import segmentation_config


@pytest.fixture(scope="module")
def tiles():
  images, labels, _ = kd_data.buildings_arrays(num_tiles=40, size=16)
  return kd_data.from_segmentation_arrays(images, labels, num_classes=3, seed=0, name="tiles",
                                          channel_names=("red", "green", "blue", "sar"))


_config = segmentation_config


def _out(logits):
  return ModelOutput(prediction=jnp.asarray(logits), stages=(), preact_stages=(), embedding=jnp.zeros((1, 1)))


# ---------------------------------------------------------------------------------------------------
# Metric.


def _numpy_iou(pred, label, k, ignore=255):
  keep = label != ignore
  p, t = pred[keep], label[keep]
  iou = []
  for c in range(k):
    inter, union = np.sum((p == c) & (t == c)), np.sum((p == c) | (t == c))
    iou.append(inter / union if union else np.nan)
  return np.nanmean(iou), np.array(iou)


def test_mean_iou_equals_numpy_and_hand_values_and_confusions_add_exactly():
  rng = np.random.default_rng(0)
  label = rng.integers(0, 4, (6, 5, 7))
  label[rng.random(label.shape) < 0.2] = 255
  pred = np.where(rng.random(label.shape) < 0.6, np.where(label == 255, 0, label), rng.integers(0, 4, label.shape))
  miou, iou = metrics.mean_iou(pred, label, num_classes=5)
  ref_miou, ref_iou = _numpy_iou(pred, label, 5)
  np.testing.assert_allclose(iou, ref_iou)
  assert np.isnan(iou[4]) and miou == pytest.approx(ref_miou)
  whole = np.asarray(metrics.confusion_matrix(pred, label, num_classes=5))
  parts = sum(np.asarray(metrics.confusion_matrix(pred[i:i + 2], jnp.asarray(label[i:i + 2]), num_classes=5))
              for i in range(0, 6, 2))
  np.testing.assert_array_equal(parts, whole)
  assert whole.sum() == np.sum(label != 255)
  # By hand: class 0: 1 hit, union 1; class 1: 1 hit, union 2; class 2 predicted once, never labelled: 0.
  hand_miou, hand = metrics.mean_iou(np.array([[0, 1], [1, 2]]), np.array([[0, 1], [255, 1]]), num_classes=4)
  np.testing.assert_allclose(hand[:3], [1.0, 0.5, 0.0])
  assert np.isnan(hand[3]) and hand_miou == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------
# Task: ignore pixels and padding rows count nowhere; views.


def test_loss_and_eval_sums_skip_ignore_pixels_and_padding_rows():
  task = tasks.Segmentation(num_classes=3)
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(3, 4, 4, 3)), jnp.float32)
  label = rng.integers(0, 3, (3, 4, 4)).astype(np.int32)
  label[0, :2] = 255
  other = label.copy()
  other[0, :2] = rng.integers(0, 3, (2, 4))  # what the ignored pixels are labelled must not matter ...
  batch = lambda l: {"label": jnp.asarray(np.where(l == 255, 255, l)), "mask": jnp.asarray([1.0, 1.0, 0.0])}
  log_p = jax.nn.log_softmax(logits)
  valid = label != 255
  nll = -np.take_along_axis(np.asarray(log_p), np.where(valid, label, 0)[..., None], -1)[..., 0]
  assert float(task.loss(logits, batch(label))) == pytest.approx(nll[valid].mean(), rel=1e-5)
  # ... once they are ignored: compare logits that differ only there.
  bumped = logits.at[0, :2].add(5.0)
  assert float(task.loss(bumped, batch(label))) == pytest.approx(float(task.loss(logits, batch(label))), rel=1e-6)
  sums = task.eval_sums(logits, batch(label))
  pred = np.argmax(np.asarray(logits), -1)
  keep = label[:2]
  ref = metrics.mean_iou(pred[:2], keep, num_classes=3)
  out = task.metrics(jax.device_get(sums))
  assert out["miou"] == pytest.approx(ref[0]) and out["iou_1"] == pytest.approx(ref[1][1], nan_ok=True)
  assert out["pixel_accuracy"] == pytest.approx(np.mean(pred[:2][keep != 255] == keep[keep != 255]))


@dataclasses.dataclass(frozen=True)
class _FlippedViews(distillers.Distiller):
  """Pixel KD on a mirrored copy of the batch's images through `ctx.forward` (as HE-DA and R2KD run theirs)."""

  def loss(self, variables, student, teacher, batch, ctx):
    other_student, other_teacher = ctx.forward(batch["image"][:, :, ::-1])
    if isinstance(other_teacher, tuple):
      (other_teacher,) = other_teacher
    return losses.pixel_kd(other_student.logits, other_teacher.logits, None, 1.0), {}, {}


def test_channel_views_and_a_teacher_that_receives_eo_and_sar(tiles, monkeypatch):
  monkeypatch.setitem(distillers.DISTILLERS, "flipped_views", _FlippedViews)
  config = _config()
  task = tasks.task_for(config, tiles)
  batch = {k: jnp.asarray(v) for k, v in tiles.train.get(np.arange(2)).items()}
  assert task.inputs(batch).shape[-1] == 3 and task.teacher_inputs(batch).shape[-1] == 4
  np.testing.assert_array_equal(task.teacher_inputs(batch), batch["image"])
  np.testing.assert_array_equal(task.inputs(batch), batch["image"][..., :3])
  # A teacher built for 4 channels can only run if the distill step gives it all four.
  teacher = models.create_model("unet_tiny", num_classes=3)
  variables = teacher.init(jax.random.PRNGKey(1), task.teacher_inputs(batch))
  config.loss = ml_collections.ConfigDict({"supervised": {"weight": 1.0}, "pixel_kd": {"weight": 1.0},
                                           "fitnet": {"weight": 1.0, "stage": -1},
                                           "flipped_views": {"weight": 1.0}})
  run = kd_run.build_run(config, tiles, teachers=(Teachers((teacher,), (1.0,), (False,)), (variables,)),
                         mesh=sharding.make_mesh(jax.devices()[:1]))
  state = kd_run.init_state(run)
  step = kd_run.make_step(run, state, 0)
  state, m = step(state, kd_data.train_batch(tiles.train, 8, seed=0, step=0), run.teacher_variables)
  assert np.isfinite(float(m["pixel_kd/loss"])) and np.isfinite(float(m["fitnet/loss"]))
  # ctx.forward gives each model its own channels of other images (EO to the student, EO+SAR to the teacher).
  assert np.isfinite(float(m["flipped_views/loss"]))
  # The student's first conv sees 3 channels.
  assert state.params["enc0_conv0"]["kernel"].shape[2] == 3


def test_bad_channel_index_and_bad_labels_are_refused(tiles):
  with pytest.raises(KDJaxError, match="4 channel"):
    tasks.task_for(_config(**{"data.teacher_channels": (0, 4)}), tiles)
  images, labels, _ = kd_data.buildings_arrays(num_tiles=6, size=16)
  labels[2, 0, 0] = 7
  with pytest.raises(KDJaxError, match=r"\[0, 3\)"):
    kd_data.from_segmentation_arrays(images, labels, num_classes=3)
  labels[2, 0, 0] = 255  # the ignore label is fine
  kd_data.from_segmentation_arrays(images, labels, num_classes=3)


# ---------------------------------------------------------------------------------------------------
# Losses.


def _kl_rows(s, t, temp):
  ls = s / temp - np.log(np.sum(np.exp(s / temp), -1, keepdims=True))
  lt = t / temp - np.log(np.sum(np.exp(t / temp), -1, keepdims=True))
  return np.sum(np.exp(lt) * (lt - ls), -1)


def test_cwd_equals_a_numpy_reimplementation():
  rng = np.random.default_rng(2)
  s, t = rng.normal(size=(2, 3, 5, 4)) * 2, rng.normal(size=(2, 3, 5, 4)) * 2
  for temp in (1.0, 4.0):
    rows = lambda z: np.moveaxis(z, -1, 1).reshape(2 * 4, 15)
    ref = np.sum(_kl_rows(rows(s), rows(t), temp)) * temp**2 / (2 * 4)
    assert float(losses.cwd(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temp)) == pytest.approx(ref, rel=1e-5)


def test_pixel_kd_equals_kd_when_all_valid_and_ignores_invalid_pixels():
  rng = np.random.default_rng(3)
  s, t = (jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32) for _ in range(2))
  label = jnp.asarray(rng.integers(0, 3, (2, 4, 4)), jnp.int32)
  kd = distillers.make_distiller("kd", temperature=2.0)
  pkd = distillers.make_distiller("pixel_kd", temperature=2.0)
  a = float(pkd({}, _out(s), _out(t), {"label": label})[0])
  assert a == pytest.approx(float(kd({}, _out(s), _out(t), {"label": label})[0]), rel=1e-6)
  ignored = label.at[0, 0].set(255)
  per_pixel = _kl_rows(np.asarray(s), np.asarray(t), 2.0) * 4.0
  keep = np.asarray(ignored) != 255
  b = float(pkd({}, _out(s), _out(t), {"label": ignored})[0])
  assert b == pytest.approx(per_pixel[keep].mean(), rel=1e-5)
  changed = s.at[0, 0].add(3.0)  # logits at ignored pixels do not matter
  assert float(pkd({}, _out(changed), _out(t), {"label": ignored})[0]) == pytest.approx(b, rel=1e-6)


# ---------------------------------------------------------------------------------------------------
# Data.


def test_generator_is_deterministic_and_sar_is_informative_under_clouds():
  a = kd_data.buildings_arrays(num_tiles=60)
  b = kd_data.buildings_arrays(num_tiles=60)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  images, labels, clouds = a
  assert clouds.mean() > 0.05 and set(np.unique(labels)) == {0, 1, 2}
  under = clouds & (labels != 2)
  building = labels == 1
  eo, sar = images[..., :3].mean(-1), images[..., 3]
  # Under clouds the EO brightness barely separates buildings from ground; SAR does.
  eo_gap = abs(eo[under & building].mean() - eo[under & ~building].mean()) / eo[under].std()
  sar_gap = (sar[under & building].mean() - sar[under & ~building].mean()) / sar[under].std()
  assert eo_gap < 0.2 and sar_gap > 1.0


def test_folder_loader_reads_stacks_and_refuses_bad_layouts(tmp_path):
  for d in ("images", "masks", "sar"):
    (tmp_path / d).mkdir()
  rng = np.random.default_rng(4)
  for stem in ("a", "b"):
    np.save(tmp_path / "images" / f"{stem}.npy", rng.random((8, 8, 3)).astype(np.float32))
    np.save(tmp_path / "masks" / f"{stem}.npy", rng.integers(0, 2, (8, 8)))
    np.save(tmp_path / "sar" / f"{stem}.npy", rng.random((8, 8)).astype(np.float32))
  images, labels, names = kd_data.read_segmentation_folders(str(tmp_path))
  assert images.shape == (2, 8, 8, 4) and labels.shape == (2, 8, 8) and names[-1] == "sar0"
  np.save(tmp_path / "sar" / "c.npy", np.zeros((8, 8)))
  with pytest.raises(KDJaxError, match="stems"):
    kd_data.read_segmentation_folders(str(tmp_path))
  os.remove(tmp_path / "sar" / "c.npy")
  np.save(tmp_path / "masks" / "b.npy", np.zeros((4, 8), np.int64))
  with pytest.raises(KDJaxError, match="does not match"):
    kd_data.read_segmentation_folders(str(tmp_path))
  with pytest.raises(KDJaxError, match="does not exist"):
    kd_data.read_segmentation_folders(str(tmp_path / "nowhere"))


# ---------------------------------------------------------------------------------------------------
# Runs.


def _exported(workdir):
  import orbax.checkpoint as ocp
  return jax.tree.map(np.asarray, ocp.StandardCheckpointer().restore(os.path.join(workdir, "model")))


def test_a_privileged_teacher_run_then_a_student_run_resumes_bit_identically(tmp_path, tiles):
  teacher = str(tmp_path / "teacher")
  result = train_and_evaluate(_config(**{"student.model": "unet_small", "data.student_channels": (0, 1, 2, 3),
                                         "max_steps": 1}), teacher, dataset=tiles)
  assert 0.0 <= result["test_miou"] <= 1.0
  loss = ml_collections.ConfigDict({"supervised": {"weight": 1.0}, "pixel_kd": {"weight": 1.0}})
  student = lambda steps: _config(loss=loss, max_steps=steps, **{"teacher.workdir": teacher})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(student(5), straight, dataset=tiles)  # 3 steps per epoch: crosses the epoch checkpoint
  train_and_evaluate(student(4), resumed, dataset=tiles)
  train_and_evaluate(student(5), resumed, dataset=tiles)
  chex.assert_trees_all_equal(_exported(resumed), _exported(straight))


def test_eight_devices_match_one(tiles):
  assert jax.device_count() == 8
  config = _config(loss=ml_collections.ConfigDict({
      "supervised": {"weight": 1.0}, "pixel_kd": {"weight": 1.0}, "cwd": {"weight": 1.0},
      "fitnet": {"weight": 1.0, "stage": 2}}))
  config.batch_size = 8
  config.optim.name, config.optim.lr = "sgd", 0.05  # Adam's normalisation would magnify float reordering noise
  task = tasks.task_for(config, tiles)
  batch = {k: jnp.asarray(v) for k, v in tiles.train.get(np.arange(1)).items()}
  teacher = models.create_model("unet_small", num_classes=3)
  teachers = (Teachers((teacher,), (1.0,), (False,)), (teacher.init(jax.random.PRNGKey(3), task.teacher_inputs(batch)),))

  def steps(devices):
    mesh = sharding.make_mesh(devices)
    run = kd_run.build_run(config, tiles, mesh=mesh, teachers=teachers)
    state = kd_run.init_state(run)
    step = kd_run.make_step(run, state, 0)
    out = []
    for i in range(2):
      b = sharding.shard_batch(kd_data.train_batch(tiles.train, 8, seed=0, step=i), mesh)
      state, m = step(state, b, run.teacher_variables)
      out.append([float(m[k]) for k in ("loss", "pixel_kd/loss", "cwd/loss", "fitnet/loss")])
    return np.array(out), jax.device_get(state)

  one, state_1 = steps(jax.devices()[:1])
  eight, state_8 = steps(jax.devices())
  assert np.all(np.isfinite(one))
  np.testing.assert_allclose(eight, one, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(state_8.params, state_1.params, rtol=1e-5, atol=1e-5)
