"""Super-resolution distillation: output L1, FAKD, LSFD (losses and distillers), FitNet's plain-conv regressor,
and AT / RKD on SR-shaped outputs with negative features.

Expected values are worked out by hand or computed independently in NumPy float64 from the formulas (explicit
loops for the affinity matrices), never by calling the function under test.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import distillers, losses
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput

# Jitted once per signature: run eagerly, every primitive would compile on its own.
output_l1 = jax.jit(losses.output_l1)
affinity = jax.jit(losses.feature_affinity)
fakd = jax.jit(losses.fakd, static_argnames=("p", "eps"))
lsfd = jax.jit(losses.lsfd, static_argnames=("temperature",))
lsfd_attention = jax.jit(losses.lsfd_attention, static_argnames=("temperature",))


def _features(seed, shape):
  """Signed features, as SR residual blocks produce (no ReLU at the end)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# ---------------------------------------------------------------- NumPy float64 references


def _np_affinity(f, eps=1e-7):
  """[B, HW, HW] by explicit loops: cosine between positions p, q, each divided by (norm + eps)."""
  f = np.asarray(f, np.float64)
  b, h, w, _ = f.shape
  out = np.zeros((b, h * w, h * w))
  for n in range(b):
    vectors = [f[n, i, j] for i in range(h) for j in range(w)]  # row-major (h, w), like PyTorch's view
    for p, u in enumerate(vectors):
      for q, v in enumerate(vectors):
        out[n, p, q] = (u @ v) / ((np.sqrt(u @ u) + eps) * (np.sqrt(v @ v) + eps))
  return out


def _np_fakd(fs, ft, p=1):
  diff = _np_affinity(fs) - _np_affinity(ft)
  return np.mean(np.abs(diff) if p == 1 else diff**2)


def _np_lsfd(fs, ft, temperature):
  """(loss, attention [B, H, W]) from the formula: A = HW·softmax_p(D/τ), L = mean_{b,p} A·mean_c|F_t − F_s|."""
  fs, ft = np.asarray(fs, np.float64), np.asarray(ft, np.float64)
  b, h, w, _ = fs.shape
  errors = np.abs(ft - fs).mean(-1).reshape(b, h * w)
  logits = errors / temperature
  weights = np.exp(logits - logits.max(1, keepdims=True))
  attention = h * w * weights / weights.sum(1, keepdims=True)
  return np.mean(attention * errors), attention.reshape(b, h, w)


# ---------------------------------------------------------------- hand-checked values


def test_output_l1_by_hand():
  s = jnp.array([[[[0.0, 0.5], [1.0, 0.25]]]])
  t = jnp.array([[[[0.5, 0.5], [0.0, 1.0]]]])
  np.testing.assert_allclose(output_l1(s, t), (0.5 + 0 + 1 + 0.75) / 4, rtol=1e-6)
  x, y = _features(0, (2, 6, 6, 3)), _features(1, (2, 6, 6, 3))
  np.testing.assert_allclose(output_l1(x, y), np.mean(np.abs(np.asarray(x, np.float64) - np.asarray(y))),
                             rtol=1e-5)


def test_fakd_by_hand_both_p():
  # One example, a 1x2 map. Student positions (1, 0), (1, 1): cosine 1/√2. Teacher (1, 0), (0, −3): cosine 0.
  # The affinities differ by 1/√2 in the two off-diagonal entries of the 2x2 matrix.
  fs = jnp.array([[[[1.0, 0.0], [1.0, 1.0]]]])
  ft = jnp.array([[[[1.0, 0.0, 0.0], [0.0, -3.0, 0.0]]]])  # three teacher channels: no adapter needed
  np.testing.assert_allclose(affinity(fs)[0], [[1, 1 / math.sqrt(2)], [1 / math.sqrt(2), 1]], rtol=1e-5)
  np.testing.assert_allclose(fakd(fs, ft), 2 * (1 / math.sqrt(2)) / 4, rtol=1e-5)
  np.testing.assert_allclose(fakd(fs, ft, p=2), 2 * 0.5 / 4, rtol=1e-5)


