"""FSDP (`config.sharding.params='fsdp'`): parameters, optimizer state and teachers split over 8 devices.

The sharded run must train to the same model as the replicated one, and resume from its own checkpoints.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from kd_jax import data as kd_data
from kd_jax import distillers, models
from kd_jax.errors import KDJaxError
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import optim, sharding
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train import create_train_state
from kd_jax.train.teachers import Teachers

from helpers import small_config, train_teacher


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
  return train_teacher(tmp_path_factory, digits, max_steps=4)


def test_fsdp_spec_splits_the_largest_divisible_dimension():
  assert sharding.fsdp_spec((3, 3, 16, 64), 8, min_size=1) == P(None, None, None, "data")
  assert sharding.fsdp_spec((3, 3, 64, 16), 8, min_size=1) == P(None, None, "data")
  assert sharding.fsdp_spec((64, 64), 8, min_size=1) == P(None, "data")  # ties go to the output features
  assert sharding.fsdp_spec((10, 3), 8, min_size=1) == P()  # nothing divisible: replicated
  assert sharding.fsdp_spec((64,), 8, min_size=1024) == P()  # too small to be worth a collective
  assert sharding.fsdp_spec((), 8, min_size=0) == P()
  assert sharding.fsdp_spec((64, 64), 1, min_size=1) == P()


def test_placed_state_holds_one_eighth_of_each_large_array_per_device(digits, teacher_dir):
  mesh = sharding.make_mesh()
  assert mesh.size == 8
  student = models.create_model("cnn_tiny", 10)
  sample = {k: jnp.asarray(v) for k, v in kd_data.train_batch(digits.train, 32, seed=0, step=0).items()}
  teacher = models.create_model("cnn_small", 10)
  teacher_vars = (ckpt.load_exported_model(teacher_dir, teacher, sample["image"][:1]),)
  distiller = distillers.from_config({"ce": {"weight": 1.0}, "fitnet": {"weight": 1.0, "stage": 0}})
  config = small_config()
  tx = optim.make_optimizer(config.optim, optim.learning_rate_schedule(config.optim, 10, 100))
  state = create_train_state(jax.random.PRNGKey(0), student, distiller, tx, sample,
                             Teachers((teacher,), (1.0,)), teacher_vars)
  placed = jax.device_put(state, sharding.state_shardings(state, mesh, "fsdp", min_size=64))

  checked = 0
  for tree in (placed.params, placed.distiller_params, placed.opt_state):
    for leaf in jax.tree.leaves(tree):
      shard = leaf.addressable_shards[0].data
      if leaf.size >= 64 and any(n % 8 == 0 for n in leaf.shape):
        assert shard.size * 8 == leaf.size, (leaf.shape, shard.shape)
        checked += 1
      else:
        assert leaf.sharding.is_fully_replicated
  assert checked >= 6  # student kernels, the FitNet regressor and their momentum buffers
  for leaf in jax.tree.leaves(placed.batch_stats):
    assert leaf.sharding.is_fully_replicated

  placed_teacher = sharding.place_params(teacher_vars, mesh, "fsdp", min_size=64)
  assert any(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(placed_teacher))


def test_unknown_mode_is_a_clear_error(tmp_path):
  with pytest.raises(KDJaxError, match="sharding.params must be one of replicated, fsdp"):
    sharding.param_shardings({"w": np.zeros((8, 8))}, sharding.make_mesh(), "zero2")
  with pytest.raises(KDJaxError, match="sharding.params must be 'replicated' or 'fsdp'"):
    train_and_evaluate(small_config(**{"sharding.params": "zero2"}), str(tmp_path))


def _kd_config(teacher_dir, **overrides):
  return small_config(**{
      "teacher.model": "cnn_small", "teacher.workdir": teacher_dir,
      "loss": {"ce": {"weight": 0.5}, "kd": {"weight": 0.5}, "fitnet": {"weight": 1.0, "stage": 0}},
      "data.flip": True, "data.crop_pad": 1, "max_steps": 4, "checkpoint_every_epochs": 1, **overrides})


def _exported(workdir):
  return ckpt.load_exported_model(workdir, models.create_model("cnn_tiny", 10), np.zeros((1, 8, 8, 1), np.float32))


def test_fsdp_run_equals_replicated_run_and_resumes(tmp_path, digits, teacher_dir, monkeypatch):
  replicated = train_and_evaluate(_kd_config(teacher_dir), str(tmp_path / "replicated"), dataset=digits)
  placed = []  # what the loop asked to place: proof that the fsdp run really was sharded
  real_place = sharding.place_params
  monkeypatch.setattr(sharding, "place_params", lambda *a, **k: placed.append(real_place(*a, **k)) or placed[-1])
  real_state_shardings = sharding.state_shardings
  monkeypatch.setattr(sharding, "state_shardings",
                      lambda *a, **k: placed.append(real_state_shardings(*a, **k)) or placed[-1])
  fsdp = train_and_evaluate(_kd_config(teacher_dir, **{"sharding.params": "fsdp", "sharding.fsdp_min_size": 64}),
                            str(tmp_path / "fsdp"), dataset=digits)
  assert fsdp["steps"] == replicated["steps"] == 4
  specs = [getattr(leaf, "spec", getattr(getattr(leaf, "sharding", None), "spec", None))
           for tree in placed for leaf in jax.tree.leaves(tree)]
  assert P(None, None, None, "data") in specs  # a conv kernel split by output channels, student or teacher
  expected, got = _exported(tmp_path / "replicated"), _exported(tmp_path / "fsdp")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), expected, got)
  assert abs(fsdp["val_accuracy"] - replicated["val_accuracy"]) < 1e-6

  # Stopped after 2 steps and resumed from the sharded checkpoint, the run ends where the uninterrupted one did.
  resumed_dir = str(tmp_path / "fsdp_resumed")
  fsdp_config = {"sharding.params": "fsdp", "sharding.fsdp_min_size": 64}
  train_and_evaluate(_kd_config(teacher_dir, max_steps=2, **fsdp_config), resumed_dir, dataset=digits)
  train_and_evaluate(_kd_config(teacher_dir, **fsdp_config), resumed_dir, dataset=digits)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), got, _exported(resumed_dir))
