"""CSKD/CSWT and R2KD losses, the pruned-teacher helpers and their distillers.

References are recomputed here with NumPy in float64, term by term, from the formulas in the docstrings
(CSKD, arXiv:2311.14307; R2KD, arXiv:2311.13934), not from the functions under test.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import distillers, losses
from kd_jax.compression import pruning
from kd_jax.losses import similarity
from kd_jax.models.outputs import ModelOutput

EPS = 1e-8


# ----------------------------------------------------------------------------- NumPy float64 references


def _softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _abs_cos(a, b, axis):
  return np.abs((a * b).sum(axis)) / (np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis) + EPS)


def _np_cskd(zs, zt, t, alpha):
  ps, pt = _softmax(np.asarray(zs) / t), _softmax(np.asarray(zt) / t)
  return alpha * t * t * (1 - _abs_cos(ps, pt, 0).mean())


def _np_cswt(zs, zt, lo, hi):
  s = _abs_cos(_softmax(zs), _softmax(zt), 1)
  return lo + (hi - lo) * (s.max() - s) / (s.max() - s.min()), s


def _np_cskd_cswt(zs, zt, temps, alpha):
  temps = np.asarray(temps, np.float64)[:, None]
  ps, pt = _softmax(np.asarray(zs) / temps), _softmax(np.asarray(zt) / temps)
  return alpha * temps.mean() ** 2 * (1 - _abs_cos(ps, pt, 0).mean())


def _np_r2kd(zs, zt, t, value_weight=2.0, rank_weight=2.0):
  ps, pt = _softmax(np.asarray(zs) / t), _softmax(np.asarray(zt) / t)
  value = value_weight * t * t * ((1 - _abs_cos(ps, pt, 1).mean()) + (1 - _abs_cos(ps, pt, 0).mean()))
  # Spearman with distinct values: rho = 1 - 6 Σ d² / (C (C² - 1)).
  c = ps.shape[1]
  rs, rt = ps.argsort(1).argsort(1), pt.argsort(1).argsort(1)
  rho = 1 - 6 * ((rs - rt) ** 2).sum(1) / (c * (c * c - 1))
  return value, rank_weight * (1 - rho.mean())


def _logits(seed, b=6, c=5, scale=2.0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(b, c)) * scale, rng.normal(size=(b, c)) * scale


# ----------------------------------------------------------------------------- CSKD


@pytest.mark.parametrize("t,alpha", [(1.0, 1.0), (4.0, 2.0), (2.5, 0.5)])
def test_cskd_matches_numpy(t, alpha):
  zs, zt = _logits(0)
  got = losses.cskd(jnp.asarray(zs), jnp.asarray(zt), t, alpha=alpha)
  np.testing.assert_allclose(got, _np_cskd(zs, zt, t, alpha), rtol=1e-5, atol=1e-6)


def test_cskd_defaults_are_reference_code_values():
  zs, zt = _logits(1)
  np.testing.assert_allclose(losses.cskd(jnp.asarray(zs), jnp.asarray(zt)), _np_cskd(zs, zt, 4.0, 2.0), rtol=1e-5)
  np.testing.assert_allclose(losses.cskd_cswt(jnp.asarray(zs), jnp.asarray(zt)),
                             _np_cskd_cswt(zs, zt, _np_cswt(zs, zt, 2.0, 6.0)[0], 2.0), rtol=1e-4)


def test_cskd_t_squared_convention_and_teacher_is_constant():
  zs, zt = (jnp.asarray(a) for a in _logits(2))
  # The loss at T equals T² times the unscaled loss of the pre-divided logits at T = 1.
  np.testing.assert_allclose(losses.cskd(zs, zt, 3.0, alpha=1.0), 9.0 * losses.cskd(zs / 3, zt / 3, 1.0, alpha=1.0),
                             rtol=1e-5)
  np.testing.assert_allclose(jax.grad(lambda z: losses.cskd(zs, z))(zt), 0.0)
  np.testing.assert_allclose(jax.grad(lambda z: losses.cskd_cswt(zs, z))(zt), 0.0)


def test_cskd_zero_when_equal_and_batch_of_one_is_zero():
  z = jax.random.normal(jax.random.PRNGKey(0), (8, 10)) * 3
  np.testing.assert_allclose(losses.cskd(z, z), 0.0, atol=1e-5)
  np.testing.assert_allclose(losses.cskd_cswt(z, z), 0.0, atol=1e-5)
  # A column over a batch of one is one positive number: its |cos| is 1, so the class-wise loss vanishes
  # whatever the logits (the batch dependence of CSKD).
  # (Up to the ε = 1e-8 of the reference's |a·b| / (‖a‖‖b‖ + ε), visible when p_s·p_t is ~1e-6.)
  zt = jax.random.normal(jax.random.PRNGKey(1), (1, 10)) * 3
  np.testing.assert_allclose(losses.cskd(z[:1], zt), 0.0, atol=1e-3)


def test_cswt_endpoints_exact_monotone_and_matches_numpy():
  zs, zt = _logits(3, b=16, c=7)
  temps = np.asarray(losses.cswt_temperatures(jnp.asarray(zs), jnp.asarray(zt), t_low=2.0, t_high=6.0))
  ref, s = _np_cswt(zs, zt, 2.0, 6.0)
  np.testing.assert_allclose(temps, ref, atol=1e-4)
  assert temps[np.argmax(s)] == 2.0 and temps[np.argmin(s)] == 6.0   # exactly, not approximately
  assert temps.min() == 2.0 and temps.max() == 6.0
  # Higher similarity -> lower (or equal) temperature.
  order = np.argsort(s)
  assert np.all(np.diff(temps[order]) <= 1e-6)


def test_cswt_degenerate_batches_get_the_midpoint_and_no_gradient():
  z = jax.random.normal(jax.random.PRNGKey(2), (5, 6))
  # B = 1, student == teacher (s_i all ≈ 1 up to round-off), and exactly equal s_i with eps = 0.
  np.testing.assert_array_equal(losses.cswt_temperatures(z[:1], -z[:1]), [4.0])
  np.testing.assert_allclose(losses.cswt_temperatures(z, z), 4.0)
  rows_s, rows_t = jnp.tile(z[:1], (4, 1)), jnp.tile(z[1:2], (4, 1))
  np.testing.assert_array_equal(losses.cswt_temperatures(rows_s, rows_t, t_low=1.0, t_high=3.0, eps=0.0), 2.0)
  zt = jax.random.normal(jax.random.PRNGKey(3), (5, 6))
  np.testing.assert_array_equal(jax.grad(lambda a: losses.cswt_temperatures(a, zt).sum())(z), 0.0)


def test_cskd_cswt_matches_numpy_and_reduces_to_cskd_for_constant_temperatures():
  zs, zt = _logits(4, b=8, c=6)
  temps = np.linspace(2.0, 6.0, 8)
  got = losses.cskd_cswt(jnp.asarray(zs), jnp.asarray(zt), alpha=1.5, temperatures=jnp.asarray(temps))
  np.testing.assert_allclose(got, _np_cskd_cswt(zs, zt, temps, 1.5), rtol=1e-5)
  const = losses.cskd_cswt(jnp.asarray(zs), jnp.asarray(zt), temperatures=jnp.full((8,), 3.0))
  np.testing.assert_allclose(const, losses.cskd(jnp.asarray(zs), jnp.asarray(zt), 3.0), rtol=1e-6)
  with pytest.raises(ValueError, match="temperatures"):
    losses.cskd_cswt(jnp.asarray(zs), jnp.asarray(zt), temperatures=jnp.ones((3,)))


# ----------------------------------------------------------------------------- invariances (all methods)


def _all_losses(zs, zt):
  return {"cskd": losses.cskd(zs, zt), "cskd_cswt": losses.cskd_cswt(zs, zt),
          "r2kd_value": losses.r2kd_value_loss(zs, zt), "r2kd_rank": losses.r2kd_rank_loss(zs, zt),
          "r2kd_soft": losses.r2kd_rank_loss(zs, zt, rank="soft")}


def test_per_sample_logit_shifts_leave_every_loss_unchanged():
  zs, zt = (jnp.asarray(a) for a in _logits(5, b=8, c=6))
  shift_s = jax.random.normal(jax.random.PRNGKey(4), (8, 1)) * 5
  shift_t = jax.random.normal(jax.random.PRNGKey(5), (8, 1)) * 5
  base, shifted = _all_losses(zs, zt), _all_losses(zs + shift_s, zt + shift_t)
  for name in base:
    np.testing.assert_allclose(shifted[name], base[name], rtol=1e-4, atol=1e-5, err_msg=name)
  np.testing.assert_allclose(losses.cswt_temperatures(zs + shift_s, zt + shift_t),
                             losses.cswt_temperatures(zs, zt), atol=1e-4)


def test_joint_sample_and_class_permutations_leave_every_loss_unchanged():
  zs, zt = (jnp.asarray(a) for a in _logits(6, b=8, c=6))
  rows, cols = np.random.default_rng(0).permutation(8), np.random.default_rng(1).permutation(6)
  base = _all_losses(zs, zt)
  for name, value in _all_losses(zs[rows][:, cols], zt[rows][:, cols]).items():
    np.testing.assert_allclose(value, base[name], rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(losses.cswt_temperatures(zs[rows], zt[rows]), losses.cswt_temperatures(zs, zt)[rows])


def test_cosine_scale_invariance_holds_for_probabilities_not_for_per_class_logit_shifts():
  # What holds: each class-wise |cos| compares one column of P_s with one of P_t, so rescaling a column by
  # c_j > 0 (a per-class factor) changes nothing; rescaling a row changes the columns non-uniformly.
  rng = np.random.default_rng(2)
  p_s, p_t = rng.uniform(0.01, 1, size=(6, 4)), rng.uniform(0.01, 1, size=(6, 4))
  cols, rows = rng.uniform(0.1, 10, size=(1, 4)), rng.uniform(0.1, 10, size=(6, 1))
  colwise = similarity.abs_cosine_similarity(jnp.asarray(p_s), jnp.asarray(p_t), axis=0)
  np.testing.assert_allclose(similarity.abs_cosine_similarity(jnp.asarray(p_s * cols), jnp.asarray(p_t), axis=0),
                             colwise, rtol=1e-5)
  assert not np.allclose(similarity.abs_cosine_similarity(jnp.asarray(p_s * rows), jnp.asarray(p_t), axis=0),
                         colwise, rtol=1e-3)
  # ... and the row-wise (sample) cosine is the mirror image: invariant under per-row factors.
  np.testing.assert_allclose(similarity.abs_cosine_similarity(jnp.asarray(p_s * rows), jnp.asarray(p_t), axis=1),
                             similarity.abs_cosine_similarity(jnp.asarray(p_s), jnp.asarray(p_t), axis=1), rtol=1e-5)
  # A per-class logit shift z[:, j] += a_j is *not* a column rescaling of P (each row is renormalised by its
  # own partition function), so the class-wise loss does change under it.
  zs, zt = (jnp.asarray(a) for a in _logits(7))
  a = jnp.asarray(rng.normal(size=(1, 5)) * 2)
  assert not np.isclose(losses.cskd(zs + a, zt), losses.cskd(zs, zt), rtol=1e-3)


# ----------------------------------------------------------------------------- R2KD


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_r2kd_matches_numpy(t):
  zs, zt = _logits(8, b=7, c=9)
  total, parts = losses.r2kd(jnp.asarray(zs), jnp.asarray(zt), t, return_parts=True)
  value, rank = _np_r2kd(zs, zt, t)
  np.testing.assert_allclose(parts["value"], value, rtol=1e-5)
  np.testing.assert_allclose(parts["rank"], rank, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(total, value + rank, rtol=1e-5)
  np.testing.assert_allclose(losses.r2kd(jnp.asarray(zs), jnp.asarray(zt), t), total, rtol=1e-6)
  # Weights scale their own term; rank='none' drops the rank term.
  np.testing.assert_allclose(losses.r2kd(jnp.asarray(zs), jnp.asarray(zt), t, value_weight=1.0, rank="none"),
                             value / 2, rtol=1e-5)


def test_r2kd_zero_when_equal():
  z = jax.random.normal(jax.random.PRNGKey(6), (8, 10)) * 3
  total, parts = losses.r2kd(z, z, return_parts=True)
  np.testing.assert_allclose(parts["value"], 0.0, atol=1e-5)
  np.testing.assert_allclose(parts["rank"], 0.0, atol=1e-6)
  np.testing.assert_allclose(losses.r2kd(z, z, rank="soft"), 0.0, atol=1e-5)


def test_r2kd_rank_term_has_exactly_zero_gradient_by_default_and_soft_rank_has_one():
  zs, zt = (jnp.asarray(a) for a in _logits(9, b=6, c=8))
  g_rank = jax.grad(lambda z: losses.r2kd_rank_loss(z, zt))(zs)
  np.testing.assert_array_equal(g_rank, 0.0)
  g_total = jax.grad(lambda z: losses.r2kd(z, zt))(zs)
  g_value = jax.grad(lambda z: losses.r2kd_value_loss(z, zt))(zs)
  np.testing.assert_array_equal(g_total, g_value)
  g_soft = jax.grad(lambda z: losses.r2kd_rank_loss(z, zt, rank="soft"))(zs)
  assert np.all(np.isfinite(g_soft)) and np.abs(g_soft).max() > 1e-4


def test_soft_ranks_approach_hard_ranks_for_large_strength():
  x = jnp.asarray(np.random.default_rng(3).permutation(12).reshape(2, 6).astype(np.float32) * 0.1)
  hard = np.asarray(similarity._hard_ranks(x))
  np.testing.assert_array_equal(hard, np.argsort(np.argsort(np.asarray(x), 1), 1) + 1)
  np.testing.assert_allclose(similarity.soft_ranks(x, 1e4), hard, atol=1e-3)
  assert np.abs(np.asarray(similarity.soft_ranks(x, 1.0)) - hard).max() > 0.1   # genuinely soft at low strength
  zs, zt = (jnp.asarray(a) for a in _logits(10, b=6, c=8, scale=4.0))
  np.testing.assert_allclose(losses.r2kd_rank_loss(zs, zt, rank="soft", soft_rank_strength=1e4),
                             losses.r2kd_rank_loss(zs, zt), atol=1e-3)


def test_r2kd_teacher_blend_and_errors():
  zt, zp = (jnp.asarray(a) for a in _logits(11))
  np.testing.assert_allclose(losses.r2kd_teacher_logits(zt, zp), 0.7 * zt + 0.3 * zp, rtol=1e-6)
  np.testing.assert_allclose(losses.r2kd_teacher_logits(zt, zp, weight=1.0), zt)
  with pytest.raises(ValueError, match="rank"):
    losses.r2kd(zt, zp, rank="spearman")
  with pytest.raises(ValueError, match="same shape"):
    losses.r2kd(zt, zp[:, :3])
  with pytest.raises(ValueError, match="same shape"):
    losses.cskd(zt, zp[:3])


def test_gradients_finite_for_extreme_logits():
  zs = jax.random.normal(jax.random.PRNGKey(7), (8, 10)) * 40
  zt = jax.random.normal(jax.random.PRNGKey(8), (8, 10)) * 40
  for name, fn in [("cskd", lambda z: losses.cskd(z, zt)), ("cskd_cswt", lambda z: losses.cskd_cswt(z, zt)),
                   ("r2kd", lambda z: losses.r2kd(z, zt)), ("r2kd_soft", lambda z: losses.r2kd(z, zt, rank="soft"))]:
    value, grad = jax.value_and_grad(fn)(zs)
    assert np.isfinite(value) and np.all(np.isfinite(grad)), name


# ----------------------------------------------------------------------------- pruning


class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3))(x)                                   # kernel 3·3·2·4 = 72 -> round(7.2) = 7
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.relu(x).mean((1, 2))
    x = nn.Dense(5)(x)                                          # kernel 4·5 = 20 -> 2
    return nn.Dense(6)(x)                                       # kernel 5·6 = 30 -> 3


def test_prune_by_magnitude_zeros_the_smallest_fraction_per_kernel_and_nothing_else():
  variables = _Tiny().init(jax.random.PRNGKey(0), jnp.ones((2, 5, 5, 2)))
  params = variables["params"]
  pruned = pruning.prune_by_magnitude(params, rate=0.1)
  expected_zeros = {"Conv_0": 7, "Dense_0": 2, "Dense_1": 3}
  for layer, k in expected_zeros.items():
    w, p = np.asarray(params[layer]["kernel"]), np.asarray(pruned[layer]["kernel"])
    zeroed = p == 0
    assert zeroed.sum() == k == round(0.1 * w.size), layer
    assert np.abs(w[zeroed]).max() <= np.abs(w[~zeroed]).min(), layer      # the smallest |w| went
    np.testing.assert_array_equal(p[~zeroed], w[~zeroed])
    np.testing.assert_array_equal(pruned[layer]["bias"], params[layer]["bias"])
  np.testing.assert_array_equal(pruned["BatchNorm_0"]["scale"], params["BatchNorm_0"]["scale"])
  np.testing.assert_array_equal(pruned["BatchNorm_0"]["bias"], params["BatchNorm_0"]["bias"])
  assert np.count_nonzero(np.asarray(params["Conv_0"]["kernel"]) == 0) == 0    # the input is not modified
  # Per layer, not a global threshold: every kernel loses its own 10%, whatever its scale.
  scaled = dict(params, Dense_1=dict(params["Dense_1"], kernel=params["Dense_1"]["kernel"] * 1e3))
  assert int((pruning.prune_by_magnitude(scaled, 0.1)["Dense_1"]["kernel"] == 0).sum()) == 3
  out = _Tiny().apply({**variables, "params": pruned}, jnp.ones((2, 5, 5, 2)))
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(pruning.sparsity(pruned), 12 / 122)


def test_prune_by_magnitude_ties_rates_and_jit():
  # All |w| equal: exactly round(rate·n) entries go, the lowest flat indices first (stable order).
  w = jnp.asarray(np.where(np.arange(20) % 2, 1.0, -1.0).reshape(4, 5), jnp.float32)
  tree = {"layer": {"kernel": w, "bias": jnp.ones(5)}, "vec": {"kernel": jnp.ones(7)}}
  pruned = pruning.prune_by_magnitude(tree, rate=0.25)
  flat = np.asarray(pruned["layer"]["kernel"]).reshape(-1)
  np.testing.assert_array_equal(np.flatnonzero(flat == 0), np.arange(5))
  np.testing.assert_array_equal(pruned["vec"]["kernel"], 1.0)          # ndim 1: not a conv/dense kernel
  np.testing.assert_array_equal(pruning.prune_by_magnitude(tree, 0.0)["layer"]["kernel"], w)
  assert int((pruning.prune_by_magnitude(tree, 1.0)["layer"]["kernel"] == 0).sum()) == 20
  jitted = jax.jit(pruning.prune_by_magnitude, static_argnums=1)(tree, 0.25)
  np.testing.assert_array_equal(jitted["layer"]["kernel"], pruned["layer"]["kernel"])
  with pytest.raises(ValueError, match="rate"):
    pruning.prune_by_magnitude(tree, 1.5)


# ----------------------------------------------------------------------------- distillers


def _output(key, batch=8, classes=10):
  logits = jax.random.normal(key, (batch, classes)) * 2
  return ModelOutput(prediction=logits, stages=(), preact_stages=(), embedding=jnp.zeros((batch, 1)))


BATCH = {"label": jnp.arange(8) % 10}


def test_cskd_distiller_from_config_jitted():
  s, t = _output(jax.random.PRNGKey(0)), _output(jax.random.PRNGKey(1))
  total = distillers.from_config({"ce": {"weight": 1.0}, "cskd": {"weight": 1.0}})
  call = jax.jit(lambda s, t: total({}, s, t, BATCH, rng=jax.random.PRNGKey(2), train=True, step=0)[:2])
  loss, metrics = call(s, t)
  fixed, cswt = losses.cskd(s.logits, t.logits), losses.cskd_cswt(s.logits, t.logits)
  np.testing.assert_allclose(metrics["cskd/cs_fixed"], fixed, rtol=1e-5)
  np.testing.assert_allclose(metrics["cskd/cs_cswt"], cswt, rtol=1e-5)
  np.testing.assert_allclose(metrics["cskd/loss"], fixed + cswt, rtol=1e-5)
  np.testing.assert_allclose(loss, losses.cross_entropy(s.logits, BATCH["label"]) + fixed + cswt, rtol=1e-5)
  assert 2.0 <= float(metrics["cskd/t_mean"]) <= 6.0
  only_fixed = distillers.make_distiller("cskd", cswt=False, temperature=2.0)
  np.testing.assert_allclose(only_fixed({}, s, t, BATCH, rng=None, train=False)[0],
                             losses.cskd(s.logits, t.logits, 2.0), rtol=1e-6)
  with pytest.raises(Exception, match="t_low"):
    distillers.make_distiller("cskd", t_low=5.0, t_high=3.0)


def test_r2kd_distiller_from_config_jitted_single_teacher_and_pruned_pair():
  s, t, tp = (_output(jax.random.PRNGKey(i)) for i in (3, 4, 5))
  total = distillers.from_config({"ce": {"weight": 1.0}, "r2kd": {"weight": 1.0}})
  call = jax.jit(lambda s, t: total({}, s, t, BATCH, rng=jax.random.PRNGKey(2), train=True, step=0)[:2])
  loss, metrics = call(s, t)
  expected, parts = losses.r2kd(s.logits, t.logits, return_parts=True)
  np.testing.assert_allclose(metrics["r2kd/loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["r2kd/value"], parts["value"], rtol=1e-5)
  np.testing.assert_allclose(metrics["r2kd/rank"], parts["rank"], rtol=1e-5)
  np.testing.assert_allclose(loss, losses.cross_entropy(s.logits, BATCH["label"]) + expected, rtol=1e-5)
  _, pair_metrics = call(s, (t, tp))
  blended = losses.r2kd(s.logits, 0.7 * t.logits + 0.3 * tp.logits)
  np.testing.assert_allclose(pair_metrics["r2kd/loss"], blended, rtol=1e-5)
  key = jax.random.PRNGKey(6)
  grads = jax.grad(lambda z: total({}, s.replace(prediction=z), (t, tp), BATCH, rng=key, train=True)[0])(s.logits)
  assert np.all(np.isfinite(grads))
  with pytest.raises(ValueError, match="pair"):
    distillers.make_distiller("r2kd")({}, s, (t, tp, t), BATCH, rng=None, train=False)
  with pytest.raises(Exception, match="rank"):
    distillers.make_distiller("r2kd", rank="pearson")
