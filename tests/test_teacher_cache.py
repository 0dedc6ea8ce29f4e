"""The teacher-output cache: exact (same losses and parameters as the live teacher), reused, invalidated, refused
where it cannot be exact."""

import dataclasses
import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kd_jax
from kd_jax import data as kd_data
from kd_jax import distillers, models
from kd_jax.errors import KDJaxError
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import optim, sharding
from kd_jax.train import teacher_cache as tc
from kd_jax.train.loop import prepare_distiller, train_and_evaluate
from kd_jax.train import create_train_state, train_step
from kd_jax.train.teachers import Teachers, teacher_logits

from helpers import small_config, train_teacher

KD = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 2.0}}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
  return train_teacher(tmp_path_factory, digits, max_steps=10, **{"optim.lr": 0.1})


def _teacher(digits, teacher_dir, temperature=1.0):
  module = models.create_model("cnn_small", 10)
  variables = (ckpt.load_exported_model(teacher_dir, module, digits.train.get(np.arange(1))["image"]),)
  return Teachers((module,), (temperature,), (False,)), variables


def _live_and_cached_steps(digits, teachers, teacher_vars, loss, cache, *, flip, num_steps=3):
  """`num_steps` train steps of cnn_tiny from one initial state, with the live teacher and with `cache`.

  Returns (live losses, live state, cached losses, cached state, losses of the first cached step with the
  two flip views swapped, a deliberately wrong cache).
  """
  mesh = sharding.make_mesh(jax.devices()[:1])
  config = small_config()
  student = models.create_model("cnn_tiny", 10)
  sample = kd_data.train_batch(digits.train, 32, seed=0, step=0)
  distiller = distillers.from_config(loss)
  schedule = optim.learning_rate_schedule(config.optim, 10, 100)
  tx = optim.make_optimizer(config.optim, schedule)
  initial = create_train_state(jax.random.PRNGKey(0), student, distiller, tx,
                               {k: jnp.asarray(v) for k, v in sample.items()}, teachers, teacher_vars)
  bound = functools.partial(train_step, student=student, teachers=teachers, distiller=distiller, tx=tx,
                            schedule=schedule, steps_per_epoch=10, flip=flip)
  steps = {False: jax.jit(bound), True: jax.jit(functools.partial(bound, teacher_cache=cache.layout))}
  placed_vars = sharding.replicate(teacher_vars, mesh)

  def run(cached, n, swap_views=False):
    state, losses = sharding.replicate(initial, mesh), []
    for i in range(n):
      batch = kd_data.train_batch(digits.train, 32, seed=0, step=i)
      if cached:
        rows = cache.gather(batch["index"])
        batch.update({k: v[:, ::-1] for k, v in rows.items()} if swap_views else rows)
      state, metrics = steps[cached](state, sharding.shard_batch(batch, mesh), placed_vars)
      losses.append(float(metrics["loss"]))
    return np.array(losses), jax.device_get(state)

  live_losses, live = run(False, num_steps)
  cached_losses, cached = run(True, num_steps)
  wrong = run(True, 1, swap_views=True)[0] if flip else None
  return live_losses, live, cached_losses, cached, wrong


