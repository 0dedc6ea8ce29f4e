"""Relational and VID losses (RKD distance/angle, area-wise RKD, VID) and their distillers.

Expected values come from hand calculations on tiny point sets or from NumPy float64 loops written from
the definitions, never from the function under test; invariances and gradients are checked on random
embeddings.
"""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import distillers, losses
from kd_jax.losses.relations import vid_log_scale_for_variance, vid_variance
from kd_jax.models.outputs import ModelOutput

# Jitted once per shape: op-by-op execution of the B³ computations is what makes a test slow on CPU.
RELATIONAL = {"rkd_distance": jax.jit(losses.rkd_distance), "rkd_angle": jax.jit(losses.rkd_angle),
              "area_rkd": jax.jit(losses.area_rkd)}

# ---------------------------------------------------------------- NumPy float64 references


def _huber(d):
  d = np.abs(d)
  return np.where(d < 1, 0.5 * d * d, d - 0.5)


def _np_rkd_distance(s, t):
  def potentials(e):
    e = np.asarray(e, np.float64).reshape(len(e), -1)
    b = len(e)
    d = np.array([[np.linalg.norm(e[i] - e[j]) if i != j else 0.0 for j in range(b)] for i in range(b)])
    return d / d[~np.eye(b, dtype=bool)].mean()
  return _huber(potentials(s) - potentials(t)).mean()


def _np_rkd_angle(s, t):
  def potentials(e):
    e = np.asarray(e, np.float64).reshape(len(e), -1)
    b = len(e)
    psi = np.zeros((b, b, b))
    for i, j, k in itertools.product(range(b), repeat=3):
      if i != j and k != j:
        u, v = e[i] - e[j], e[k] - e[j]
        psi[i, j, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    return psi
  return _huber(potentials(s) - potentials(t)).mean()


def _np_area_rkd(s, t):
  def potentials(e):
    e = np.asarray(e, np.float64).reshape(len(e), -1)
    b = len(e)
    area, proper = np.zeros((b, b, b)), np.zeros((b, b, b), bool)
    for i, j, k in itertools.product(range(b), repeat=3):
      if len({i, j, k}) == 3:   # a collinear triplet is a proper triangle of area 0 and counts in the mean
        u, v = e[i] - e[j], e[k] - e[j]
        area[i, j, k] = 0.5 * math.sqrt(max(u @ u * (v @ v) - (u @ v) ** 2, 0.0))
        proper[i, j, k] = True
    return area / area[proper].mean()
  return _huber(potentials(s) - potentials(t)).mean()


def _embeddings(seed, b=6, d_s=5, d_t=7):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(b, d_s)).astype(np.float32), rng.normal(size=(b, d_t)).astype(np.float32)


def _rotation(seed, d):
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  return (q * np.sign(np.diag(r))).astype(np.float32)


# ---------------------------------------------------------------- hand-checked values

# Teacher: a 3-4-5 right triangle; student: the unit right isosceles triangle (both right-angled at point 0).
TRI_T = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], np.float32)
TRI_S = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)


def test_rkd_distance_by_hand():
  # Teacher distances 3, 4, 5 over their mean 4: 0.75, 1, 1.25. Student 1, 1, √2 over (2 + √2)/3.
  m = (2 + math.sqrt(2)) / 3
  diffs = [1 / m - 0.75, 1 / m - 1.0, math.sqrt(2) / m - 1.25]     # all < 1: Huber is ½d²
  expected = 2 * sum(0.5 * d * d for d in diffs) / 9                # each pair twice, zero diagonal, / B²
  np.testing.assert_allclose(expected, 0.0034812, rtol=1e-4)
  np.testing.assert_allclose(losses.rkd_distance(TRI_S, TRI_T), expected, rtol=1e-5)
  np.testing.assert_allclose(expected, _np_rkd_distance(TRI_S, TRI_T), rtol=1e-12)


def test_rkd_angle_by_hand():
  # Cosines at the vertices: both right angles at point 0 (cos 0); teacher 3/5 at point 1 and 4/5 at
  # point 2, student √2/2 at both. Each vertex appears as (i, j, k) and (k, j, i); i = k gives cos 1 on both
  # sides; any repeated index with j gives 0 on both sides.
  r = math.sqrt(2) / 2
  diffs = [0.0, r - 0.6, r - 0.8]
  expected = 2 * sum(0.5 * d * d for d in diffs) / 27
  np.testing.assert_allclose(losses.rkd_angle(TRI_S, TRI_T), expected, rtol=1e-5)
  np.testing.assert_allclose(expected, _np_rkd_angle(TRI_S, TRI_T), rtol=1e-12)


