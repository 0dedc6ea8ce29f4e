"""The regression task, its data, models, pseudo-label losses and distiller: metrics against numpy, the labeled
mask, splits, errors, a resumed run, and 8 devices against 1."""

import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kd_jax import cli, distillers, losses, models
from kd_jax import data as kd_data
from kd_jax import tasks
from kd_jax.config import apply_overrides, base_config, set_value
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.train import sharding
from kd_jax.train import run as kd_run
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train.teachers import Teachers

MEAN, STD = (10.0, -2.0, 0.5), (4.0, 0.5, 2.0)


def _task(norm="l2", mean=MEAN, std=STD):
  return tasks.Regression(norm=norm, target_mean=mean, target_std=std)


def _out(prediction):
  return ModelOutput(prediction=jnp.asarray(prediction), stages=(), preact_stages=(), embedding=jnp.zeros((1, 1)))


@pytest.fixture(scope="module")
def diabetes():
  return kd_data.load_regression_dataset("diabetes", labeled_fraction=0.2, seed=0)


def _config(**overrides):
  c = base_config()
  c.task = "regression"
  c.data.name = "diabetes"
  c.data.labeled_fraction = 0.2
  c.student.model = "regression_mlp_small"
  c.loss = ml_collections.ConfigDict({"supervised": {"weight": 1.0}})
  c.optim.name, c.optim.lr, c.optim.schedule = "adamw", 3e-3, "cosine"
  c.batch_size, c.eval_batch_size, c.epochs = 32, 64, 2
  c.log_every_steps, c.progress_bar = 3, False
  for key, value in overrides.items():
    set_value(c, key, value)
  return c


# ---------------------------------------------------------------------------------------------------
# The task: metrics in original units, exact sums, the labeled mask.


def test_vector_metrics_equal_numpy_in_original_units_and_padding_rows_count_nowhere():
  rng = np.random.default_rng(0)
  task = _task()
  z = rng.normal(size=(6, 3)).astype(np.float32)               # standardised predictions
  target = rng.normal(size=(6, 3)).astype(np.float32) * 3 + 1  # original units
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
  target[4:] = 1e6                                             # padding rows: absurd values must not count
  sums = task.eval_sums(jnp.asarray(z), {"target": target, "mask": mask, "labeled": np.zeros(6, np.float32)})
  pred = z * np.array(STD) + np.array(MEAN)
  err = (pred - target)[:4]
  got = task.metrics(sums)
  np.testing.assert_allclose(got["rmse"], np.sqrt(np.mean(err**2)), rtol=1e-5)
  np.testing.assert_allclose(got["mae"], np.mean(np.abs(err)), rtol=1e-5)
  assert set(got) == {"rmse", "mae"}
  # Sums of two batches add up to the sums of one.
  halves = [task.eval_sums(jnp.asarray(z[i:i + 2]), {"target": target[i:i + 2], "mask": np.ones(2, np.float32)})
            for i in (0, 2)]
  total = jax.tree.map(lambda a, b: a + b, *halves)
  np.testing.assert_allclose(task.metrics(total)["rmse"], got["rmse"], rtol=1e-6)


def test_dense_metrics_exclude_non_positive_targets_and_padding():
  rng = np.random.default_rng(1)
  task = _task(mean=(2.0,), std=(0.5,))
  z = rng.normal(size=(3, 4, 5, 1)).astype(np.float32)
  target = rng.uniform(0.5, 4.0, size=(3, 4, 5, 1)).astype(np.float32)
  target[0, 0, :2] = 0.0     # invalid pixels: excluded from AbsRel and δ
  target[1, 2, 3] = -1.0
  z[0, 1, 1] = -10.0         # a non-positive prediction on a valid pixel: a miss for δ
  mask = np.array([1, 1, 0], np.float32)
  got = task.metrics(task.eval_sums(jnp.asarray(z), {"target": target, "mask": mask}))
  pred = (z * 0.5 + 2.0)[:2]
  t = target[:2]
  valid = t > 0
  np.testing.assert_allclose(got["rmse"], np.sqrt(np.mean((pred - t) ** 2)), rtol=1e-5)
  np.testing.assert_allclose(got["mae"], np.mean(np.abs(pred - t)), rtol=1e-5)
  np.testing.assert_allclose(got["abs_rel"], np.mean(np.abs(pred - t)[valid] / t[valid]), rtol=1e-5)
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.maximum(pred / t, t / pred)
  hits = (ratio < 1.25) & (pred > 0)
  np.testing.assert_allclose(got["delta1"], np.mean(hits[valid]), rtol=1e-6)
  assert 0.0 < got["delta1"] < 1.0


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_the_supervised_loss_reads_labeled_examples_only(norm):
  rng = np.random.default_rng(2)
  task = _task(norm)
  z = rng.normal(size=(5, 3)).astype(np.float32)
  target = rng.normal(size=(5, 3)).astype(np.float32)
  labeled = np.array([1, 0, 1, 0, 1], np.float32)
  term = distillers.make_distiller("supervised")
  value = term({}, _out(z), None, {"target": target, "labeled": labeled}, task=task)[0]
  error = z - (target - np.array(MEAN)) / np.array(STD)
  per = np.mean(error**2 if norm == "l2" else np.abs(error), axis=1)
  np.testing.assert_allclose(value, per[labeled > 0].mean(), rtol=1e-5)
  changed = target.copy()
  changed[[1, 3]] += 100.0  # unlabeled targets: nothing changes
  assert float(term({}, _out(z), None, {"target": changed, "labeled": labeled}, task=task)[0]) == float(value)
  # No labeled example: 0, not NaN.
  assert float(task.loss(jnp.asarray(z), {"target": target, "labeled": np.zeros(5, np.float32)})) == 0.0


