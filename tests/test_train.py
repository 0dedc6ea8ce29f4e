"""The train step on a device mesh, resume, teacher loading and failure handling."""

import dataclasses
import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax import data as kd_data
from kd_jax import distillers, models
from kd_jax.errors import KDJaxError
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import optim, sharding
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train import create_train_state, train_step
from kd_jax.train.teachers import Teachers

from helpers import small_config, train_teacher


_small_config = small_config


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, digits):
  return train_teacher(tmp_path_factory, digits, max_steps=6)


def _run_steps(devices, num_steps, digits, teacher_dir):
  """`num_steps` KD + FitNet steps of cnn_tiny on a mesh over `devices`; returns (losses, final state)."""
  mesh = sharding.make_mesh(devices)
  config = _small_config()
  student = models.create_model("cnn_tiny", 10)
  sample = kd_data.train_batch(digits.train, 32, seed=0, step=0)
  teacher = models.create_model("cnn_small", 10)
  teacher_vars = (ckpt.load_exported_model(teacher_dir, teacher, sample["image"][:1]),)
  teachers = Teachers((teacher,), (1.0,))
  distiller = distillers.from_config({"ce": {"weight": 0.5}, "kd": {"weight": 0.5},
                                      "fitnet": {"weight": 1.0, "stage": 0}})
  schedule = optim.learning_rate_schedule(config.optim, 10, 100)
  tx = optim.make_optimizer(config.optim, schedule)
  state = create_train_state(jax.random.PRNGKey(0), student, distiller, tx,
                             {k: jnp.asarray(v) for k, v in sample.items()}, teachers, teacher_vars)
  state = sharding.replicate(state, mesh)
  teacher_vars = sharding.replicate(teacher_vars, mesh)
  step = jax.jit(functools.partial(train_step, student=student, teachers=teachers, distiller=distiller, tx=tx,
                                   schedule=schedule, steps_per_epoch=10, crop_pad=1, flip=True))
  losses = []
  for i in range(num_steps):
    batch = sharding.shard_batch(kd_data.train_batch(digits.train, 32, seed=0, step=i), mesh)
    state, metrics = step(state, batch, teacher_vars)
    losses.append(float(metrics["loss"]))
  return np.array(losses), jax.device_get(state)


def test_eight_devices_match_one_device(digits, teacher_dir):
  assert jax.device_count() == 8, "conftest.py forces 8 CPU devices"
  losses_1, state_1 = _run_steps(jax.devices()[:1], 3, digits, teacher_dir)
  losses_8, state_8 = _run_steps(jax.devices(), 3, digits, teacher_dir)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.params, state_1.params, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.batch_stats, state_1.batch_stats, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.distiller_params, state_1.distiller_params, rtol=1e-5, atol=1e-5)
  assert losses_1[-1] != losses_1[0]  # the steps did train


def test_batch_sharded_and_state_replicated(digits):
  mesh = sharding.make_mesh()
  batch = sharding.shard_batch(kd_data.train_batch(digits.train, 32, seed=0, step=0), mesh)
  assert batch["image"].sharding.spec == jax.sharding.PartitionSpec("data")
  assert len(batch["image"].addressable_shards) == 8
  assert batch["image"].addressable_shards[0].data.shape[0] == 4
  with pytest.raises(KDJaxError, match="not divisible by the 8 devices"):
    sharding.check_batch_size(30, mesh)