def test_lsfd_attention_and_loss_by_hand_on_a_2x2_map():
  # B = 1, H = W = 2, C = 1, student 0, teacher (0, 0, 0, ln 5): D = (0, 0, 0, ln 5).
  # τ = 1: exp(D) = (1, 1, 1, 5), sum 8, A = 4·exp(D)/8 = (½, ½, ½, 5/2); L = mean(A·D) = (5/2)·ln 5 / 4.
  ft = jnp.array([[[[0.0], [0.0]], [[0.0], [math.log(5.0)]]]])
  fs = jnp.zeros_like(ft)
  np.testing.assert_allclose(lsfd_attention(fs, ft, temperature=1.0)[0], [[0.5, 0.5], [0.5, 2.5]], rtol=1e-6)
  np.testing.assert_allclose(lsfd(fs, ft, temperature=1.0), 2.5 * math.log(5.0) / 4, rtol=1e-6)
  # τ = 2: exp(D/2) = (1, 1, 1, √5); A = 4·(1, 1, 1, √5)/(3 + √5); L = √5·ln 5/(3 + √5).
  r5 = math.sqrt(5.0)
  np.testing.assert_allclose(lsfd_attention(fs, ft, temperature=2.0)[0],
                             4 / (3 + r5) * np.array([[1, 1], [1, r5]]), rtol=1e-6)
  np.testing.assert_allclose(lsfd(fs, ft, temperature=2.0), r5 * math.log(5.0) / (3 + r5), rtol=1e-6)


# ---------------------------------------------------------------- NumPy references on random features


def test_feature_affinity_matches_explicit_loops():
  f = _features(2, (2, 3, 4, 5))
  got = affinity(f)
  chex.assert_shape(got, (2, 12, 12))
  np.testing.assert_allclose(got, _np_affinity(f), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [1, 2])
def test_fakd_matches_numpy_reference_with_different_widths(p):
  fs, ft = _features(3, (2, 3, 3, 4)), _features(4, (2, 3, 3, 10))
  np.testing.assert_allclose(fakd(fs, ft, p=p), _np_fakd(fs, ft, p), rtol=1e-5)


def test_lsfd_matches_numpy_reference():
  fs, ft = _features(5, (3, 4, 3, 6)), _features(6, (3, 4, 3, 6))
  for temperature in (0.1, 1.0, 7.0):
    expected_loss, expected_attention = _np_lsfd(fs, ft, temperature)
    np.testing.assert_allclose(lsfd(fs, ft, temperature=temperature), expected_loss, rtol=1e-5)
    np.testing.assert_allclose(lsfd_attention(fs, ft, temperature=temperature), expected_attention, rtol=1e-5)


# ---------------------------------------------------------------- identities, invariances, attention


def test_zero_when_student_equals_teacher():
  f = _features(7, (2, 4, 4, 6))
  for value in (output_l1(f, f), fakd(f, f), fakd(f, f, p=2), lsfd(f, f, temperature=1.0)):
    np.testing.assert_allclose(value, 0.0, atol=1e-6)
  # FAKD ignores the width: the same map with zero channels appended is a perfect match.
  np.testing.assert_allclose(fakd(f, jnp.concatenate([f, jnp.zeros_like(f)], -1)), 0.0, atol=1e-6)


def test_fakd_invariant_to_channel_permutation_and_per_sample_scale():
  fs, ft = _features(8, (3, 3, 3, 6)), _features(9, (3, 3, 3, 8))
  base = fakd(fs, ft)
  assert base > 0.1
  rng = np.random.default_rng(10)
  np.testing.assert_allclose(fakd(fs[..., rng.permutation(6)], ft[..., rng.permutation(8)]), base, rtol=1e-5)
  scale_s = jnp.array([0.5, 3.0, 40.0]).reshape(3, 1, 1, 1)
  scale_t = jnp.array([7.0, 0.2, 1.0]).reshape(3, 1, 1, 1)
  np.testing.assert_allclose(fakd(scale_s * fs, scale_t * ft), base, rtol=1e-5)
  # The reference normalises each position's channel vector, so a per-position positive scale changes nothing.
  np.testing.assert_allclose(fakd(fs * jnp.exp(_features(11, (3, 3, 3, 1))), ft), base, rtol=1e-5)
  # A sign flip is not a positive scale: the affinity of −F equals that of F, so the loss is unchanged too,
  # but flipping one position's sign changes its row.
  np.testing.assert_allclose(fakd(-fs, ft), base, rtol=1e-5)
  assert abs(float(fakd(fs.at[:, 0, 0].multiply(-1.0), ft)) - float(base)) > 1e-4