# ---------------------------------------------------------------------------------------------------
# Pseudo-label losses and the distiller.


def test_pseudo_label_loss_equals_hand_computed_values():
  s = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]], np.float32)
  t = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 1.0]], np.float32)
  np.testing.assert_allclose(losses.pseudo_label_loss(s, t), np.mean([(1 + 4) / 2, (1 + 4) / 2, 4 / 2]), rtol=1e-6)
  np.testing.assert_allclose(losses.pseudo_label_loss(s, t, norm="l1"), np.mean([1.5, 1.5, 1.0]), rtol=1e-6)
  w, m = np.array([0.5, 2.0, 1.0]), np.array([1.0, 1.0, 0.0])
  np.testing.assert_allclose(losses.pseudo_label_loss(s, t, weights=w, mask=m), (0.5 * 2.5 + 2.0 * 2.5) / 2.5,
                             rtol=1e-6)
  assert float(losses.pseudo_label_loss(s, t, mask=np.zeros(3))) == 0.0


def test_ensemble_confidence_is_exp_of_minus_the_teachers_variance_over_tau():
  p = np.random.default_rng(3).normal(size=(3, 4, 2, 2)).astype(np.float32)
  expected = np.exp(-p.var(axis=0).reshape(4, -1).mean(axis=1) / 0.7)
  np.testing.assert_allclose(losses.ensemble_confidence(jnp.asarray(p), 0.7), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="at least 2 teachers"):
    losses.ensemble_confidence(jnp.asarray(p[:1]), 0.7)


def test_the_distiller_masks_averages_teachers_weights_and_differentiates_the_student_only():
  rng = np.random.default_rng(4)
  s, t1, t2 = (rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3))
  labeled = np.array([1, 0, 0, 1], np.float32)
  batch = {"labeled": labeled}
  mean = (t1 + t2) / 2
  per = np.mean((s - mean) ** 2, axis=1)
  term = distillers.make_distiller("pseudo_label", on="unlabeled")
  value, _, _ = term({}, _out(s), (_out(t1), _out(t2)), batch)
  np.testing.assert_allclose(value, per[[1, 2]].mean(), rtol=1e-5)
  ens = distillers.make_distiller("pseudo_label", weighting="ensemble", tau=0.5, norm="l1")
  value, metrics, _ = ens({}, _out(s), (_out(t1), _out(t2)), batch)
  w = np.exp(-np.mean(np.var(np.stack([t1, t2]), axis=0), axis=1) / 0.5)
  l1 = np.mean(np.abs(s - mean), axis=1)
  np.testing.assert_allclose(value, np.sum(w * l1) / np.sum(w), rtol=1e-5)
  np.testing.assert_allclose(metrics["confidence"], w.mean(), rtol=1e-5)
  grads = jax.grad(lambda s, a, b: ens({}, _out(s), (_out(a), _out(b)), batch)[0], argnums=(0, 1, 2))(s, t1, t2)
  assert np.abs(grads[0]).sum() > 0 and not np.any(grads[1]) and not np.any(grads[2])
  with pytest.raises(KDJaxError, match="at least 2 teachers"):
    ens.init(None, _out(s), _out(t1), batch)
  with pytest.raises(KDJaxError, match="weighting must be"):
    distillers.make_distiller("pseudo_label", weighting="mean")


# ---------------------------------------------------------------------------------------------------
# Data.


