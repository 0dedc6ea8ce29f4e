"""ReviewKD (HCL, ABF review path, warm-up) and FEED (parallel and sequential)."""

import importlib.util
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import distillers, losses, models
from helpers import small_config
from kd_jax.distillers.review import nearest_resize
from kd_jax.models.outputs import ModelOutput
from kd_jax.train import checkpoint as ckpt
from kd_jax.train.loop import train_and_evaluate

BATCH = {"label": jnp.array([0, 1, 2, 3])}


def _output(seed, batch=4, channels=(8, 16, 32), sizes=(8, 4, 2), classes=10):
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  preacts = tuple(normal(batch, s, s, c) for c, s in zip(channels, sizes))
  return ModelOutput(prediction=normal(batch, classes), stages=tuple(jax.nn.relu(x) for x in preacts),
                     preact_stages=tuple(normal(batch, s, s, c) for c, s in zip(channels, sizes)),
                     embedding=normal(batch, channels[-1]))


def _fill(shapes, seed=0):
  """Variables of the given structure with numpy values (BatchNorm: unit scale and variance, zero mean), so the
  tests compile no random initialisers (each eager `jax.random` shape costs a compilation)."""
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    name = jax.tree_util.keystr(path)
    if "'var'" in name or "'scale'" in name:
      return jnp.ones(x.shape, x.dtype)
    if "'mean'" in name:
      return jnp.zeros(x.shape, x.dtype)
    return jnp.asarray(0.3 * rng.normal(size=x.shape), x.dtype)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _init(distiller, student, teacher):
  """Variables with `distiller.init`'s structure and shapes, filled by `_fill`."""
  return _fill(jax.eval_shape(distiller.init, jax.random.PRNGKey(2), student, teacher, BATCH))


def _review_setup(warmup_epochs=0.0):
  s, t = _output(0), _output(1, channels=(12, 24, 48))
  review = distillers.ReviewKD(warmup_epochs=warmup_epochs)
  return s, t, review, _init(review, s, t)


# ------------------------------------------------------------------------------------------------------
# HCL, the pure loss
# ------------------------------------------------------------------------------------------------------


def test_hcl_by_hand_on_a_2x2_map():
  # Only level 1 is below H = 2: weight 1/2, divisor 1.5. Full MSE (1+4+9+16)/4 = 7.5; pooled mean 2.5 → 6.25.
  fs = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
  got = losses.review_kd([fs], [jnp.zeros_like(fs)])
  np.testing.assert_allclose(got, (7.5 + 0.5 * 6.25) / 1.5, rtol=1e-6)


def test_hcl_by_hand_on_a_4x4_map_and_a_1x1_map_summed_over_pairs():
  # 4x4 = arange(16): full MSE mean(k²) = 77.5; level 2 (2x2 block means 2.5, 4.5, 10.5, 12.5) → 73.25 with
  # weight 1/2; level 1 (mean 7.5) → 56.25 with weight 1/4; divisor 1.75. A 1x1 pair is its plain MSE.
  fs = jnp.arange(16.0).reshape(1, 4, 4, 1)
  four = (77.5 + 0.5 * 73.25 + 0.25 * 56.25) / 1.75
  np.testing.assert_allclose(losses.review_kd([fs], [jnp.zeros_like(fs)]), four, rtol=1e-6)
  one_s, one_t = jnp.array([3.0, -1.0]).reshape(1, 1, 1, 2), jnp.array([1.0, 1.0]).reshape(1, 1, 1, 2)
  np.testing.assert_allclose(losses.review_kd([one_s], [one_t]), 4.0, rtol=1e-6)
  np.testing.assert_allclose(losses.review_kd([fs, one_s], [jnp.zeros_like(fs), one_t]), four + 4.0, rtol=1e-6)


def _hcl_numpy(fs, ft):
  """The reference's hcl for maps whose side is divisible by every kept level."""
  h = fs.shape[1]
  loss, cnt, tot = np.mean((fs - ft) ** 2), 1.0, 1.0
  for level in (4, 2, 1):
    if level >= h:
      continue
    k = h // level
    pool = lambda x: x.reshape(x.shape[0], level, k, level, k, x.shape[-1]).mean(axis=(2, 4))
    cnt /= 2.0
    loss += np.mean((pool(fs) - pool(ft)) ** 2) * cnt
    tot += cnt
  return loss / tot