def test_distiller_memory_is_split_across_devices_and_the_rest_replicated():
  from kd_jax.train.step import TrainState
  mesh = sharding.make_mesh()
  state = TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.ones((3,))}, batch_stats={},
                     distiller_params={}, distiller_state={"memory": {"crd": {"bank": jnp.zeros((16, 4))}}},
                     opt_state=(), rng=jax.random.PRNGKey(0))
  placed = jax.device_put(state, sharding.state_shardings(state, mesh))
  bank = placed.distiller_state["memory"]["crd"]["bank"]
  assert bank.sharding.spec == jax.sharding.PartitionSpec("data")
  assert {s.data.shape for s in bank.addressable_shards} == {(2, 4)}  # 16 rows / 8 devices
  assert placed.params["w"].sharding.is_fully_replicated
  bad = state.replace(distiller_state={"memory": {"crd": {"bank": jnp.zeros((12, 4))}}})
  with pytest.raises(KDJaxError, match="multiple of the 8 devices"):
    sharding.state_shardings(bad, mesh)


def test_resume_equals_uninterrupted_run(tmp_path, digits, teacher_dir):
  kd = {"loss": {"ce": {"weight": 0.1}, "kd": {"weight": 0.9}}, "teacher.workdir": teacher_dir,
        "data.crop_pad": 1, "data.flip": True}
  straight = str(tmp_path / "straight")
  train_and_evaluate(_small_config(max_steps=7, **kd), straight, dataset=digits)
  resumed = str(tmp_path / "resumed")
  first = train_and_evaluate(_small_config(max_steps=3, keep_checkpoints=1, **kd), resumed, dataset=digits)
  assert first["steps"] == 3
  second = train_and_evaluate(_small_config(max_steps=7, keep_checkpoints=1, **kd), resumed, dataset=digits)
  assert second["steps"] == 7
  assert ckpt.checkpoint_manager(resumed, 1).all_steps() == [7]  # keep-last-N pruned step 3
  model = models.create_model("cnn_tiny", 10)
  image = digits.train.get(np.arange(1))["image"]
  a = ckpt.load_exported_model(straight, model, image)
  b = ckpt.load_exported_model(resumed, model, image)
  chex.assert_trees_all_equal(a, b)  # bit-identical on CPU
  # Metrics were logged at the run's end (a partial epoch) with the distiller's parts.
  lines = [json.loads(l) for l in open(os.path.join(resumed, "metrics.jsonl"))]
  assert lines[-1]["step"] == 7 and "val/accuracy" in lines[-1] and "train/kd/loss" in lines[-1]
  # Throughput of the epoch's training steps: 4 steps of 32 images in this second call.
  assert lines[-1]["perf/step_ms"] > 0
  assert lines[-1]["perf/images_per_s"] == pytest.approx(4 * 32 / (4 * lines[-1]["perf/step_ms"] / 1e3))
  assert os.path.isdir(os.path.join(resumed, "tb"))