def test_labeled_subset_split_seeds_and_target_statistics():
  x, y = kd_data.trajectory_arrays(num_agents=300)
  a = kd_data.from_regression_arrays(x, y, labeled_fraction=0.3, seed=1)
  b = kd_data.from_regression_arrays(x, y, labeled_fraction=0.3, seed=1)
  c = kd_data.from_regression_arrays(x, y, labeled_fraction=0.3, seed=2)
  n_train = len(a.train)
  assert a.info["num_labeled"] == int(a.train.arrays["labeled"].sum()) == round(0.3 * n_train)
  np.testing.assert_array_equal(a.train.arrays["labeled"], b.train.arrays["labeled"])
  assert not np.array_equal(a.train.arrays["target"], c.train.arrays["target"])  # another validation carve
  np.testing.assert_array_equal(a.test.arrays["target"], c.test.arrays["target"])  # the same test split
  assert len(a.test) == 60 and a.val.arrays["labeled"].all() and a.test.arrays["labeled"].all()
  labeled_targets = a.train.arrays["target"][a.train.arrays["labeled"] > 0]
  np.testing.assert_allclose(a.info["target_mean"], labeled_targets.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(a.info["target_std"], labeled_targets.std(0), rtol=1e-4)
  assert a.task == "regression" and a.info["target_shape"] == (24,)
  assert set(a.train.get(np.arange(2))) == {"input", "target", "labeled", "index"}


def test_bad_regression_data_is_refused_with_what_to_do():
  x, y = np.ones((20, 3)), np.arange(20.0)
  bad = y.copy()
  bad[7] = np.nan
  with pytest.raises(KDJaxError, match="y_train holds NaN.*row 7"):
    kd_data.from_regression_arrays(x, bad)
  x_inf = x.copy()
  x_inf[3, 1] = np.inf
  with pytest.raises(KDJaxError, match="x_train holds NaN or infinite"):
    kd_data.from_regression_arrays(x_inf, y)
  with pytest.raises(KDJaxError, match="lengths must match"):
    kd_data.from_regression_arrays(x, y[:5])
  with pytest.raises(KDJaxError, match="labeled_fraction must be in"):
    kd_data.from_regression_arrays(x, y, labeled_fraction=0.0)
  with pytest.raises(KDJaxError, match="leaves no test split"):
    kd_data.from_regression_arrays(x, y, test_fraction=0.0)
  with pytest.raises(KDJaxError, match="regression_files"):
    kd_data.load_regression_dataset("digits")


def test_the_trajectories_are_deterministic_and_not_a_linear_function_of_the_past():
  x, y = kd_data.trajectory_arrays(num_agents=400)
  x2, y2 = kd_data.trajectory_arrays(num_agents=400)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  assert x.shape == (400, 8, 2) and y.shape == (400, 24) and not np.any(x[:, -1])
  speeds = np.linalg.norm(np.diff(x, axis=1), axis=-1) / 0.4
  assert 0.3 < np.median(speeds) < 2.2
  features = np.c_[x.reshape(400, -1), np.ones(400)]
  fit, *_ = np.linalg.lstsq(features, y, rcond=None)
  residual = np.sqrt(np.mean((features @ fit - y) ** 2))
  assert residual > 0.2 * y.std(), (residual, y.std())  # a linear fit leaves a large part unexplained


def test_the_regression_models_fit_the_task_and_refuse_classification():
  def shapes(name, num_outputs, x):  # traced, not run: eager RNN initialisation compiles op by op
    model = models.create_model(name, num_outputs=num_outputs)
    return jax.eval_shape(lambda: model.apply(model.init(jax.random.PRNGKey(0), x), x))

  out = shapes("gru_trajectory_small", 24, jnp.zeros((2, 8, 2)))
  assert out.prediction.shape == (2, 24) and out.stages[0].shape == (2, 16) and out.embedding.shape == (2, 16)
  assert shapes("fcn_regressor_small", 1, jnp.zeros((2, 6, 5, 3))).prediction.shape == (2, 6, 5, 1)
  assert shapes("regression_mlp_large", 3, jnp.zeros((2, 10))).prediction.shape == (2, 3)
  with pytest.raises(KDJaxError, match="does not classify"):
    models.create_model("regression_mlp_small", 10)


# ---------------------------------------------------------------------------------------------------
# Runs: the CLI's errors, a bit-identical resume, 8 devices against 1.

CONFIG_FILE = """
from kd_jax.config import base_config

def get_config():
  c = base_config()
  c.task = "regression"
  c.data.name = "regression_files"
  c.data.data_dir = {data_dir!r}
  c.student.model = "regression_mlp_small"
  c.loss = {{"supervised": {{"weight": 1.0}}}}
  c.batch_size, c.epochs, c.progress_bar = 8, 1, False
  return c
"""


def test_the_cli_exits_2_for_nan_data_and_a_missing_folder(tmp_path, capsys):
  folder = tmp_path / "data"
  folder.mkdir()
  y = np.arange(40.0)
  y[3] = np.nan
  np.savez(folder / "train.npz", x=np.ones((40, 2)), y=y)
  (tmp_path / "c.py").write_text(CONFIG_FILE.format(data_dir=str(folder)))
  assert cli.main(["train", "--config", str(tmp_path / "c.py"), "--workdir", str(tmp_path / "r")]) == 2
  assert "y_train holds NaN or infinite values" in capsys.readouterr().err
  (tmp_path / "m.py").write_text(CONFIG_FILE.format(data_dir=str(tmp_path / "nowhere")))
  assert cli.main(["train", "--config", str(tmp_path / "m.py"), "--workdir", str(tmp_path / "s")]) == 2
  err = capsys.readouterr().err
  assert "does not exist" in err and "train.npz" in err and "'x'" in err


def test_config_keys_are_checked():
  with pytest.raises(KDJaxError, match="labeled_fraction must be in"):
    apply_overrides(_config(), ["data.labeled_fraction=1.5"])
  with pytest.raises(KDJaxError, match="regression_loss must be"):
    apply_overrides(_config(), ["data.regression_loss=l3"])


def _exported(workdir):
  import orbax.checkpoint as ocp
  return jax.tree.map(np.asarray, ocp.StandardCheckpointer().restore(os.path.join(workdir, "model")))


def test_a_pseudo_label_run_resumes_bit_identically_and_refuses_a_teacher_of_another_split(tmp_path, diabetes):
  teacher = str(tmp_path / "teacher")
  train_and_evaluate(_config(**{"student.model": "regression_mlp_large", "max_steps": 4}), teacher, dataset=diabetes)
  loss = {"supervised": {"weight": 0.5}, "pseudo_label": {"weight": 0.5, "on": "unlabeled"}}
  student = lambda steps: _config(loss=ml_collections.ConfigDict(loss), max_steps=steps,
                                  **{"teacher.workdir": teacher})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  result = train_and_evaluate(student(14), straight)  # 9 steps per epoch: crosses the epoch-1 checkpoint
  assert result["steps"] == 14 and np.isfinite(result["test_rmse"]) and "test_mae" in result
  train_and_evaluate(student(7), resumed)
  train_and_evaluate(student(14), resumed)
  chex.assert_trees_all_equal(_exported(resumed), _exported(straight))
  # A student on another labeled subset predicts in other units: the teacher is refused.
  other = _config(**{"teacher.workdir": teacher, "data.split_seed": 5, "max_steps": 1})
  other.loss = ml_collections.ConfigDict(loss)
  with pytest.raises(KDJaxError, match="standardised with other statistics"):
    train_and_evaluate(other, str(tmp_path / "other"))


def _random_teachers(dataset):
  modules, variables = [], []
  x = jnp.asarray(dataset.train.get(np.arange(1))["input"])
  for i, name in enumerate(("regression_mlp_large", "regression_mlp_small")):
    module = models.create_model(name, num_outputs=1)
    modules.append(module)
    variables.append(module.init(jax.random.PRNGKey(10 + i), x))
  return Teachers(tuple(modules), (1.0, 1.0), (False, False)), tuple(variables)


def test_eight_devices_match_one_with_ensemble_pseudo_labels_and_fitnet(diabetes):
  assert jax.device_count() == 8
  config = _config(loss=ml_collections.ConfigDict({
      "supervised": {"weight": 0.5},
      "pseudo_label": {"weight": 0.5, "weighting": "ensemble", "tau": 0.5},
      "fitnet": {"weight": 1.0, "stage": -1, "regressor": "conv", "teacher": 0}}))
  teachers = _random_teachers(diabetes)

  def steps(devices):
    mesh = sharding.make_mesh(devices)
    run = kd_run.build_run(config, diabetes, mesh=mesh, teachers=teachers)
    state = kd_run.init_state(run)
    step = kd_run.make_step(run, state, 0)
    out = []
    for i in range(3):
      batch = sharding.shard_batch(kd_data.train_batch(diabetes.train, 32, seed=0, step=i), mesh)
      state, metrics = step(state, batch, run.teacher_variables)
      out.append([float(metrics[k]) for k in ("loss", "fitnet/loss", "pseudo_label/confidence")])
    return np.array(out), jax.device_get(state)

  one, state_1 = steps(jax.devices()[:1])
  eight, state_8 = steps(jax.devices())
  assert np.all(np.isfinite(one)) and one[-1, 0] != one[0, 0] and 0 < one[0, 2] < 1
  np.testing.assert_allclose(eight, one, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(state_8.params, state_1.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(state_8.distiller_params, state_1.distiller_params, rtol=1e-5, atol=1e-6)