def test_hcl_matches_numpy_reference_on_random_maps():
  rng = np.random.default_rng(0)
  pairs = [(rng.normal(size=(3, s, s, c)), rng.normal(size=(3, s, s, c))) for s, c in ((8, 5), (4, 3), (2, 4))]
  want = sum(_hcl_numpy(a, b) for a, b in pairs)
  got = losses.review_kd([jnp.asarray(a) for a, _ in pairs], [jnp.asarray(b) for _, b in pairs])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_hcl_zero_when_features_coincide_and_teacher_gets_no_gradient():
  rng = np.random.default_rng(0)
  f = [jnp.asarray(rng.normal(size=(2, s, s, 3)), jnp.float32) for s in (8, 4, 1)]
  np.testing.assert_allclose(losses.review_kd(f, f), 0.0, atol=1e-7)
  t = [x + 1.0 for x in f]
  g_s, g_t = jax.jit(jax.grad(lambda a, b: losses.review_kd(a, b), argnums=(0, 1)))(f, t)
  assert all(float(jnp.abs(g).sum()) > 0 for g in g_s)
  assert all(float(jnp.abs(g).sum()) == 0 for g in g_t)


def test_hcl_rejects_mismatched_pairs():
  with pytest.raises(ValueError, match="must match"):
    losses.review_kd([jnp.ones((1, 4, 4, 2))], [jnp.ones((1, 4, 4, 3))])
  with pytest.raises(ValueError, match="same, non-zero number"):
    losses.review_kd([jnp.ones((1, 4, 4, 2))], [])


# ------------------------------------------------------------------------------------------------------
# ABF and the review path
# ------------------------------------------------------------------------------------------------------