def test_lsfd_attention_sums_to_hw_and_weights_larger_differences_more():
  fs, ft = _features(12, (3, 4, 5, 6)), _features(13, (3, 4, 5, 6))
  attention = np.asarray(lsfd_attention(fs, ft, temperature=0.5), np.float64)
  np.testing.assert_allclose(attention.sum((1, 2)), 20.0, rtol=1e-5)
  errors = np.abs(np.asarray(ft, np.float64) - np.asarray(fs, np.float64)).mean(-1)
  for a, d in zip(attention.reshape(3, -1), errors.reshape(3, -1)):
    order = np.argsort(d)
    assert np.all(np.diff(a[order]) >= -1e-6)  # monotone in the difference
    assert a[order[-1]] > 1.0 > a[order[0]]
  # Large τ: uniform attention, i.e. the plain L1 between the maps.
  np.testing.assert_allclose(lsfd_attention(fs, ft, temperature=1e6), 1.0, rtol=1e-4)
  np.testing.assert_allclose(lsfd(fs, ft, temperature=1e6), errors.mean(), rtol=1e-4)


def test_lsfd_gradient_treats_the_attention_as_a_constant():
  # ∂L/∂F_s = A/(B·HW·C)·sign(F_s − F_t): no term from the softmax, and nothing reaches the teacher.
  fs, ft = _features(14, (2, 2, 3, 4)), _features(15, (2, 2, 3, 4))
  g_s, g_t = jax.jit(jax.grad(lambda s, t: losses.lsfd(s, t, temperature=0.3), argnums=(0, 1)))(fs, ft)
  _, attention = _np_lsfd(fs, ft, 0.3)
  expected = attention[..., None] / (2 * 6 * 4) * np.sign(np.asarray(fs) - np.asarray(ft))
  np.testing.assert_allclose(g_s, expected, rtol=1e-5)
  np.testing.assert_allclose(g_t, 0.0)


@pytest.mark.parametrize("name,fn", [
    ("output_l1", losses.output_l1),
    ("fakd", losses.fakd),
    ("fakd_p2", lambda s, t: losses.fakd(s, t, p=2)),
    ("lsfd", lambda s, t: losses.lsfd(s, t, temperature=1.0)),
])
def test_loss_gradient_finite_for_student_zero_for_teacher_even_at_zero_positions(name, fn):
  s = _features(16, (2, 3, 3, 4)).at[:, 1, 1].set(0.0)  # an all-zero position: FAKD's norm is 0 there
  t = _features(17, (2, 3, 3, 4))
  g_s, g_t = jax.jit(jax.grad(fn, argnums=(0, 1)))(s, t)
  assert np.all(np.isfinite(g_s)) and float(jnp.abs(g_s).sum()) > 0, name
  np.testing.assert_allclose(g_t, 0.0)


def test_losses_reject_bad_shapes_and_knobs():
  f = _features(18, (2, 4, 4, 3))
  with pytest.raises(ValueError, match="must match the teacher output"):
    losses.output_l1(f, f[:, :2])
  with pytest.raises(ValueError, match="spatial size"):
    losses.fakd(f, f[:, :2])
  with pytest.raises(ValueError, match="p must be 1"):
    losses.fakd(f, f, p=3)
  with pytest.raises(ValueError, match="NHWC"):
    losses.feature_affinity(f[0])
  with pytest.raises(ValueError, match="regressor"):
    losses.lsfd(f, jnp.concatenate([f, f], -1), temperature=1.0)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    losses.lsfd_attention(f, f, temperature=0.0)


# ---------------------------------------------------------------- distillers on SR-shaped outputs


def _sr_output(seed, width, batch=4, size=6, stages=3, scale=2):
  """An SR model's output: an image in [0, 1] and signed stage maps (no final ReLU)."""
  keys = jax.random.split(jax.random.PRNGKey(seed), stages + 1)
  maps = tuple(jax.random.normal(k, (batch, size, size, width)) for k in keys[:stages])
  image = jax.nn.sigmoid(jax.random.normal(keys[-1], (batch, size * scale, size * scale, 3)))
  return ModelOutput(prediction=image, stages=maps, preact_stages=maps, embedding=jnp.mean(maps[-1], axis=(1, 2)))


STUDENT = _sr_output(0, 4)
TEACHER = _sr_output(1, 8)
HR = jax.nn.sigmoid(jax.random.normal(jax.random.PRNGKey(2), STUDENT.prediction.shape))
BATCH = {"image": jnp.zeros((4, 6, 6, 3)), "hr": HR}