def test_area_rkd_by_hand():
  # Teacher: unit square, all four triangles have area ½ -> normalised 1. Student: (0,0), (2,0), (0,2),
  # (1,1): areas 2, 1, 1 and 0 (the last three points are collinear), mean 1. Each unordered triangle is
  # 6 ordered triplets: Huber(2 − 1) + Huber(0 − 1) = ½ + ½, times 6, over B³ = 64.
  square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], np.float32)
  student = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [1.0, 1.0]], np.float32)
  np.testing.assert_allclose(losses.area_rkd(student, square), 6 / 64, rtol=1e-5)
  np.testing.assert_allclose(_np_area_rkd(student, square), 6 / 64, rtol=1e-12)
  # Any three points form one triangle: with B = 3 every normalised area is 1 and the loss is 0.
  np.testing.assert_allclose(losses.area_rkd(TRI_S, TRI_T), 0.0, atol=1e-7)


@pytest.mark.parametrize("name,reference", [("rkd_distance", _np_rkd_distance), ("rkd_angle", _np_rkd_angle),
                                            ("area_rkd", _np_area_rkd)])
def test_relational_losses_match_float64_loops_on_random_embeddings(name, reference):
  s, t = _embeddings(0)
  np.testing.assert_allclose(RELATIONAL[name](s, t), reference(s, t), rtol=2e-4)
  # NHWC stage features are flattened per example, as RepDistiller's view(B, -1).
  s4 = s.reshape(6, 1, 1, 5)
  np.testing.assert_allclose(RELATIONAL[name](s4, t), reference(s, t), rtol=2e-4)


# ---------------------------------------------------------------- identities and invariances


@pytest.mark.parametrize("name", sorted(RELATIONAL))
def test_zero_when_student_equals_teacher(name):
  s, _ = _embeddings(1)
  np.testing.assert_allclose(RELATIONAL[name](s, s), 0.0, atol=1e-7)


@pytest.mark.parametrize("name", sorted(RELATIONAL))
def test_invariant_to_scaling_translation_and_rotation_of_either_embedding(name):
  fn = RELATIONAL[name]
  s, t = _embeddings(2)
  base = float(fn(s, t))
  assert base > 1e-3
  transformed_s = 0.3 * s @ _rotation(3, 5) + np.float32(0.7)
  transformed_t = 4.0 * t @ _rotation(4, 7) - np.linspace(-1, 1, 7, dtype=np.float32)
  for s2, t2 in [(3.0 * s, t), (s, 0.25 * t), (transformed_s, t), (s, transformed_t), (transformed_s, transformed_t)]:
    np.testing.assert_allclose(fn(s2, t2), base, rtol=2e-4)
  # A transformed copy of the teacher (any width) is a perfect student.
  np.testing.assert_allclose(fn(2.0 * t @ _rotation(5, 7) + 1.0, t), 0.0, atol=2e-6)


def test_angle_loss_is_bounded():
  # |ψ| ≤ 1 per entry, so |ψ_S − ψ_T| ≤ 2 and Huber ≤ 1.5; the worst case pits opposite cosines.
  line = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], np.float32)   # angle 180° at the middle point
  folded = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0001]], np.float32)
  for s, t in [(line, folded), *(_embeddings(seed, b=8) for seed in range(5))]:
    value = float(losses.rkd_angle(s, t))
    assert 0.0 <= value <= 1.5


def test_small_batches_give_zero_not_nan():
  one = np.ones((1, 3), np.float32)
  two_s, two_t = _embeddings(6, b=2)
  np.testing.assert_allclose(losses.rkd_distance(one, one * 2), 0.0)
  np.testing.assert_allclose(losses.rkd_angle(two_s, two_t), 0.0, atol=1e-12)
  np.testing.assert_allclose(losses.area_rkd(two_s, two_t), 0.0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(RELATIONAL))