def test_nearest_resize_follows_pytorch_index_rule():
  x = jnp.arange(4.0).reshape(1, 2, 2, 1)
  np.testing.assert_array_equal(nearest_resize(x, (4, 4))[0, :, :, 0],
                                [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
  y = jnp.arange(16.0).reshape(1, 4, 4, 1)
  np.testing.assert_array_equal(nearest_resize(y, (2, 2))[0, :, :, 0], [[0, 2], [8, 10]])  # ⌊i·4/2⌋


def test_abf_fuses_a_smaller_residual_and_maps_onto_the_teacher_shape():
  abf = distillers.ABF(mid_channels=6, out_channels=12, fuse=True)
  x, residual = jnp.ones((2, 4, 4, 3)), jnp.ones((2, 2, 2, 6))
  variables = jax.eval_shape(lambda: abf.init(jax.random.PRNGKey(0), x, residual, (8, 8)))
  y, fused = jax.eval_shape(lambda v: abf.apply(v, x, residual, (8, 8)), variables)
  chex.assert_shape(y, (2, 8, 8, 12))
  chex.assert_shape(fused, (2, 8, 8, 6))  # the residual handed on, at the teacher's size
  params = variables["params"]
  chex.assert_shape(params["conv1"]["kernel"], (1, 1, 3, 6))
  chex.assert_shape(params["att_conv"]["kernel"], (1, 1, 12, 2))
  chex.assert_shape(params["conv2"]["kernel"], (3, 3, 6, 12))
  assert "bias" not in params["conv1"] and "bias" not in params["conv2"]
  plain = jax.eval_shape(distillers.ABF(6, 12, fuse=False).init, jax.random.PRNGKey(0), x)
  assert "att_conv" not in plain["params"]


def test_review_fusion_maps_each_student_level_onto_its_teacher_level():
  student = [jnp.ones((2, 8, 8, 4)), jnp.ones((2, 4, 4, 8)), jnp.ones((2, 2, 2, 16)), jnp.ones((2, 1, 1, 16))]
  fusion = distillers.ReviewFusion(out_channels=(5, 10, 20, 20), out_sizes=((16, 16), (8, 8), (4, 4), (1, 1)),
                                   mid_channels=16)
  variables = jax.eval_shape(fusion.init, jax.random.PRNGKey(0), student)
  outs = jax.eval_shape(fusion.apply, variables, student)
  assert [o.shape for o in outs] == [(2, 16, 16, 5), (2, 8, 8, 10), (2, 4, 4, 20), (2, 1, 1, 20)]
  # The deepest level does not fuse; the others do.
  assert "att_conv" not in variables["params"]["abf3"]
  assert all("att_conv" in variables["params"][f"abf{i}"] for i in range(3))


def test_review_is_residual_from_deep_to_shallow():
  """Changing the deepest student level changes every output; changing the shallowest changes only its own."""
  s, t, review, variables = _review_setup(warmup_epochs=20.0)
  levels = list(s.stages) + [s.embedding.reshape(4, 1, 1, -1)]
  fusion = review.fusion(levels, list(t.preact_stages) + [t.embedding.reshape(4, 1, 1, -1)])
  apply = jax.jit(fusion.apply)
  base = apply(variables, levels)
  deep = apply(variables, levels[:-1] + [levels[-1] + 1.0])
  shallow = apply(variables, [levels[0] + 1.0] + levels[1:])
  assert all(not np.allclose(a, b) for a, b in zip(base, deep))
  assert not np.allclose(base[0], shallow[0])
  assert all(np.allclose(a, b) for a, b in zip(base[1:], shallow[1:]))
  assert fusion.mid_channels == 32  # min(512, channels of the student's pooled embedding)


# ------------------------------------------------------------------------------------------------------
# The ReviewKD distiller
# ------------------------------------------------------------------------------------------------------


def test_review_kd_loss_is_hcl_of_fused_student_against_teacher_preacts_and_embedding():
  s, t, review, variables = _review_setup()
  run = jax.jit(lambda teacher: review(variables, s, teacher, BATCH, train=False))
  loss, metrics, state = run(t)
  s_levels = list(s.stages) + [s.embedding.reshape(4, 1, 1, -1)]
  t_levels = list(t.preact_stages) + [t.embedding.reshape(4, 1, 1, -1)]
  fused = jax.jit(review.fusion(s_levels, t_levels).apply)(variables, s_levels)
  np.testing.assert_allclose(loss, losses.review_kd(fused, t_levels), rtol=1e-5)
  np.testing.assert_allclose(sum(metrics[f"level{i}"] for i in range(4)), loss, rtol=1e-5)
  assert state == {}
  # The teacher's post-activation stages are not read; its pre-activations are.
  same, _, _ = run(t.replace(stages=tuple(x + 1.0 for x in t.stages)))
  np.testing.assert_allclose(same, loss, rtol=1e-6)
  other, _, _ = run(t.replace(preact_stages=tuple(x + 1.0 for x in t.preact_stages)))
  assert not np.isclose(other, loss)


def test_review_kd_derives_abf_widths_from_the_models_and_reads_student_preacts_on_request():
  s, t, review, variables = _review_setup()
  params = variables["params"]
  for i, (c_s, c_t) in enumerate(zip((8, 16, 32, 32), (12, 24, 48, 48))):
    assert params[f"abf{i}"]["conv1"]["kernel"].shape == (1, 1, c_s, 32)  # mid = min(512, 32)
    assert params[f"abf{i}"]["conv2"]["kernel"].shape == (3, 3, 32, c_t)
  assert jax.eval_shape(distillers.ReviewKD(max_mid_channels=16).init, jax.random.PRNGKey(0), s, t,
                        BATCH)["params"]["abf0"]["conv1"]["kernel"].shape == (1, 1, 8, 16)
  pre = distillers.ReviewKD(warmup_epochs=0.0, student_preact=True)
  moved_post = s.replace(stages=tuple(x + 1.0 for x in s.stages))
  np.testing.assert_allclose(pre(variables, moved_post, t, BATCH)[0], pre(variables, s, t, BATCH)[0], rtol=1e-6)
  assert not np.isclose(review(variables, moved_post, t, BATCH)[0], review(variables, s, t, BATCH)[0])


def test_review_kd_warmup_weight_follows_one_based_epoch():
  s, t, _, variables = _review_setup()
  review = distillers.ReviewKD(warmup_epochs=4.0)
  full, _, _ = distillers.ReviewKD(warmup_epochs=0.0)(variables, s, t, BATCH)
  for epoch, factor in ((1, 0.25), (2, 0.5), (4, 1.0), (9, 1.0)):
    loss, metrics, _ = review(variables, s, t, BATCH, epoch=epoch)
    np.testing.assert_allclose(loss, factor * full, rtol=1e-6)
    np.testing.assert_allclose(metrics["warmup"], factor)
    np.testing.assert_allclose(metrics["hcl"], full, rtol=1e-6)
  assert distillers.make_distiller("review_kd").warmup_epochs == 20.0  # the reference's CIFAR default


def test_review_kd_gradients_reach_student_and_fusion_not_teacher_and_bn_state_moves():
  s, t, review, variables = _review_setup()

  def f(params, student, teacher):
    loss, _, state = review({**variables, "params": params}, student, teacher, BATCH, train=True)
    return loss, state

  (g_params, g_s, g_t), state = jax.jit(jax.grad(f, argnums=(0, 1, 2), has_aux=True))(variables["params"], s, t)
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(g_params))
  assert all(float(jnp.abs(g).sum()) > 0 for g in (*g_s.stages, g_s.embedding))
  assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(g_t))
  chex.assert_trees_all_equal_shapes(state["batch_stats"], variables["batch_stats"])
  assert not np.allclose(state["batch_stats"]["abf0"]["bn1"]["mean"], variables["batch_stats"]["abf0"]["bn1"]["mean"])