class _L1Task:
  """The part of an SR task that the `supervised` term reads: `loss(prediction, batch)` = L1(SR, HR)."""

  def loss(self, prediction, batch):
    return jnp.mean(jnp.abs(prediction - batch["hr"]))


def _jitted(distiller):
  return jax.jit(lambda variables, s, t: distiller(variables, s, t, BATCH)[:2])


def _identity_params(layers, width):
  kernel = np.zeros((3, 3, width, width), np.float32)
  kernel[1, 1] = np.eye(width)
  return {f"Conv_{i}": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(width)} for i in range(layers)}


def test_distillers_build_from_config_and_jit_in_a_weighted_sum():
  config = {
      "supervised": {"weight": 0.5},
      "sr_output": {"weight": 0.5},
      "fakd": {"weight": 10.0, "stages": [0, 1, 2]},
      "lsfd": {"weight": 2.0, "stages": [-1], "temperature": 0.5, "regressor_layers": 2},
      "hint": {"weight": 1.0, "distiller": "fitnet", "stage": -1, "regressor": "conv"},
      "at": {"weight": 1000.0},
      "rkd": {"weight": 1.0, "stage": -1},
  }
  total = distillers.from_config(config)
  terms = {name: d for name, _, d in total.terms}
  assert (type(terms["sr_output"]), type(terms["fakd"]), type(terms["lsfd"])) == (
      distillers.OutputL1, distillers.FAKD, distillers.LSFD)
  assert terms["fakd"].stages == (0, 1, 2) and terms["hint"].regressor == "conv"
  variables = total.init(jax.random.PRNGKey(3), STUDENT, TEACHER, BATCH)
  assert set(variables) == {"params"} and set(variables["params"]) == {"lsfd", "hint"}
  loss_fn = jax.jit(lambda v, s, t: total(v, s, t, BATCH, train=True, task=_L1Task())[:2])
  loss, metrics = loss_fn(variables, STUDENT, TEACHER)
  assert loss.shape == () and np.isfinite(loss)
  np.testing.assert_allclose(loss, sum(spec["weight"] * metrics[f"{name}/loss"] for name, spec in config.items()),
                             rtol=1e-5)
  for name in config:
    assert float(metrics[f"{name}/loss"]) > 0, name
  np.testing.assert_allclose(metrics["sr_output/loss"], output_l1(STUDENT.prediction, TEACHER.prediction), rtol=1e-6)
  assert {"fakd/stage0", "fakd/stage1", "fakd/stage2", "lsfd/stage2", "lsfd/stage2_attention_max",
          "lsfd/stage2_attention_entropy"} <= set(metrics)


@pytest.mark.parametrize("name,kwargs", [
    ("sr_output", {}),
    ("fakd", {"stages": (0, -1)}),
    ("fakd", {"stages": (0,), "teacher_stages": (2,), "p": 2}),
    ("lsfd", {"stages": (1, 2), "regressor_layers": 2}),
    ("fitnet", {"stage": -1, "regressor": "conv"}),
    ("at", {}),
    ("rkd", {"stage": -1}),
])
def test_gradients_reach_student_and_distiller_params_never_the_teacher(name, kwargs):
  distiller = distillers.make_distiller(name, **kwargs)
  variables = distiller.init(jax.random.PRNGKey(4), STUDENT, TEACHER, BATCH)

  def f(params, student, teacher):
    return distiller({**variables, "params": params}, student, teacher, BATCH, train=True)[0]

  g_params, g_student, g_teacher = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(
      variables.get("params", {}), STUDENT, TEACHER)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(g_student))
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(g_student)) > 0
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(g_params))
  for g in jax.tree.leaves(g_teacher):
    np.testing.assert_allclose(g, 0.0)


def test_fakd_distiller_sums_stage_pairs_without_an_adapter():
  fakd_d = distillers.make_distiller("fakd", stages=[0, -1], teacher_stages=[1, 2])
  assert fakd_d.init(jax.random.PRNGKey(5), STUDENT, TEACHER, BATCH) == {}  # widths 4 vs 8: no parameters
  value, metrics = _jitted(fakd_d)({}, STUDENT, TEACHER)
  expected = [_np_fakd(STUDENT.stages[0], TEACHER.stages[1]), _np_fakd(STUDENT.stages[2], TEACHER.stages[2])]
  np.testing.assert_allclose([metrics["stage0"], metrics["stage2"]], expected, rtol=1e-5)
  np.testing.assert_allclose(value, sum(expected), rtol=1e-5)
  default, _ = _jitted(distillers.FAKD())({}, STUDENT, TEACHER)
  np.testing.assert_allclose(default, _np_fakd(STUDENT.stages[-1], TEACHER.stages[-1]), rtol=1e-5)