def test_gradients_finite_with_duplicates_and_zero_for_teacher(name):
  fn = RELATIONAL[name]
  s, t = _embeddings(7)
  s_dup = s.copy()
  s_dup[3] = s_dup[1]                 # two identical student embeddings (zero distance, zero area, no direction)
  t_dup = t.copy()
  t_dup[0] = t_dup[2] = t_dup[5]      # three identical teacher embeddings
  collinear = s.copy()
  collinear[4] = 2 * s[0] - s[2]      # s0 the midpoint of s2 and s4: a degenerate triangle
  grad = jax.jit(jax.grad(fn, argnums=(0, 1)))
  for ss, tt in [(s, t), (s_dup, t), (s, t_dup), (s_dup, t_dup), (collinear, t)]:
    g_s, g_t = grad(ss, tt)
    assert np.all(np.isfinite(g_s)), name
    assert float(jnp.abs(g_s).max()) < 10.0, name     # finite *and* not blown up by 1/‖0‖
    assert float(jnp.abs(g_s).sum()) > 0, name
    np.testing.assert_array_equal(g_t, 0.0)
    assert np.isfinite(float(fn(ss, tt)))
  # All identical: every potential is constant and the loss and gradient stay finite.
  same = np.ones((4, 3), np.float32)
  assert np.all(np.isfinite(jax.grad(fn)(same, t[:4])))


def test_relational_losses_reject_mismatched_batches():
  with pytest.raises(ValueError, match="same batch size"):
    losses.rkd_distance(np.ones((4, 3)), np.ones((5, 3)))
  with pytest.raises(ValueError, match="eps must be > 0"):
    losses.area_rkd(np.ones((4, 3)), np.ones((4, 3)), eps=0.0)


# ---------------------------------------------------------------- VID


def test_vid_per_element_formula_and_reductions():
  rng = np.random.default_rng(8)
  mu, t = rng.normal(size=(2, 3, 3, 4)), rng.normal(size=(2, 3, 3, 4))
  alpha = np.array([-1.0, 0.0, 0.5, 2.0])
  var = np.log1p(np.exp(alpha)) + 1e-5
  nll = 0.5 * np.log(var) + (t - mu) ** 2 / (2 * var)
  args = (mu.astype(np.float32), t.astype(np.float32), alpha.astype(np.float32))
  np.testing.assert_allclose(losses.vid(*args), nll.mean(), rtol=1e-5)              # RepDistiller: mean over all
  np.testing.assert_allclose(losses.vid(*args, reduction="sum"), nll.reshape(2, -1).sum(1).mean(), rtol=1e-5)
  with pytest.raises(ValueError, match="one entry per teacher channel"):
    losses.vid(*args[:2], np.zeros(3, np.float32))


def test_vid_initial_variance_and_inverse():
  for target in (5.0, 0.01, 1e-4, 80.0):
    np.testing.assert_allclose(vid_variance(jnp.float32(vid_log_scale_for_variance(target))), target, rtol=1e-5)
  # RepDistiller's init: α = log(exp(5 − 1e-5) − 1).
  np.testing.assert_allclose(vid_log_scale_for_variance(5.0), np.log(np.exp(5.0 - 1e-5) - 1.0), rtol=1e-12)


def test_vid_at_mu_equals_t_decreases_with_the_variance():
  # With μ = t only ½·log σ² is left: no gradient on μ, and a positive gradient on α (dσ²/dα > 0), so
  # descent shrinks σ² toward its floor eps, where the loss is smallest.
  t = np.random.default_rng(9).normal(size=(4, 2, 2, 3)).astype(np.float32)
  alpha = jnp.full((3,), vid_log_scale_for_variance(5.0), jnp.float32)
  g_mu, g_alpha = jax.grad(losses.vid, argnums=(0, 2))(t, t, alpha)
  np.testing.assert_allclose(g_mu, 0.0, atol=1e-8)
  assert np.all(np.asarray(g_alpha) > 0)
  values = [float(losses.vid(t, t, alpha - step)) for step in (0.0, 2.0, 5.0, 10.0, 20.0)]
  assert all(a > b for a, b in zip(values, values[1:]))
  np.testing.assert_allclose(values[0], 0.5 * math.log(5.0), rtol=1e-5)
  # Moving μ away from t costs: the μ-gradient at μ = t is zero and the loss is strictly larger nearby.
  assert float(losses.vid(t + 0.1, t, alpha)) > values[0]