@pytest.mark.parametrize("flip", [False, True])
def test_cached_step_equals_live_step(digits, teacher_dir, tmp_path, flip):
  # A calibration temperature != 1 checks the cached logits are divided as Teachers.__call__ does; FitNet
  # (with flip) checks cached stages.
  teachers, teacher_vars = _teacher(digits, teacher_dir, temperature=1.7)
  loss = dict(KD, fitnet={"weight": 1.0, "stage": 0}) if flip else KD
  config = small_config(**{"data.flip": flip, "teacher.cache_fields": ("stages",) if flip else ()})
  cache = tc.open_cache(config, teachers, teacher_vars, digits.train, str(tmp_path), sharding.make_mesh())
  assert cache.layout.views == (2 if flip else 1)
  assert cache.layout.fields == (("logits", "stages") if flip else ("logits",))
  live_losses, live, cached_losses, cached, wrong = _live_and_cached_steps(
      digits, teachers, teacher_vars, loss, cache, flip=flip)
  np.testing.assert_allclose(cached_losses, live_losses, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(cached.params, live.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(cached.distiller_params, live.distiller_params, rtol=1e-5, atol=1e-6)
  assert live_losses[-1] != live_losses[0]
  if flip:  # the test can tell the views apart: the wrong one gives another loss
    assert abs(wrong[0] - live_losses[0]) > 1e-4


def test_cached_run_equals_uncached_run_and_is_reused_on_resume(digits, teacher_dir, tmp_path):
  overrides = {"teacher.workdir": teacher_dir, "loss": KD, "data.flip": True, "max_steps": 3}
  plain = train_and_evaluate(small_config(**overrides), str(tmp_path / "plain"), dataset=digits)
  workdir = str(tmp_path / "cached")
  first = train_and_evaluate(small_config(**overrides, **{"teacher.cache": True}), workdir, dataset=digits)
  assert first["teacher_cache"]["built"] and first["teacher_cache"]["views"] == 2
  np.testing.assert_allclose(first["test_nll"], plain["test_nll"], rtol=1e-5)
  assert first["test_accuracy"] == plain["test_accuracy"]
  entry = first["teacher_cache"]["directory"]
  mtime = os.path.getmtime(os.path.join(entry, "meta.json"))
  # Resumed for more steps: the entry is read back, not rebuilt.
  resumed = train_and_evaluate(small_config(**{**overrides, "teacher.cache": True, "max_steps": 4}), workdir,
                               dataset=digits)
  assert not resumed["teacher_cache"]["built"] and resumed["teacher_cache"]["key"] == first["teacher_cache"]["key"]
  assert os.path.getmtime(os.path.join(entry, "meta.json")) == mtime
  assert resumed["steps"] == 4


def test_new_teacher_or_data_gives_a_new_entry_and_removes_the_stale_one(digits, teacher_dir, tmp_path, capsys):
  teachers, teacher_vars = _teacher(digits, teacher_dir)
  config, mesh, directory = small_config(), sharding.make_mesh(), str(tmp_path)
  first = tc.open_cache(config, teachers, teacher_vars, digits.train, directory, mesh)
  again = tc.open_cache(config, teachers, teacher_vars, digits.train, directory, mesh)
  assert first.built and not again.built and again.directory == first.directory
  np.testing.assert_array_equal(again.logits(), first.logits())

  changed_vars = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 1e-3 if "'fc'" in jax.tree_util.keystr(path) else x, teacher_vars)
  capsys.readouterr()
  new_teacher = tc.open_cache(config, teachers, changed_vars, digits.train, directory, mesh)
  assert new_teacher.built and new_teacher.directory != first.directory
  assert "teacher or data changed" in capsys.readouterr().out
  assert not os.path.exists(first.directory) and sorted(os.listdir(directory)) == [os.path.basename(new_teacher.directory)]
  assert not np.allclose(new_teacher.logits(), first.logits())

  images = np.array(digits.train.images)
  images[0] = images[0][:, ::-1]
  new_data = tc.open_cache(config, teachers, changed_vars, dataclasses.replace(digits.train, images=images),
                           directory, mesh)
  assert new_data.built and new_data.directory != new_teacher.directory


def _nudge(entry, name, delta_of_scale):
  """Adds `delta_of_scale` x (the stored array's largest magnitude) to one stored value of example 0."""
  path = os.path.join(entry, tc._array_file(name))
  stored = np.load(path, mmap_mode="r+")
  scale = float(np.max(np.abs(stored)))
  stored[0, 0, 0] += np.float32(delta_of_scale * scale)
  stored.flush()
  del stored


def test_reused_entry_is_checked_against_a_recomputation_of_its_first_batch(digits, teacher_dir, tmp_path, capsys):
  # What the key cannot see (the code computing the teacher changed) shows as stored values that a fresh
  # pass does not reproduce; a difference of float-reassociation size is tolerated.
  teachers, teacher_vars = _teacher(digits, teacher_dir)
  config, mesh, directory = small_config(), sharding.make_mesh(), str(tmp_path)
  first = tc.open_cache(config, teachers, teacher_vars, digits.train, directory, mesh)
  with open(os.path.join(first.directory, "meta.json")) as f:
    assert json.load(f)["versions"] == {"kd_jax": kd_jax.__version__, "jax": jax.__version__}
  name = "teacher_cache/0/logits"
  expected = first.logits()

  _nudge(first.directory, name, 0.5 * tc._REUSE_RTOL["float32"])
  tolerated = tc.open_cache(config, teachers, teacher_vars, digits.train, directory, mesh)
  assert not tolerated.built and tolerated.logits()[0, 0, 0] != expected[0, 0, 0]

  _nudge(first.directory, name, 1.5 * tc._REUSE_RTOL["float32"])  # 2x the tolerance in all
  capsys.readouterr()
  rebuilt = tc.open_cache(config, teachers, teacher_vars, digits.train, directory, mesh)
  out = capsys.readouterr().out
  assert rebuilt.built and rebuilt.directory == first.directory
  assert "does not hold what this code computes" in out and name in out and f"jax {jax.__version__}" in out
  np.testing.assert_array_equal(rebuilt.logits(), expected)
  assert sorted(os.listdir(directory)) == [os.path.basename(first.directory)]


def test_gather_picks_rows_by_index_and_logits_match_a_live_pass(digits, teacher_dir, tmp_path):
  teachers, teacher_vars = _teacher(digits, teacher_dir)
  cache = tc.open_cache(small_config(**{"data.flip": True}), teachers, teacher_vars, digits.train, str(tmp_path),
                        sharding.make_mesh())
  idx = np.array([5, 0, 17, 5])
  images = digits.train.get(idx)["image"]
  rows = cache.gather(idx)["teacher_cache/0/logits"]
  assert rows.shape == (4, 2, 10)
  module, variables = teachers.modules[0], teacher_vars[0]
  np.testing.assert_allclose(rows[:, 0], module.apply(variables, images, train=False).logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(rows[:, 1], module.apply(variables, images[:, :, ::-1], train=False).logits,
                             rtol=1e-5, atol=1e-5)


def test_crop_pad_and_pruned_copy_are_refused(digits, teacher_dir, tmp_path):
  base = {"teacher.workdir": teacher_dir, "loss": KD, "teacher.cache": True}
  with pytest.raises(KDJaxError, match=r"config\.data\.crop_pad"):
    train_and_evaluate(small_config(**base, **{"data.crop_pad": 2}), str(tmp_path / "crop"), dataset=digits)
  with pytest.raises(KDJaxError, match=r"pruned_copy_rate"):
    train_and_evaluate(small_config(**base, **{"teacher.pruned_copy_rate": 0.1}), str(tmp_path / "pruned"),
                       dataset=digits)
  assert not os.path.exists(tmp_path / "crop" / "teacher_cache")


def test_distiller_reading_uncached_stages_is_refused_before_building(digits, teacher_dir, tmp_path):
  config = small_config(**{"teacher.workdir": teacher_dir, "teacher.cache": True,
                           "loss": {"ce": {"weight": 1.0}, "fitnet": {"weight": 1.0, "stage": 0}}})
  with pytest.raises(KDJaxError, match=r"'stages'.*config\.teacher\.cache_fields"):
    train_and_evaluate(config, str(tmp_path / "run"), dataset=digits)
  assert not os.path.exists(tmp_path / "run" / "teacher_cache")


def test_too_large_a_cache_is_refused(digits, teacher_dir, tmp_path):
  teachers, teacher_vars = _teacher(digits, teacher_dir)
  config = small_config(**{"teacher.cache_fields": ("stages", "preact_stages"), "teacher.cache_max_gb": 1e-4})
  with pytest.raises(KDJaxError, match=r"cache_max_gb"):
    tc.open_cache(config, teachers, teacher_vars, digits.train, str(tmp_path), sharding.make_mesh())
  assert not os.listdir(tmp_path)  # refused before anything was written


def test_full_pass_users_read_the_cache(digits, teacher_dir, tmp_path):
  # Energy KD's thresholds (prepare_distiller) and the calibration temperature come out the same from the
  # cache; calibration on the val split builds (once) a logits-only entry of that split.
  teachers, teacher_vars = _teacher(digits, teacher_dir)
  config = small_config(**{"teacher.workdir": teacher_dir, "teacher.cache": True})
  mesh = sharding.make_mesh()
  os.makedirs(tmp_path / "plain"), os.makedirs(tmp_path / "cached")
  cache = tc.open_cache(config, teachers, teacher_vars, digits.train, str(tmp_path / "cache"), mesh)
  distiller = distillers.from_config({"energy_kd": {"weight": 1.0}})
  plain = prepare_distiller(distiller, teachers, teacher_vars, digits, config, str(tmp_path / "plain"))
  cached = prepare_distiller(distiller, teachers, teacher_vars, digits, config, str(tmp_path / "cached"),
                             teacher_cache=cache)
  (_, _, plain_term), = plain.terms
  (_, _, cached_term), = cached.terms
  assert plain_term.energy_low is not None
  np.testing.assert_allclose([cached_term.energy_low, cached_term.energy_high],
                             [plain_term.energy_low, plain_term.energy_high], rtol=1e-5)

  val_logits = tc.calibration_logits(cache, config, teachers, teacher_vars, digits, str(tmp_path), mesh)
  live_logits, _ = teacher_logits(teachers, teacher_vars, kd_data.eval_batches(digits.val, 64))
  np.testing.assert_allclose(val_logits, live_logits, rtol=1e-5, atol=1e-5)
  assert len(os.listdir(tmp_path / "teacher_cache" / "val")) == 1
  config.teacher.calibration_split = "train"
  np.testing.assert_array_equal(tc.calibration_logits(cache, config, teachers, teacher_vars, digits,
                                                      str(tmp_path), mesh), cache.logits())


def test_phases_on_teacher_batch_statistics_run_the_teacher_live(digits, teacher_dir, tmp_path, capsys):
  from kd_jax.train import phases as kd_phases
  teachers, teacher_vars = _teacher(digits, teacher_dir)
  config = small_config(**{"teacher.workdir": teacher_dir, "teacher.cache": True, "loss": KD,
                           "phases": ({"name": "bn", "epochs": 1, "teacher_batch_statistics": True},)})
  phases = kd_phases.resolve_phases(config)
  phase_distillers = [distillers.from_config(p.loss) for p in phases]
  sample = kd_data.train_batch(digits.train, 32, seed=0, step=0)
  student = models.create_model("cnn_tiny", 10)
  cache = tc.open_for_run(config, teachers, teacher_vars, digits, phases, phase_distillers, student, sample,
                          str(tmp_path), sharding.make_mesh())
  assert cache is None and not os.path.exists(tmp_path / "teacher_cache")
  assert "phase 'bn' runs its teachers on batch statistics" in capsys.readouterr().out
  # The same run without that phase flag uses the cache.
  config.phases = ({"name": "main", "epochs": 1},)
  cache = tc.open_for_run(config, teachers, teacher_vars, digits, kd_phases.resolve_phases(config),
                          phase_distillers, student, sample, str(tmp_path), sharding.make_mesh())
  assert cache is not None and cache.built


def test_bench_tool_runs_and_reports_every_figure():
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench_teacher_cache.py")
  spec = importlib.util.spec_from_file_location("bench_teacher_cache", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  result = bench.main(["--teacher", "cnn_tiny", "--student", "mlp_small", "--image-size", "8", "--channels", "1",
                       "--num-classes", "10", "--examples", "64", "--batch", "32", "--eval-batch", "32",
                       "--rounds", "1", "--steps", "1", "--json"])
  assert result["cache_bytes"] == 64 * 2 * 10 * 4  # examples x flip views x classes x float32
  for key in ("student_step_s", "kd_step_live_s", "kd_step_cached_s", "cache_build_s", "cache_reuse_s"):
    assert result[key] > 0