def test_review_kd_rejects_unequal_stage_counts_and_flat_stages():
  s = _output(0)
  with pytest.raises(ValueError, match="same number"):
    distillers.ReviewKD().init(jax.random.PRNGKey(0), s, _output(1, channels=(8, 16), sizes=(8, 4)), BATCH)
  flat = ModelOutput(prediction=s.logits, stages=(jnp.ones((4, 32)),), preact_stages=(jnp.ones((4, 32)),),
                     embedding=jnp.ones((4, 32)))
  with pytest.raises(ValueError, match="NHWC"):
    distillers.ReviewKD().init(jax.random.PRNGKey(0), flat, flat, BATCH)


# ------------------------------------------------------------------------------------------------------
# FEED
# ------------------------------------------------------------------------------------------------------


def _feed_setup(num_teachers=2, beta=500.0):
  s = _output(0)
  teachers = tuple(_output(10 + k, channels=(12, 24, 40 + 8 * k)) for k in range(num_teachers))
  feed = distillers.FEED(beta=beta)
  variables = _init(feed, s, teachers)
  return s, teachers, feed, variables


def test_feed_translators_are_ft_translators_one_per_teacher():
  s, teachers, _, variables = _feed_setup()
  for k, t in enumerate(teachers):
    p = variables["params"][f"translator{k}"]
    c_t = t.stages[-1].shape[-1]
    assert [p[f"conv{i}"]["kernel"].shape for i in range(3)] == [(3, 3, 32, 32), (3, 3, 32, c_t), (3, 3, c_t, c_t)]
    assert all(p[f"conv{i}"]["bias"].shape[0] == p[f"conv{i}"]["kernel"].shape[-1] for i in range(3))
  # Each conv is followed by LeakyReLU(0.1): with zero kernels the output is leaky(bias of the last conv).
  zeroed = jax.tree.map(jnp.zeros_like, variables["params"]["translator0"])
  zeroed["conv2"]["bias"] = jnp.linspace(-2.0, 2.0, 40)
  out = distillers.FEEDTranslator(40).apply({"params": zeroed}, jnp.ones((1, 2, 2, 32)))
  want = jnp.where(zeroed["conv2"]["bias"] > 0, zeroed["conv2"]["bias"], 0.1 * zeroed["conv2"]["bias"])
  np.testing.assert_allclose(out[0, 1, 1], want, rtol=1e-6)


def test_feed_loss_is_beta_times_sum_of_per_teacher_factor_transfer_terms():
  s, teachers, feed, variables = _feed_setup(beta=3.0)
  loss, metrics, state = feed(variables, s, teachers, BATCH)
  translated = distillers.FEEDTranslators((40, 48)).apply(variables, s.stages[-1])
  terms = [losses.factor_transfer(f, t.stages[-1], form="paper") for f, t in zip(translated, teachers)]
  np.testing.assert_allclose(loss, 3.0 * (terms[0] + terms[1]), rtol=1e-6)
  np.testing.assert_allclose([metrics["teacher0"], metrics["teacher1"]], terms, rtol=1e-6)
  assert state == {}
  # One teacher (a single ModelOutput): one translator, one term.
  single = distillers.FEED(beta=3.0)
  v1 = _init(single, s, teachers[0])
  assert set(v1["params"]) == {"translator0"}
  f0 = distillers.FEEDTranslator(40).apply({"params": v1["params"]["translator0"]}, s.stages[-1])
  np.testing.assert_allclose(single(v1, s, teachers[0], BATCH)[0],
                             3.0 * losses.factor_transfer(f0, teachers[0].stages[-1], form="paper"), rtol=1e-6)


def test_feed_zero_when_translated_features_equal_teachers_up_to_positive_scale():
  s, teachers, feed, variables = _feed_setup()
  translated = distillers.FEEDTranslators((40, 48)).apply(variables, s.stages[-1])
  matching = tuple(t.replace(stages=t.stages[:-1] + (scale * f,))
                   for t, f, scale in zip(teachers, translated, (0.5, 7.0)))
  np.testing.assert_allclose(feed(variables, s, matching, BATCH)[0], 0.0, atol=1e-4)
  flipped = (matching[0], matching[1].replace(stages=matching[1].stages[:-1] + (-matching[1].stages[-1],)))
  assert float(feed(variables, s, flipped, BATCH)[0]) > 1.0  # a negative scale is not a match