def test_vid_optimal_variance_is_the_mean_squared_residual():
  # d/dσ²_c of ½ log σ²_c + r̄²_c/(2σ²_c) is 1/(2σ²_c) − r̄²_c/(2σ⁴_c) = 0 at σ²_c = r̄²_c, the mean squared
  # residual of channel c, where the loss is mean_c ½(log r̄²_c + 1).
  rng = np.random.default_rng(10)
  t = rng.normal(size=(8, 3, 3, 4)).astype(np.float32)
  mu = (t + rng.normal(size=t.shape) * np.array([0.1, 0.5, 1.0, 3.0])).astype(np.float32)
  r2 = ((t.astype(np.float64) - mu) ** 2).mean(axis=(0, 1, 2))
  best = jnp.array([vid_log_scale_for_variance(v) for v in r2], jnp.float32)
  np.testing.assert_allclose(losses.vid(mu, t, best), np.mean(0.5 * (np.log(r2) + 1)), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(losses.vid, argnums=2)(mu, t, best), 0.0, atol=1e-6)
  for delta in (-0.3, 0.3):
    assert float(losses.vid(mu, t, best + delta)) > float(losses.vid(mu, t, best))

  # Gradient descent on α from RepDistiller's σ² = 5 converges there (step 8: the loss's curvature in α is
  # at most about 1/(2C) = 1/8 per channel).
  def descend(alpha):
    return jax.lax.scan(lambda a, _: (a - 8.0 * jax.grad(losses.vid, argnums=2)(mu, t, a), None), alpha, None,
                        length=3000)[0]

  start = jnp.full((4,), vid_log_scale_for_variance(5.0), jnp.float32)
  alpha = jax.jit(descend)(start)
  assert float(losses.vid(mu, t, alpha)) < float(losses.vid(mu, t, start))
  np.testing.assert_allclose(vid_variance(alpha), r2, rtol=1e-3)


# ---------------------------------------------------------------- distillers


def _output(seed, batch=6, channels=(8, 16, 32), sizes=(8, 4, 2), embed=12):
  rng = np.random.default_rng(seed)
  stages = tuple(jnp.asarray(np.maximum(rng.normal(size=(batch, s, s, c)), 0), jnp.float32)
                 for c, s in zip(channels, sizes))
  return ModelOutput(prediction=jnp.asarray(rng.normal(size=(batch, 10)), jnp.float32), stages=stages,
                     preact_stages=stages, embedding=jnp.asarray(rng.normal(size=(batch, embed)), jnp.float32))


BATCH = {"label": jnp.arange(6) % 3}


def _call(distiller, variables, s, t):
  """`distiller(variables, s, t, BATCH)`, jitted (distillers are hashable, so they can be closed over)."""
  return jax.jit(lambda v, s, t: distiller(v, s, t, BATCH))(variables, s, t)


def _init(distiller, s, t):
  return jax.jit(lambda s, t: distiller.init(jax.random.PRNGKey(2), s, t, BATCH))(s, t)


def test_rkd_and_area_rkd_distillers_weight_their_parts():
  s, t = _output(0), _output(1, channels=(16, 32, 64), embed=20)
  value, metrics, state = _call(distillers.RKD(), {}, s, t)
  d, a = RELATIONAL["rkd_distance"](s.embedding, t.embedding), RELATIONAL["rkd_angle"](s.embedding, t.embedding)
  np.testing.assert_allclose(value, 25 * d + 50 * a, rtol=1e-6)
  np.testing.assert_allclose(metrics["distance"], d, rtol=1e-6)
  np.testing.assert_allclose(metrics["angle"], a, rtol=1e-6)
  assert state == {}
  value, metrics, _ = _call(distillers.RKD(angle_weight=0.0, stage=1), {}, s, t)
  assert set(metrics) == {"distance"}
  np.testing.assert_allclose(value, 25 * RELATIONAL["rkd_distance"](s.stages[1], t.stages[1]), rtol=1e-6)

  area = RELATIONAL["area_rkd"](s.embedding, t.embedding)
  value, metrics, _ = _call(distillers.AreaRKD(), {}, s, t)
  assert set(metrics) == {"area"}
  np.testing.assert_allclose(value, 25 * area, rtol=1e-6)
  value, metrics, _ = _call(distillers.AreaRKD(area_weight=2.0, distance_weight=1.0, angle_weight=3.0), {}, s, t)
  np.testing.assert_allclose(value, 2 * area + d + 3 * a, rtol=1e-6)
  assert set(metrics) == {"area", "distance", "angle"}

  with pytest.raises(ValueError, match="every weight is 0"):
    distillers.RKD(distance_weight=0.0, angle_weight=0.0)({}, s, t, BATCH)
  with pytest.raises(ValueError, match="must be >= 0"):
    distillers.AreaRKD(area_weight=-1.0)
  with pytest.raises(ValueError, match="stage 3 does not exist"):
    distillers.RKD(stage=3)({}, s, t, BATCH)