def test_lsfd_owns_one_local_regressor_per_stage_pair():
  lsfd_d = distillers.LSFD(stages=(0, -1), regressor_layers=2)
  variables = lsfd_d.init(jax.random.PRNGKey(6), STUDENT, TEACHER, BATCH)
  shapes = jax.tree.map(lambda x: x.shape, variables)
  assert shapes == {"params": {
      "stage0": {"Conv_0": {"kernel": (3, 3, 4, 8), "bias": (8,)}, "Conv_1": {"kernel": (3, 3, 8, 8), "bias": (8,)}},
      "stage2": {"Conv_0": {"kernel": (3, 3, 4, 8), "bias": (8,)}, "Conv_1": {"kernel": (3, 3, 8, 8), "bias": (8,)}}}}
  value, metrics = _jitted(lsfd_d)(variables, STUDENT, TEACHER)
  regressor = distillers.LocalRegressor(8, 2, 3)
  expected = [losses.lsfd(regressor.apply({"params": variables["params"][k]}, s), t, temperature=1.0)
              for k, s, t in (("stage0", STUDENT.stages[0], TEACHER.stages[0]),
                              ("stage2", STUDENT.stages[2], TEACHER.stages[2]))]
  np.testing.assert_allclose([metrics["stage0"], metrics["stage2"]], expected, rtol=1e-5)
  np.testing.assert_allclose(value, sum(expected), rtol=1e-5)
  for key in ("stage0", "stage2"):
    assert 1.0 < float(metrics[f"{key}_attention_max"]) <= 36.0
    assert 0.0 < float(metrics[f"{key}_attention_entropy"]) < 1.0


def test_local_regressor_relu_between_layers_not_after_the_last():
  x = _features(19, (2, 5, 5, 3))
  one = distillers.LocalRegressor(3, 1)
  np.testing.assert_allclose(one.apply({"params": _identity_params(1, 3)}, x), x, atol=1e-6)  # negatives kept
  two = distillers.LocalRegressor(3, 2)
  np.testing.assert_allclose(two.apply({"params": _identity_params(2, 3)}, x), jax.nn.relu(x), atol=1e-6)


def test_lsfd_distiller_is_zero_with_an_identity_regressor_and_equal_maps():
  teacher = _sr_output(1, 4)  # the student's width, so the identity regressor fits
  lsfd_d = distillers.LSFD(stages=(0, 2))
  variables = {"params": {"stage0": _identity_params(1, 4), "stage2": _identity_params(1, 4)}}
  value, metrics = _jitted(lsfd_d)(variables, teacher, teacher)
  np.testing.assert_allclose(value, 0.0, atol=1e-6)
  np.testing.assert_allclose(metrics["stage0_attention_max"], 1.0, rtol=1e-6)  # no difference: uniform weights
  np.testing.assert_allclose(metrics["stage0_attention_entropy"], 1.0, rtol=1e-5)
  value, _ = _jitted(lsfd_d)(variables, STUDENT, teacher)
  expected = sum(_np_lsfd(STUDENT.stages[i], teacher.stages[i], 1.0)[0] for i in (0, 2))
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_output_l1_distiller_reads_the_predictions():
  value, metrics = _jitted(distillers.make_distiller("sr_output"))({}, STUDENT, TEACHER)
  expected = np.mean(np.abs(np.asarray(STUDENT.prediction, np.float64) - np.asarray(TEACHER.prediction)))
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert metrics == {}


# Parameter names and shapes of the default FitNet (conv + BatchNorm + ReLU) as before `regressor` existed:
# changing them would break existing checkpoints.
DEFAULT_FITNET_TREE = {
    "params": {"Conv_0": {"kernel": (3, 3, 4, 8), "bias": (8,)}, "BatchNorm_0": {"scale": (8,), "bias": (8,)}},
    "batch_stats": {"BatchNorm_0": {"mean": (8,), "var": (8,)}},
}