@pytest.mark.parametrize("kernels", ["ynnpack", "xla"])
def test_several_steps_per_call_equal_one_step_per_call(tmp_path, digits, teacher_dir, kernels):
  """config.steps_per_call = 4 (a lax.scan over stacked batches) against 1: the same parameters and logged
  metrics. On 352 training images an epoch of 11 steps leaves 3 steps that do not fill a call (run one per
  call) and the run goes 3 steps into epoch 2; it is also stopped at step 6 and resumed. Bit for bit with
  YNNPACK's CPU convolutions; XLA's own (the default) round differently inside the scanned program (6e-7
  relative after 4 steps of cnn_tiny), so there the check is float32 closeness."""
  digits = dataclasses.replace(digits, train=dataclasses.replace(
      digits.train, images=digits.train.images[:352], labels=digits.train.labels[:352]))
  spe = kd_data.steps_per_epoch(len(digits.train), 32)
  assert spe == 11 and spe % 4 != 0
  kd = {"loss": {"ce": {"weight": 0.1}, "kd": {"weight": 0.9}}, "teacher.workdir": teacher_dir,
        "data.crop_pad": 1, "data.flip": True, "log_every_steps": 5, "cpu_conv_kernels": kernels}
  one = str(tmp_path / "one")
  train_and_evaluate(_small_config(max_steps=spe + 3, **kd), one, dataset=digits)
  four = str(tmp_path / "four")
  train_and_evaluate(_small_config(max_steps=spe + 3, steps_per_call=4, **kd), four, dataset=digits)
  resumed = str(tmp_path / "resumed")
  assert train_and_evaluate(_small_config(max_steps=6, steps_per_call=4, **kd), resumed, dataset=digits)["steps"] == 6
  assert train_and_evaluate(_small_config(max_steps=spe + 3, steps_per_call=4, **kd), resumed,
                            dataset=digits)["steps"] == spe + 3
  model = models.create_model("cnn_tiny", 10)
  image = digits.train.get(np.arange(1))["image"]
  expected = ckpt.load_exported_model(one, model, image)
  same = (chex.assert_trees_all_equal if kernels == "ynnpack" else
          functools.partial(chex.assert_trees_all_close, rtol=1e-4, atol=1e-5))
  same(expected, ckpt.load_exported_model(four, model, image))
  same(expected, ckpt.load_exported_model(resumed, model, image))

  def logged(workdir):  # without the wall-clock figures (perf/*)
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}
            for line in open(os.path.join(workdir, "metrics.jsonl"))]

  # The same epoch means of the training metrics (from the stacked metrics of each call) and validation.
  assert [m["step"] for m in logged(one)] == [spe, spe + 3]
  if kernels == "ynnpack":
    assert logged(four) == logged(one)
  else:
    for a, b in zip(logged(four), logged(one), strict=True):
      assert a.keys() == b.keys() and a["step"] == b["step"]
      np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], rtol=1e-4, atol=1e-6)