def test_vid_init_builds_one_regressor_and_variance_per_stage():
  s, t = _output(0), _output(1, channels=(16, 32, 64))
  vid = distillers.VID()
  variables = _init(vid, s, t)
  params = variables["params"]
  assert set(variables) == {"params"} and set(params) == {"stage0", "stage1", "stage2"}
  for name, c_s, c_t in [("stage0", 8, 16), ("stage1", 16, 32), ("stage2", 32, 64)]:
    reg = params[name]["regressor"]
    chex.assert_shape([reg["Conv_0"]["kernel"], reg["Conv_1"]["kernel"], reg["Conv_2"]["kernel"]],
                      [(1, 1, c_s, c_t), (1, 1, c_t, c_t), (1, 1, c_t, c_t)])
    assert all("bias" not in layer for layer in reg.values())
    chex.assert_shape(params[name]["log_scale"], (c_t,))
    np.testing.assert_allclose(vid_variance(params[name]["log_scale"]), 5.0, rtol=1e-5)
  # Hidden width, chosen stages, a teacher paired at another index and pooling of a twice-larger map.
  vid = distillers.VID(stages=(0,), teacher_stages=(1,), hidden_channels=5)
  params = _init(vid, s, t)["params"]
  chex.assert_shape(params["stage0"]["regressor"]["Conv_2"]["kernel"], (1, 1, 5, 32))
  value, metrics, _ = _call(vid, {"params": params}, s, t)
  assert set(metrics) == {"stage0", "variance"} and np.isfinite(float(value))
  with pytest.raises(ValueError, match="same length"):
    distillers.VID(teacher_stages=(1,))


def test_vid_equals_the_pure_loss_and_its_gradient_reaches_alpha_and_regressor_not_teacher():
  s, t = _output(0), _output(1, channels=(16, 32, 64))
  vid = distillers.VID()
  params = _init(vid, s, t)["params"]
  value, metrics, _ = _call(vid, {"params": params}, s, t)
  @jax.jit
  def by_hand(params, s, t):
    per_stage = []
    for i in range(3):
      c = t.stages[i].shape[-1]
      module = distillers.VIDStage(hidden=c, channels=c, init_log_scale=vid_log_scale_for_variance(5.0))
      mu, alpha = module.apply({"params": params[f"stage{i}"]}, s.stages[i])
      per_stage.append(losses.vid(mu, t.stages[i], alpha))
    return per_stage

  per_stage = by_hand(params, s, t)
  for i in range(3):
    np.testing.assert_allclose(metrics[f"stage{i}"], per_stage[i], rtol=1e-6)
  np.testing.assert_allclose(value, sum(per_stage), rtol=1e-6)
  np.testing.assert_allclose(metrics["variance"], 5.0, rtol=1e-5)

  def f(p, s_stages, t_stages):
    return vid({"params": p}, s.replace(stages=s_stages), t.replace(stages=t_stages), BATCH)[0]

  g_params, g_student, g_teacher = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(params, s.stages, t.stages)
  for name in ("stage0", "stage1", "stage2"):
    assert float(jnp.abs(g_params[name]["log_scale"]).sum()) > 0
    for layer in g_params[name]["regressor"].values():
      assert float(jnp.abs(layer["kernel"]).sum()) > 0
  assert all(float(jnp.abs(g).sum()) > 0 for g in g_student)
  for g in g_teacher:
    np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("term,spec,metric_names", [
    ("rkd", {"weight": 1.0}, {"distance", "angle"}),
    ("area_rkd", {"weight": 1.0, "distance_weight": 25.0}, {"area", "distance"}),
    ("vid", {"weight": 1.0}, {"stage0", "stage1", "stage2", "variance"}),
])
def test_distillers_build_from_config_and_jit(term, spec, metric_names):
  s, t = _output(0), _output(1, channels=(16, 32, 64), embed=20)
  total = distillers.from_config({"ce": {"weight": 1.0}, term: spec})
  variables = _init(total, s, t)
  assert set(variables.get("params", {})) == ({"vid"} if term == "vid" else set())

  @jax.jit
  def step(variables, s, t):
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: total({**variables, "params": p}, s, t, BATCH, train=True)[:2], has_aux=True)(
            variables.get("params", {}))
    return loss, metrics, grads

  loss, metrics, grads = step(variables, s, t)
  np.testing.assert_allclose(loss, metrics["ce/loss"] + metrics[f"{term}/loss"], rtol=1e-6)
  assert {k.split("/", 1)[1] for k in metrics if k.startswith(f"{term}/")} == metric_names | {"loss"}
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