def test_fitnet_default_tree_unchanged_and_conv_regressor_has_no_batch_stats():
  default = distillers.FitNet(stage=-1)
  assert default.regressor == "conv_bn_relu"
  variables = default.init(jax.random.PRNGKey(7), STUDENT, TEACHER, BATCH)
  assert jax.tree.map(lambda x: x.shape, variables) == DEFAULT_FITNET_TREE
  plain = distillers.make_distiller("fitnet", stage=-1, regressor="conv")
  variables = plain.init(jax.random.PRNGKey(7), STUDENT, TEACHER, BATCH)
  assert jax.tree.map(lambda x: x.shape, variables) == {"params": {"Conv_0": {"kernel": (3, 3, 4, 8),
                                                                              "bias": (8,)}}}
  value, metrics, state = jax.jit(lambda v: plain(v, STUDENT, TEACHER, BATCH, train=True))(variables)
  assert state == {} and metrics == {}
  # A single 3x3 'SAME' conv with bias, no ReLU: the regressed map keeps negative values.
  regressed = jax.lax.conv_general_dilated(STUDENT.stages[-1], variables["params"]["Conv_0"]["kernel"], (1, 1),
                                           "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  regressed = regressed + variables["params"]["Conv_0"]["bias"]
  assert float(regressed.min()) < 0
  np.testing.assert_allclose(value, np.mean((np.asarray(regressed, np.float64) - np.asarray(TEACHER.stages[-1])) ** 2),
                             rtol=1e-4)


def test_at_and_rkd_run_unchanged_on_sr_outputs_with_negative_features():
  assert float(STUDENT.stages[-1].min()) < 0
  at_value, at_metrics = _jitted(distillers.AT())({}, STUDENT, TEACHER)
  at_loss = jax.jit(losses.attention_transfer)
  expected = [at_loss(s, t) for s, t in zip(STUDENT.stages, TEACHER.stages)]
  np.testing.assert_allclose([at_metrics[f"stage{i}"] for i in range(3)], expected, rtol=1e-5)
  np.testing.assert_allclose(at_value, sum(expected), rtol=1e-5)
  rkd_value, parts = _jitted(distillers.RKD(stage=-1))({}, STUDENT, TEACHER)
  s_flat, t_flat = STUDENT.stages[-1].reshape(4, -1), TEACHER.stages[-1].reshape(4, -1)
  distance, angle = jax.jit(lambda s, t: (losses.rkd_distance(s, t), losses.rkd_angle(s, t)))(s_flat, t_flat)
  np.testing.assert_allclose(parts["distance"], distance, rtol=1e-5)
  np.testing.assert_allclose(parts["angle"], angle, rtol=1e-5)
  np.testing.assert_allclose(rkd_value, 25.0 * parts["distance"] + 50.0 * parts["angle"], rtol=1e-5)
  assert float(parts["distance"]) > 1e-3 and float(parts["angle"]) > 1e-3


def test_bad_hyper_parameters_are_named():
  with pytest.raises(KDJaxError, match="fakd: p must be 1"):
    distillers.make_distiller("fakd", p=3)
  with pytest.raises(KDJaxError, match="teacher_stages"):
    distillers.make_distiller("fakd", stages=[0, 1], teacher_stages=[0])
  with pytest.raises(KDJaxError, match="lsfd: temperature must be > 0"):
    distillers.make_distiller("lsfd", temperature=0.0)
  with pytest.raises(KDJaxError, match="kernel_size must be an odd"):
    distillers.make_distiller("lsfd", kernel_size=2)
  with pytest.raises(KDJaxError, match="regressor_layers must be > 0"):
    distillers.make_distiller("lsfd", regressor_layers=0)
  with pytest.raises(KDJaxError, match="regressor must be 'conv_bn_relu' or 'conv'"):
    distillers.make_distiller("fitnet", regressor="linear")
  with pytest.raises(KDJaxError, match="Valid: stages, teacher_stages, p"):
    distillers.make_distiller("fakd", stage=1)
  with pytest.raises(ValueError, match="stage 3 does not exist"):
    distillers.LSFD(stages=(3,)).init(jax.random.PRNGKey(0), STUDENT, TEACHER, BATCH)
  with pytest.raises(ValueError, match="listed twice"):
    _jitted(distillers.FAKD(stages=(2, -1)))({}, STUDENT, TEACHER)