def test_feed_gradients_reach_student_and_translators_not_teachers():
  s, teachers, feed, variables = _feed_setup()

  def f(params, student, teacher):
    return feed({"params": params}, student, teacher, BATCH, train=True)[0]

  g_params, g_s, g_t = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(variables["params"], s, teachers)
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(g_params))
  assert float(jnp.abs(g_s.stages[-1]).sum()) > 0
  assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(g_t))


def test_feed_rejects_bad_settings():
  s, teachers, _, _ = _feed_setup()
  with pytest.raises(ValueError, match="equal resolution"):
    distillers.FEED(teacher_stage=0).init(jax.random.PRNGKey(0), s, teachers, BATCH)
  with pytest.raises(Exception, match="beta must be > 0"):
    distillers.make_distiller("feed", beta=0.0)
  assert distillers.make_distiller("feed").beta == 500.0


# ------------------------------------------------------------------------------------------------------
# End to end
# ------------------------------------------------------------------------------------------------------


def _config(**overrides):
  return small_config(**{"eval_batch_size": 128, "epochs": 1, "max_steps": 2, **overrides})


def _export_teacher(workdir, digits, seed=0):
  """An exported cnn_tiny with `_fill`ed variables: a teacher run without the cost of training one."""
  model = models.create_model("cnn_tiny", 10)
  images = digits.train.get(np.arange(2))["image"]
  variables = _fill(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False)), seed)
  os.makedirs(workdir)
  ckpt.export_model(workdir, variables, {"model": "cnn_tiny", "num_classes": 10, "dataset": "digits"})


def _load_script():
  path = os.path.join(os.path.dirname(__file__), os.pardir, "experiments", "feed_sequential.py")
  spec = importlib.util.spec_from_file_location("feed_sequential", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_sequential_feed_hands_each_stage_student_to_the_next_stage_as_its_only_teacher(tmp_path, monkeypatch):
  script = _load_script()
  seen = []

  def fake_train(config, workdir, dataset=None):
    seen.append((config.teacher.workdir, tuple(config.teacher.extra_workdirs), config.teacher.model, workdir))
    return {"model": config.student.model, "val_accuracy": 0.5, "test_accuracy": 0.25, "workdir": workdir}

  monkeypatch.setattr(script, "train_and_evaluate", fake_train)
  config = _config(**{"teacher.model": "cnn_large", "teacher.extra_workdirs": ("other",),
                      "loss": {"ce": {"weight": 1.0}, "feed": {"weight": 1.0}}})
  rows = script.run_sequential(config, str(tmp_path), 3, "runs/t")
  stage = lambda i: os.path.join(str(tmp_path), f"stage{i}")
  assert seen == [("runs/t", (), "cnn_large", stage(1)), (stage(1), (), "", stage(2)), (stage(2), (), "", stage(3))]
  assert [r["stage"] for r in rows] == [1, 2, 3] and [r["teacher"] for r in rows] == ["runs/t", stage(1), stage(2)]
  table = script.results_table(rows, {"model": "cnn_large", "val_accuracy": 1.0, "test_accuracy": 0.75})
  assert table.splitlines()[2:4] == ["| 0 (teacher) | cnn_large | — | 100.00 | 75.00 |",
                                     "| 1 | cnn_tiny | runs/t | 50.00 | 25.00 |"]
  assert len(table.splitlines()) == 6
  with pytest.raises(Exception, match="'feed' term"):
    script.run_sequential(_config(), str(tmp_path / "x"), 1, "runs/t")


def test_review_kd_and_parallel_feed_train_end_to_end(tmp_path, digits):
  """One short run of ReviewKD and parallel FEED together, from two different exported teachers."""
  teachers = [str(tmp_path / "teacher0"), str(tmp_path / "teacher1")]
  for seed, teacher in enumerate(teachers):
    _export_teacher(teacher, digits, seed)
  both = _config(**{"teacher.workdir": teachers[0], "teacher.extra_workdirs": (teachers[1],),
                    "loss": {"ce": {"weight": 1.0}, "review_kd": {"weight": 1.0, "warmup_epochs": 1.0},
                             "feed": {"weight": 1.0}}})
  results = train_and_evaluate(both, str(tmp_path / "both"), dataset=digits)
  assert results["steps"] == 2 and np.isfinite(results["test_nll"])
  with open(os.path.join(str(tmp_path / "both"), "metrics.jsonl")) as f:
    metrics = json.loads(f.readline())
  assert {"train/review_kd/hcl", "train/feed/teacher0", "train/feed/teacher1"} <= set(metrics)
  assert all(np.isfinite(metrics[k]) and metrics[k] > 0 for k in ("train/review_kd/hcl", "train/feed/teacher0",
                                                                   "train/feed/teacher1"))
