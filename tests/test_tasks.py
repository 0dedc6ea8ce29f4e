"""Tasks: joint augmentation of inputs and targets, the rating-regression task end to end, and logit
distillers on per-pixel logits."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import data as kd_data
from kd_jax import distillers, tasks
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.train.loop import train_and_evaluate

from helpers import small_config


def _upscale(x, s):
  return jnp.repeat(jnp.repeat(x, s, axis=1), s, axis=2)


@pytest.mark.parametrize("pad, flip", [(2, False), (0, True), (3, True)])
def test_joint_augmentation_crops_and_flips_input_and_targets_alike(pad, flip):
  rng = jax.random.PRNGKey(7)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 8, 8, 3))
  mask = jnp.arange(16 * 8 * 8).reshape(16, 8, 8) % 5  # a segmentation mask: [N, H, W] integers
  hr = _upscale(x, 3)                                  # a high-resolution target at 3x
  out = kd_data.augment_jointly(rng, {"image": x, "mask": mask, "hr": hr}, pad=pad, flip=flip,
                                scales={"hr": 3}, fill={"mask": 255})
  # The input is augmented exactly as `augment` does it alone (same draws).
  np.testing.assert_array_equal(out["image"], kd_data.augment(rng, x, pad=pad, flip=flip))
  # The target went through the same crop and flip: it is still the upscaled input, pixel for pixel.
  np.testing.assert_array_equal(out["hr"], _upscale(out["image"], 3))
  # The mask too: the same transform of a mask computed from the image recovers it; padding is the fill.
  keyed = kd_data.augment_jointly(rng, {"image": x, "mask": x[..., 0]}, pad=pad, flip=flip)
  np.testing.assert_array_equal(keyed["mask"], keyed["image"][..., 0])
  assert out["mask"].shape == mask.shape and out["mask"].dtype == mask.dtype
  if pad:
    assert set(np.unique(out["mask"])) <= set(range(5)) | {255}
    assert (np.asarray(out["image"]) == 0).all(axis=-1).any() == (np.asarray(out["mask"]) == 255).any()
  # Something did change (the test would pass for an identity otherwise).
  assert not np.array_equal(out["image"], x)


def test_joint_augmentation_refuses_arrays_of_different_extent():
  with pytest.raises(KDJaxError, match="same area"):
    kd_data.augment_jointly(jax.random.PRNGKey(0), {"a": jnp.zeros((2, 8, 8, 1)), "b": jnp.zeros((2, 16, 16, 1))},
                            pad=1, flip=True)


def _ratings(seed=0, users=60, items=50, rank=3, density=0.5):
  """Low-rank ratings on a 1-5 scale with noise, a random half of the (user, item) pairs observed."""
  rng = np.random.default_rng(seed)
  u, v = rng.normal(size=(users, rank)), rng.normal(size=(items, rank))
  full = np.clip(3.0 + 0.8 * (u @ v.T) + 0.3 * rng.normal(size=(users, items)), 1.0, 5.0)
  pairs = np.argwhere(rng.random((users, items)) < density)
  return pairs[:, 0], pairs[:, 1], full[pairs[:, 0], pairs[:, 1]]


def test_the_rating_task_trains_matrix_factorisation_end_to_end_and_beats_the_mean(tmp_path):
  dataset = kd_data.from_ratings(*_ratings())
  assert dataset.task == "rating" and set(dataset.train.get(np.arange(2))) == {"user", "item", "rating", "index"}
  config = small_config(**{"task": "rating", "student.model": "mf", "loss": {"supervised": {"weight": 1.0}},
                           "optim.name": "adamw", "optim.lr": 0.03, "optim.weight_decay": 0.0,
                           "batch_size": 64, "epochs": 30, "max_steps": 0, "log_every_steps": 20})
  results = train_and_evaluate(config, str(tmp_path / "mf"), dataset=dataset)
  test_ratings = dataset.test.arrays["rating"]
  mean_rmse = float(np.sqrt(np.mean((test_ratings - dataset.train.arrays["rating"].mean()) ** 2)))
  assert results["headline"] == "rmse" and set(results) >= {"test_rmse", "test_mae", "val_rmse"}
  assert results["test_rmse"] < 0.8 * mean_rmse, (results["test_rmse"], mean_rmse)
  assert "| student | mf |" in results["table"] and "test rmse" in results["table"]


def test_a_task_and_dataset_that_do_not_match_are_refused(tmp_path, digits):
  with pytest.raises(KDJaxError, match="holds classification data but config.task is 'rating'"):
    train_and_evaluate(small_config(task="rating"), str(tmp_path / "x"), dataset=digits)
  ratings = kd_data.from_ratings(*_ratings())
  with pytest.raises(KDJaxError, match="Model 'cnn_tiny' \\(student\\) does not fit task 'rating'"):
    train_and_evaluate(small_config(task="rating"), str(tmp_path / "y"), dataset=ratings)


def _pixels(seed, shape=(2, 3, 4, 5)):
  return jax.random.normal(jax.random.PRNGKey(seed), shape) * 2.0


@pytest.mark.parametrize("name, kwargs", [("kd", {}), ("dkd", {}), ("dist", {"temperature": 4.0}), ("ls_kd", {}),
                                          ("ce", {})])
def test_logit_distillers_on_per_pixel_logits_treat_every_pixel_as_an_example(name, kwargs):
  zs, zt = _pixels(0), _pixels(1)
  labels = jax.random.randint(jax.random.PRNGKey(2), zs.shape[:-1], 0, zs.shape[-1])
  out = lambda z: ModelOutput(prediction=z, stages=(), preact_stages=(), embedding=jnp.zeros((2, 1)))
  distiller = distillers.make_distiller(name, **kwargs)
  per_pixel, _, _ = distiller({}, out(zs), out(zt), {"label": labels})
  rows, _, _ = distiller({}, out(zs.reshape(-1, 5)), out(zt.reshape(-1, 5)), {"label": labels.reshape(-1)})
  np.testing.assert_allclose(per_pixel, rows, rtol=1e-6)
  if name == "kd":  # the mean over pixels and batch of T²·KL per pixel, by hand
    t = 4.0
    ps, pt = jax.nn.log_softmax(zs / t), jax.nn.log_softmax(zt / t)
    np.testing.assert_allclose(per_pixel, t * t * np.mean(np.sum(np.exp(pt) * (pt - ps), -1)), rtol=1e-5)


def test_the_supervised_term_is_the_tasks_loss():
  z = _pixels(3, (6, 4))
  out = ModelOutput(prediction=z[:, 0], stages=(), preact_stages=(), embedding=z)
  batch = {"rating": jnp.arange(6.0)}
  value, _, _ = distillers.make_distiller("supervised")({}, out, None, batch, task=tasks.get_task("rating"))
  np.testing.assert_allclose(value, np.mean((np.asarray(z[:, 0]) - np.arange(6.0)) ** 2), rtol=1e-6)
  labels = jnp.array([0, 1, 2, 3, 0, 1])
  logits = ModelOutput(prediction=z, stages=(), preact_stages=(), embedding=z)
  ce = distillers.make_distiller("ce")({}, logits, None, {"label": labels})[0]
  chex.assert_trees_all_close(distillers.make_distiller("supervised")({}, logits, None, {"label": labels})[0], ce)