def test_stacked_batches_are_split_along_the_batch_axis():
  mesh = sharding.make_mesh()
  batches = [{"image": np.full((16, 2), i, np.float32), "label": np.arange(16) + 100 * i} for i in range(3)]
  placed = sharding.shard_batches(batches, mesh, global_batch_size=16)
  assert placed["image"].shape == (3, 16, 2) and placed["label"].shape == (3, 16)
  np.testing.assert_array_equal(np.asarray(placed["label"]), np.stack([b["label"] for b in batches]))
  for shard in placed["label"].addressable_shards:
    assert shard.data.shape == (3, 16 // mesh.size)  # every device holds its rows of all three batches


def test_teacher_is_frozen_and_checkpoint_mismatch_names_parameter(tmp_path, digits, teacher_dir):
  model = models.create_model("cnn_small", 10)
  image = digits.train.get(np.arange(1))["image"]
  before = ckpt.load_exported_model(teacher_dir, model, image)
  train_and_evaluate(_small_config(**{"loss": {"kd": {"weight": 1.0}}, "teacher.workdir": teacher_dir}),
                     str(tmp_path / "kd"), dataset=digits)
  chex.assert_trees_all_equal(before, ckpt.load_exported_model(teacher_dir, model, image))
  wrong = _small_config(**{"loss": {"kd": {"weight": 1.0}}, "teacher.workdir": teacher_dir,
                           "teacher.model": "cnn_large"})
  with pytest.raises(KDJaxError, match=r"does not fit the configured model: (params|batch_stats)/\S+: model expects"):
    train_and_evaluate(wrong, str(tmp_path / "wrong"), dataset=digits)
  with pytest.raises(KDJaxError, match="teacher.workdir is empty"):
    train_and_evaluate(_small_config(**{"loss": {"kd": {"weight": 1.0}}}), str(tmp_path / "none"),
                       dataset=digits)


@pytest.mark.parametrize("steps_per_call, max_steps", [(1, 4), (4, 6)])  # with 4: steps 3-6 run in one call
def test_nan_stops_run_and_keeps_last_good_checkpoint(tmp_path, digits, steps_per_call, max_steps):
  workdir = str(tmp_path / "nan")
  train_and_evaluate(_small_config(max_steps=2), workdir, dataset=digits)
  x = digits.train.get(np.arange(len(digits.train)))
  x["image"][:] = np.nan
  poisoned = kd_data.from_arrays(x["image"], x["label"], x_test=x["image"][:8], y_test=x["label"][:8],
                                 num_classes=10, val_fraction=0.0)
  with pytest.raises(KDJaxError, match=r"Non-finite .*loss.* at step 3;"):
    train_and_evaluate(_small_config(max_steps=max_steps, steps_per_call=steps_per_call), workdir, dataset=poisoned)
  manager = ckpt.checkpoint_manager(workdir, 3)
  assert manager.latest_step() == 2


def test_truncated_latest_checkpoint_falls_back_to_previous(tmp_path, digits, caplog):
  workdir = str(tmp_path / "trunc")
  spe = kd_data.steps_per_epoch(len(digits.train), 32)
  config = _small_config(max_steps=2 * spe)  # checkpoints at the end of epochs 1 and 2
  config.log_every_steps = spe
  train_and_evaluate(config, workdir, dataset=digits)
  latest = os.path.join(workdir, "checkpoints", str(2 * spe), "state")
  for root, _, files in os.walk(latest):
    for name in files:
      open(os.path.join(root, name), "w").close()  # truncate every file of the newest checkpoint
  manager = ckpt.checkpoint_manager(workdir, 3)
  mesh = sharding.make_mesh()
  template = _template_state(config, digits, mesh)
  state, meta = ckpt.restore_latest(manager, template)
  assert int(state.step) == spe and meta["epoch"] == 1
  assert "unreadable" in caplog.text


def _template_state(config, digits, mesh):
  student = models.create_model(config.student.model, 10)
  distiller = distillers.from_config(config.loss)
  schedule = optim.learning_rate_schedule(config.optim, 10, 100)
  sample = kd_data.train_batch(digits.train, config.batch_size, seed=0, step=0)
  state = create_train_state(jax.random.PRNGKey(0), student, distiller, optim.make_optimizer(config.optim, schedule),
                             {k: jnp.asarray(v) for k, v in sample.items()})
  return sharding.replicate(state, mesh)


def test_several_teachers_reach_distillers_as_a_tuple(digits, teacher_dir, tmp_path):
  from kd_jax.train.teachers import load_teachers
  second = str(tmp_path / "second")
  train_and_evaluate(_small_config(**{"student.model": "mlp_tiny", "max_steps": 2}), second, dataset=digits)
  config = _small_config(**{"teacher.workdir": teacher_dir, "teacher.extra_workdirs": (second,)})
  images = digits.train.get(np.arange(4))["image"]
  teachers, variables = load_teachers(config, 10, images[:1])
  assert [type(m).__name__ for m in teachers.modules] == ["CNN", "MLP"]  # models read from each run
  outs = teachers(variables, images)
  assert isinstance(outs, tuple) and len(outs) == 2
  halved = dataclasses.replace(teachers, temperatures=(2.0, 1.0))(variables, images)
  np.testing.assert_allclose(halved[0].logits, outs[0].logits / 2.0, rtol=1e-6)
  np.testing.assert_allclose(halved[1].logits, outs[1].logits, rtol=1e-6)


def test_calibrated_teacher_is_fitted_on_validation_and_reported(tmp_path, digits, teacher_dir):
  from kd_jax import calibration
  from kd_jax.train.teachers import load_teachers, teacher_logits
  workdir = str(tmp_path / "cal")
  config = _small_config(**{"loss": {"kd": {"weight": 1.0}}, "teacher.workdir": teacher_dir,
                            "teacher.calibrate": True})
  results = train_and_evaluate(config, workdir, dataset=digits)
  report = results["teacher_calibration"][0]
  teachers, variables = load_teachers(config, 10, digits.val.get(np.arange(1))["image"])
  z, y = teacher_logits(teachers, variables, kd_data.eval_batches(digits.val, 64))
  assert len(y) == len(digits.val)
  np.testing.assert_allclose(report["temperature"], calibration.fit_temperature(z[0], y), rtol=1e-6)
  assert report["nll_after"] <= report["nll_before"] + 1e-9
  for key in ("ece_before", "ece_after", "ace_before", "ace_after", "ece_over_before", "ece_under_after"):
    assert key in report
  for when in ("before", "after"):
    assert open(os.path.join(workdir, "calibration", f"teacher0_{when}.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert json.load(open(os.path.join(workdir, "teacher_calibration.json")))[0]["temperature"] == report["temperature"]


@dataclasses.dataclass(frozen=True)
class _Probe(distillers.Distiller):
  """CE that reports the step and epoch the train step hands to distillers."""
  needs_teacher = False

  def loss(self, variables, student, teacher, batch, ctx):
    return distillers.CrossEntropy().loss(variables, student, teacher, batch, ctx)[0], \
        {"step": ctx.step, "epoch": ctx.epoch}, {}


def test_train_step_hands_distillers_step_and_one_based_epoch(digits):
  config = _small_config()
  student = models.create_model("mlp_tiny", 10)
  schedule = optim.learning_rate_schedule(config.optim, 2, 10)
  tx = optim.make_optimizer(config.optim, schedule)
  sample = {k: jnp.asarray(v) for k, v in kd_data.train_batch(digits.train, 32, seed=0, step=0).items()}
  state = create_train_state(jax.random.PRNGKey(0), student, _Probe(), tx, sample)
  step = jax.jit(functools.partial(train_step, student=student, teachers=Teachers(), distiller=_Probe(), tx=tx,
                                   schedule=schedule, steps_per_epoch=2))
  seen = []
  for _ in range(5):
    state, metrics = step(state, sample, ())
    seen.append((int(metrics["step"]), int(metrics["epoch"])))
  assert seen == [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3)]


def test_initial_state_matches_the_optimised_compilation_of_the_same_initialiser(digits):
  """On CPU the initialiser is compiled without LLVM's optimisations (it runs once); its parameters may differ
  from those of XLA's default compilation of the student's initialiser by a few units in the last place (at
  most 3 in cnn_tiny, resnet8x4, wrn_16_2, mobilenetv2 and vgg8), from rounding, not from other draws."""
  student = models.create_model("cnn_tiny", 10)
  distiller = distillers.from_config({"ce": {"weight": 1.0}})
  sample = {k: jnp.asarray(v) for k, v in kd_data.train_batch(digits.train, 32, seed=0, step=0).items()}
  state = create_train_state(jax.random.PRNGKey(0), student, distiller, optax.identity(), sample)
  reference = jax.jit(lambda rng: student.init(jax.random.split(rng, 3)[0], sample["image"], train=False))(
      jax.random.PRNGKey(0))
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference["params"]), strict=True):
    np.testing.assert_array_max_ulp(np.asarray(got), np.asarray(want), maxulp=4)
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(state.params))


def test_energy_thresholds_come_from_a_teacher_pass_and_are_kept_on_resume(tmp_path, digits, teacher_dir):
  from kd_jax import losses
  from kd_jax.train.teachers import load_teachers, teacher_logits
  workdir = str(tmp_path / "energy")
  config = _small_config(**{"loss": {"ce": {"weight": 0.1}, "energy_kd": {"weight": 0.9}},
                            "teacher.workdir": teacher_dir, "max_steps": 2})
  train_and_evaluate(config, workdir, dataset=digits)
  stored = json.load(open(os.path.join(workdir, "prepared.json")))
  teachers, variables = load_teachers(config, 10, digits.train.get(np.arange(1))["image"])
  z, _ = teacher_logits(teachers, variables, kd_data.eval_batches(digits.train, 64))
  low, high = losses.energy_thresholds(losses.energy_score(z[0], 4.0), 0.2, 0.2)
  np.testing.assert_allclose([stored["fields"]["energy_kd"]["energy_low"],
                              stored["fields"]["energy_kd"]["energy_high"]], [low, high], rtol=1e-5)
  # A resumed run reads the stored thresholds rather than recomputing them.
  stored["fields"]["energy_kd"]["energy_low"] = low - 1.0
  json.dump(stored, open(os.path.join(workdir, "prepared.json"), "w"))
  distiller = distillers.from_config(config.loss)
  from kd_jax.train.loop import prepare_distiller
  prepared = prepare_distiller(distiller, teachers, variables, digits, config, workdir)
  assert prepared.terms[1][2].energy_low == low - 1.0
  config.max_steps = 4
  assert train_and_evaluate(config, workdir, dataset=digits)["steps"] == 4


def test_pruned_teacher_copy_runs_with_batch_statistics(digits, teacher_dir, tmp_path):
  from kd_jax.train.teachers import load_teachers
  config = _small_config(**{"teacher.workdir": teacher_dir, "teacher.pruned_copy_rate": 0.1})
  images = digits.train.get(np.arange(16))["image"]
  teachers, variables = load_teachers(config, 10, images[:1])
  assert teachers.batch_statistics == (False, True)
  kernels = [k for k in jax.tree_util.tree_leaves_with_path(variables[1]["params"]) if "kernel" in str(k[0])]
  for _, kernel in kernels:
    assert np.mean(np.asarray(kernel) == 0) == pytest.approx(0.1, abs=0.02)
  original, pruned = teachers(variables, images)
  eval_pruned = teachers.modules[1].apply(variables[1], images, train=False)
  assert not np.allclose(pruned.logits, eval_pruned.logits)  # batch statistics, not running averages
  np.testing.assert_allclose(original.logits, teachers.modules[0].apply(variables[0], images, train=False).logits,
                             rtol=1e-6)
  r2kd = _small_config(**{"teacher.workdir": teacher_dir, "teacher.pruned_copy_rate": 0.1,
                          "loss": {"ce": {"weight": 1.0}, "r2kd": {"weight": 1.0, "augment": "cutmix"}}})
  results = train_and_evaluate(r2kd, str(tmp_path / "r2kd"), dataset=digits)
  assert results["steps"] == 4
  last = [json.loads(l) for l in open(os.path.join(tmp_path, "r2kd", "metrics.jsonl"))][-1]
  assert "train/r2kd/aug_value" in last and np.isfinite(last["train/loss"])


def test_calibration_split_is_configurable(tmp_path, digits, teacher_dir):
  from kd_jax.train.teachers import calibrate_teachers, load_teachers
  config = _small_config(**{"teacher.workdir": teacher_dir, "teacher.calibrate": True,
                            "teacher.calibration_split": "train"})
  teachers, variables = load_teachers(config, 10, digits.train.get(np.arange(1))["image"])
  calibrated, report = calibrate_teachers(teachers, variables, digits, config, str(tmp_path))
  entry = report["teacher_calibration"][0]
  assert entry["split"] == "train" and entry["examples"] == len(digits.train)
  assert calibrated.temperatures == (entry["temperature"],)
  from kd_jax.config import validate
  config.teacher.calibration_split = "test"
  with pytest.raises(KDJaxError, match="calibration_split must be 'val' or 'train'"):
    validate(config)


def test_a_distiller_that_does_not_fit_the_models_is_a_config_error(tmp_path, digits, teacher_dir):
  config = _small_config(**{"teacher.workdir": teacher_dir,
                            "loss": {"ce": {"weight": 1.0}, "hint": {"weight": 1.0, "distiller": "fitnet",
                                                                     "stage": 7}}})
  with pytest.raises(KDJaxError, match=r"config.loss does not fit the student 'cnn_tiny' and its teacher\(s\): "
                                       r"fitnet: stage 7 does not exist"):
    train_and_evaluate(config, str(tmp_path / "bad"), dataset=digits)
