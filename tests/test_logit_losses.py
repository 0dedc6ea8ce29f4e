"""Logit methods beyond Hinton KD: DKD, DIST, logit standardization, Energy KD, ensemble KD.

Expected values are computed independently in NumPy float64 (or by hand), never by calling the function
under test; identities and invariances are checked on random logits.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import distillers, losses
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput


# ---------------------------------------------------------------- NumPy float64 references


def _softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), -1)


def _np_dkd_parts(zs, zt, y, t):
  """TCKD and NCKD per example from their definitions: binary [p_y, 1 − p_y] and renormalised non-targets."""
  ps, pt = _softmax(np.asarray(zs) / t), _softmax(np.asarray(zt) / t)
  tckd, nckd = [], []
  for b, label in enumerate(np.asarray(y)):
    bs = np.array([ps[b, label], 1 - ps[b, label]])
    bt = np.array([pt[b, label], 1 - pt[b, label]])
    tckd.append(_kl(bt, bs))
    keep = np.arange(ps.shape[1]) != label
    nckd.append(_kl(pt[b, keep] / pt[b, keep].sum(), ps[b, keep] / ps[b, keep].sum()))
  return np.array(tckd), np.array(nckd)


def _np_pearson_mean(a, b):
  return np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])


def _np_zscore(z):
  z = np.asarray(z, np.float64)
  return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)


def _np_energy(z, t):
  z = np.asarray(z, np.float64) / t
  m = z.max(-1)
  return -t * (m + np.log(np.exp(z - m[:, None]).sum(-1)))


def _logits(seed, shape=(6, 7), scale=3.0):
  return np.random.default_rng(seed).normal(size=shape) * scale


LABELS = np.array([0, 1, 2, 3, 4, 5])


# ---------------------------------------------------------------- DKD


def test_dkd_parts_known_values_by_hand():
  # T = 1, three classes: p_s = (1/3, 1/3, 1/3), p_t = softmax(log 2, 0, 0) = (1/2, 1/4, 1/4).
  zs = jnp.zeros((2, 3))
  zt = jnp.array([[np.log(2.0), 0.0, 0.0]] * 2)
  tckd, nckd = losses.dkd_parts(zs, zt, labels=jnp.array([0, 1]), temperature=1.0)
  # label 0: b_t = (1/2, 1/2), b_s = (1/3, 2/3); the non-targets are uniform for both, so NCKD = 0.
  # label 1: b_t = (1/4, 3/4), b_s = (1/3, 2/3); non-targets {0, 2}: p̂_t = (2/3, 1/3), p̂_s = (1/2, 1/2).
  expected_tckd = [0.5 * np.log(1.5) + 0.5 * np.log(0.75), 0.25 * np.log(0.75) + 0.75 * np.log(9 / 8)]
  expected_nckd = [0.0, 2 / 3 * np.log(4 / 3) + 1 / 3 * np.log(2 / 3)]
  np.testing.assert_allclose(tckd, expected_tckd, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(nckd, expected_nckd, rtol=1e-5, atol=1e-7)
  # dkd = T² (α mean TCKD + β mean NCKD).
  np.testing.assert_allclose(losses.dkd(zs, zt, labels=jnp.array([0, 1]), alpha=2.0, beta=3.0, temperature=1.0),
                             2.0 * np.mean(expected_tckd) + 3.0 * np.mean(expected_nckd), rtol=1e-5)


def test_dkd_matches_numpy_reference_with_t_squared():
  zs, zt = _logits(0), _logits(1)
  for t in (1.0, 4.0):
    tckd, nckd = _np_dkd_parts(zs, zt, LABELS, t)
    got_t, got_n = losses.dkd_parts(jnp.asarray(zs), jnp.asarray(zt), labels=jnp.asarray(LABELS), temperature=t)
    np.testing.assert_allclose(got_t, tckd, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_n, nckd, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        losses.dkd(jnp.asarray(zs), jnp.asarray(zt), labels=jnp.asarray(LABELS), alpha=1.0, beta=8.0, temperature=t),
        t * t * (tckd.mean() + 8.0 * nckd.mean()), rtol=1e-4)


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_dkd_decomposition_identity_per_sample(t):
  """Zhao et al. Eq. 4: KL(p_t||p_s) = TCKD + (1 − p_t,y)·NCKD, per example, with the unscaled KLs."""
  zs, zt = jnp.asarray(_logits(2, (16, 10))), jnp.asarray(_logits(3, (16, 10)))
  y = jnp.asarray(np.random.default_rng(4).integers(0, 10, 16))
  tckd, nckd = losses.dkd_parts(zs, zt, labels=y, temperature=t)
  kl = np.asarray(losses.kl_divergence_per_example(zs, zt, t), np.float64)
  pt_target = _softmax(np.asarray(zt) / t)[np.arange(16), np.asarray(y)]
  np.testing.assert_allclose(np.asarray(tckd) + (1 - pt_target) * np.asarray(nckd), kl, rtol=1e-4, atol=1e-6)
  # The weight is the *teacher's* non-target mass: the student's (a plausible wrong formula) breaks it.
  ps_target = _softmax(np.asarray(zs) / t)[np.arange(16), np.asarray(y)]
  assert not np.allclose(np.asarray(tckd) + (1 - ps_target) * np.asarray(nckd), kl, rtol=1e-3)
  # Both parts carry information on these logits (neither is trivially 0 or all of KD).
  assert np.all(np.asarray(tckd) > 0) and np.all(np.asarray(nckd) > 0)


def test_dkd_zero_when_equal_shift_invariant_and_finite_for_confident_teacher():
  z = jnp.asarray(_logits(5))
  y = jnp.asarray(LABELS)
  np.testing.assert_allclose(losses.dkd(z, z, labels=y), 0.0, atol=1e-5)
  zt = jnp.asarray(_logits(6))
  shift = jnp.asarray(np.random.default_rng(7).normal(size=(6, 1)) * 5)
  np.testing.assert_allclose(losses.dkd(z + shift, zt - shift, labels=y), losses.dkd(z, zt, labels=y), rtol=1e-4)
  # A teacher so sure of the target that 1 − p_y rounds to 0 in float32: TCKD stays finite (log space).
  confident = zt.at[jnp.arange(6), y].set(200.0)
  value, grad = jax.value_and_grad(lambda s: losses.dkd(s, confident, labels=y))(z)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


# ---------------------------------------------------------------- DIST


def test_dist_matches_numpy_pearson_reference():
  zs, zt = _logits(8), _logits(9)
  for t in (1.0, 4.0):
    ps, pt = _softmax(zs / t), _softmax(zt / t)
    inter = 1 - _np_pearson_mean(ps, pt)
    intra = 1 - _np_pearson_mean(ps.T, pt.T)
    np.testing.assert_allclose(losses.dist(jnp.asarray(zs), jnp.asarray(zt), beta=2.0, gamma=3.0, temperature=t),
                               t * t * (2.0 * inter + 3.0 * intra), rtol=1e-4)
    got_inter, got_intra = losses.dist_relations(jnp.asarray(ps), jnp.asarray(pt))
    np.testing.assert_allclose([got_inter, got_intra], [inter, intra], rtol=1e-4)


def test_dist_relations_invariant_to_positive_scaling_and_shifting_of_probabilities():
  rng = np.random.default_rng(10)
  ps, pt = _softmax(_logits(11)), _softmax(_logits(12))
  inter, intra = losses.dist_relations(jnp.asarray(ps), jnp.asarray(pt))
  # One a·P + b for the whole matrix: both relations unchanged.
  for a, b in ((3.0, 0.5), (0.2, -1.0)):
    np.testing.assert_allclose(losses.dist_relations(jnp.asarray(ps), jnp.asarray(a * pt + b)), [inter, intra],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(losses.dist_relations(jnp.asarray(a * ps + b), jnp.asarray(pt)), [inter, intra],
                               rtol=1e-4, atol=1e-6)
  # Per-sample (row) maps leave the inter-class relation unchanged; per-class (column) maps the intra one.
  a_row, b_row = rng.uniform(0.5, 3, (6, 1)), rng.normal(size=(6, 1))
  np.testing.assert_allclose(losses.dist_relations(jnp.asarray(ps), jnp.asarray(a_row * pt + b_row))[0], inter,
                             rtol=1e-4, atol=1e-6)
  a_col, b_col = rng.uniform(0.5, 3, (1, 7)), rng.normal(size=(1, 7))
  np.testing.assert_allclose(losses.dist_relations(jnp.asarray(ps), jnp.asarray(a_col * pt + b_col))[1], intra,
                             rtol=1e-4, atol=1e-6)
  # A negative scaling flips the correlation: the loss is not blind to it.
  assert not np.allclose(losses.dist_relations(jnp.asarray(ps), jnp.asarray(-pt))[0], inter)


def test_dist_zero_when_equal_and_invariant_to_per_sample_logit_shift():
  z = jnp.asarray(_logits(13))
  # ≈ 0 up to the eps of the correlation and float32 rounding, both × T² = 16.
  np.testing.assert_allclose(losses.dist(z, z, temperature=4.0), 0.0, atol=1e-4)
  zt = jnp.asarray(_logits(14))
  shift = jnp.asarray(np.random.default_rng(15).normal(size=(6, 1)) * 5)
  np.testing.assert_allclose(losses.dist(z + shift, zt - shift, temperature=4.0),
                             losses.dist(z, zt, temperature=4.0), rtol=1e-4)


# ---------------------------------------------------------------- logit standardization


def test_logit_standardized_kd_matches_numpy_reference():
  zs, zt = _logits(16), _logits(17)
  for t in (1.0, 2.0):
    expected = t * t * np.mean(_kl(_softmax(_np_zscore(zt) / t), _softmax(_np_zscore(zs) / t)))
    np.testing.assert_allclose(losses.logit_standardized_kd(jnp.asarray(zs), jnp.asarray(zt), t), expected,
                               rtol=1e-4)
  np.testing.assert_allclose(losses.standardize_logits(jnp.asarray(zs)), _np_zscore(zs), rtol=1e-5, atol=1e-6)


def test_logit_standardized_kd_invariant_to_per_sample_affine_maps_and_zero_when_equal():
  rng = np.random.default_rng(18)
  zs, zt = _logits(19), _logits(20)
  base = losses.logit_standardized_kd(jnp.asarray(zs), jnp.asarray(zt))
  a, b = rng.uniform(0.1, 10, (6, 1)), rng.normal(size=(6, 1)) * 10
  c, d = rng.uniform(0.1, 10, (6, 1)), rng.normal(size=(6, 1)) * 10
  np.testing.assert_allclose(losses.logit_standardized_kd(jnp.asarray(a * zs + b), jnp.asarray(c * zt + d)), base,
                             rtol=1e-4)
  # Plain KD is not scale invariant: the standardization is what makes the difference.
  assert not np.allclose(losses.kd(jnp.asarray(a * zs + b), jnp.asarray(zt), 2.0),
                         losses.kd(jnp.asarray(zs), jnp.asarray(zt), 2.0), rtol=1e-2)
  # A student that is any positive affine map of the teacher already has zero loss.
  np.testing.assert_allclose(losses.logit_standardized_kd(jnp.asarray(a * zt + b), jnp.asarray(zt)), 0.0,
                             atol=1e-5)


# ---------------------------------------------------------------- Energy KD


def test_energy_score_known_values_and_shift():
  z = _logits(21)
  for t in (1.0, 4.0):
    np.testing.assert_allclose(losses.energy_score(jnp.asarray(z), t), _np_energy(z, t), rtol=1e-5)
  # Two equal logits 0 at T = 1: E = −log 2.
  np.testing.assert_allclose(losses.energy_score(jnp.zeros((1, 2))), [-np.log(2.0)], rtol=1e-6)
  # A per-sample shift c moves the energy by −c: Energy KD is *not* invariant to teacher shifts.
  np.testing.assert_allclose(losses.energy_score(jnp.asarray(z + 3.0), 4.0), _np_energy(z, 4.0) - 3.0, rtol=1e-5)


def test_energy_thresholds_follow_the_reference_indexing():
  energies = np.random.default_rng(22).permutation(np.arange(10.0))
  # sorted e = 0..9; low = e[⌊10·0.2⌋] = e[2]; high = e[−(⌊10·0.2⌋ + 1)] = e[−3].
  assert losses.energy_thresholds(energies, 0.2, 0.2) == (2.0, 7.0)
  assert losses.energy_thresholds(energies, 0.3, 0.0) == (3.0, 9.0)
  assert losses.energy_thresholds(jnp.asarray(energies), 0.0, 0.5) == (0.0, 4.0)
  for bad in ((1.0, 0.2), (0.2, -0.1)):
    with pytest.raises(ValueError, match="must be in"):
      losses.energy_thresholds(energies, *bad)
  with pytest.raises(ValueError, match="no energies"):
    losses.energy_thresholds(np.zeros((0,)))


def test_energy_temperatures_picked_by_the_thresholds_exactly():
  energies = jnp.arange(10.0)
  low, high = losses.energy_thresholds(energies, 0.2, 0.2)
  temps = losses.energy_temperatures(energies, low, high)
  # Strictly below the low threshold → 6 (paper rule), strictly above the high one → 2, else (ties too) 4.
  np.testing.assert_array_equal(temps, [6, 6, 4, 4, 4, 4, 4, 4, 2, 2])
  code = losses.energy_temperatures(energies, low, high, low_energy_temperature=2.0, high_energy_temperature=6.0)
  np.testing.assert_array_equal(code, [2, 2, 4, 4, 4, 4, 4, 4, 6, 6])
  # On random energies each group holds exactly ⌊N·fraction⌋ samples.
  e = jnp.asarray(np.random.default_rng(23).normal(size=1000))
  low, high = losses.energy_thresholds(e, 0.3, 0.2)
  temps = np.asarray(losses.energy_temperatures(e, low, high, low_energy_temperature=5.0, temperature=3.0,
                                                high_energy_temperature=1.5))
  assert (temps == 5.0).sum() == 300 and (temps == 1.5).sum() == 200 and (temps == 3.0).sum() == 500
  np.testing.assert_array_equal(temps == 5.0, np.asarray(e) < low)
  np.testing.assert_array_equal(temps == 1.5, np.asarray(e) > high)


def test_energy_kd_matches_numpy_reference_and_properties():
  zs, zt = _logits(24, (8, 5)), _logits(25, (8, 5))
  e = _np_energy(zt, 4.0)
  low, high = np.sort(e)[2], np.sort(e)[-3]
  temps = np.where(e < low, 6.0, np.where(e > high, 2.0, 4.0))
  assert set(temps) == {2.0, 4.0, 6.0}
  expected = np.mean(temps**2 * _kl(_softmax(zt / temps[:, None]), _softmax(zs / temps[:, None])))
  got = losses.energy_kd(jnp.asarray(zs), jnp.asarray(zt), energy_low=low, energy_high=high)
  np.testing.assert_allclose(got, expected, rtol=1e-4)
  # With both thresholds outside the energies every sample gets the middle temperature: plain KD.
  np.testing.assert_allclose(losses.energy_kd(jnp.asarray(zs), jnp.asarray(zt), energy_low=-1e9, energy_high=1e9),
                             losses.kd(jnp.asarray(zs), jnp.asarray(zt), 4.0), rtol=1e-5)
  # Zero when the student equals the teacher; invariant to per-sample shifts of the student.
  np.testing.assert_allclose(losses.energy_kd(jnp.asarray(zt), jnp.asarray(zt), energy_low=low, energy_high=high),
                             0.0, atol=1e-5)
  shift = np.random.default_rng(26).normal(size=(8, 1)) * 5
  np.testing.assert_allclose(
      losses.energy_kd(jnp.asarray(zs + shift), jnp.asarray(zt), energy_low=low, energy_high=high), got, rtol=1e-4)


# ---------------------------------------------------------------- ensemble KD


def test_ensemble_kd_matches_numpy_reference():
  zs, t1, t2 = _logits(27), _logits(28), _logits(29)
  t = 4.0
  ps = _softmax(zs / t)
  q_probs = 0.25 * _softmax(t1 / t) + 0.75 * _softmax(t2 / t)
  q_logits = _softmax((0.25 * t1 + 0.75 * t2) / t)
  args = (jnp.asarray(zs), [jnp.asarray(t1), jnp.asarray(t2)], t)
  np.testing.assert_allclose(losses.ensemble_kd(*args, weights=[1.0, 3.0]), t * t * np.mean(_kl(q_probs, ps)),
                             rtol=1e-4)
  np.testing.assert_allclose(losses.ensemble_kd(*args, average="logits", weights=[1.0, 3.0]),
                             t * t * np.mean(_kl(q_logits, ps)), rtol=1e-4)
  # Uniform weights by default; a stacked [K, B, C] array works like a list.
  uniform = t * t * np.mean(_kl(0.5 * _softmax(t1 / t) + 0.5 * _softmax(t2 / t), ps))
  np.testing.assert_allclose(losses.ensemble_kd(*args), uniform, rtol=1e-4)
  np.testing.assert_allclose(losses.ensemble_kd(jnp.asarray(zs), jnp.stack(args[1]), t), uniform, rtol=1e-4)
  # One teacher is Hinton KD.
  np.testing.assert_allclose(losses.ensemble_kd(jnp.asarray(zs), [jnp.asarray(t1)], t),
                             losses.kd(jnp.asarray(zs), jnp.asarray(t1), t), rtol=1e-5)
  with pytest.raises(ValueError, match="average"):
    losses.ensemble_kd(*args, average="median")
  with pytest.raises(ValueError, match="weights"):
    losses.ensemble_kd(*args, weights=[1.0])
  with pytest.raises(ValueError, match="shaped like"):
    losses.ensemble_kd(jnp.asarray(zs), [jnp.asarray(t1)[:, :3]], t)


def test_ensemble_kd_zero_cases_and_shift_invariance():
  zs, t1 = jnp.asarray(_logits(30)), jnp.asarray(_logits(31))
  # Zero only when the target itself equals the student: all teachers equal to it...
  np.testing.assert_allclose(losses.ensemble_kd(zs, [zs, zs, zs]), 0.0, atol=1e-5)
  # ...not when one teacher of two equals it.
  assert float(losses.ensemble_kd(zs, [zs, t1])) > 1e-3
  # Per-teacher, per-sample shifts leave both targets unchanged.
  rng = np.random.default_rng(32)
  shifted = [zs + rng.normal(size=(6, 1)) * 5, t1 + rng.normal(size=(6, 1)) * 5]
  for average in ("probs", "logits"):
    np.testing.assert_allclose(losses.ensemble_kd(zs + 2.0, shifted, average=average),
                               losses.ensemble_kd(zs, [zs, t1], average=average), rtol=1e-4)


# ---------------------------------------------------------------- gradients of every loss

Y = jnp.asarray(LABELS)
LOSSES = {
    "dkd": lambda s, t: losses.dkd(s, t, labels=Y),
    "dist": lambda s, t: losses.dist(s, t, temperature=4.0),
    "ls_kd": lambda s, t: losses.logit_standardized_kd(s, t),
    "energy_kd": lambda s, t: losses.energy_kd(s, t, energy_low=-9.0, energy_high=-7.5),
    "ensemble_probs": lambda s, t: losses.ensemble_kd(s, [t, 0.5 * t[::-1]]),
    "ensemble_logits": lambda s, t: losses.ensemble_kd(s, [t, 0.5 * t[::-1]], average="logits"),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_reach_the_student_only(name):
  fn = LOSSES[name]
  zs, zt = jnp.asarray(_logits(33)), jnp.asarray(_logits(34))
  if name == "energy_kd":  # the thresholds above must split this batch into all three groups
    assert len(set(np.asarray(losses.energy_temperatures(losses.energy_score(zt, 4.0), -9.0, -7.5)))) == 3
  g_student, g_teacher = jax.grad(fn, argnums=(0, 1))(zs, zt)
  assert np.all(np.isfinite(g_student)) and float(jnp.abs(g_student).sum()) > 1e-3
  np.testing.assert_array_equal(g_teacher, 0.0)


# ---------------------------------------------------------------- distillers


def _output(logits):
  logits = jnp.asarray(logits, jnp.float32)
  return ModelOutput(prediction=logits, stages=(), preact_stages=(), embedding=jnp.zeros((logits.shape[0], 4)))


BATCH = {"label": Y}
S, T1, T2 = _output(_logits(35)), _output(_logits(36)), _output(_logits(37))
ENERGY = losses.energy_score(T1.logits, 4.0)
LOW, HIGH = losses.energy_thresholds(ENERGY, 0.2, 0.2)

CONFIGS = {
    "dkd": ({"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 10},
            lambda: losses.dkd(S.logits, T1.logits, labels=Y)),
    "dist": ({"beta": 1.0, "gamma": 1.0, "temperature": 4.0},
             lambda: losses.dist(S.logits, T1.logits, temperature=4.0)),
    "ls_kd": ({"temperature": 2.0}, lambda: losses.logit_standardized_kd(S.logits, T1.logits, 2.0)),
    "energy_kd": ({"energy_low": LOW, "energy_high": HIGH},
                  lambda: losses.energy_kd(S.logits, T1.logits, energy_low=LOW, energy_high=HIGH)),
    "ensemble_kd": ({"temperature": 4.0, "weights": [1.0, 1.0]},
                    lambda: losses.ensemble_kd(S.logits, [T1.logits, T2.logits], 4.0)),
}


def _teacher_for(name):
  return (T1, T2) if name == "ensemble_kd" else T1


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_registry_builds_each_distiller_and_jit_matches_the_loss(name):
  hparams, expected = CONFIGS[name]
  total = distillers.from_config({"ce": {"weight": 0.1}, name: {"weight": 0.9, **hparams}})
  term = dict((n, d) for n, _, d in total.terms)[name]
  assert type(term) is distillers.DISTILLERS[name]
  teacher = _teacher_for(name)
  assert term.init(jax.random.PRNGKey(0), S, teacher, BATCH) == {}
  step, epoch = 1000, 100  # past any warm-up

  @jax.jit
  def run(student_logits, step, epoch):
    return term({}, _output(student_logits), teacher, BATCH, rng=jax.random.PRNGKey(1), train=True, step=step,
                epoch=epoch)

  value, metrics, state = run(S.logits, step, epoch)
  np.testing.assert_allclose(value, expected(), rtol=1e-5)
  assert state == {} and all(np.isfinite(v) for v in jax.tree.leaves(metrics))
  eager, _, _ = term({}, S, teacher, BATCH, rng=jax.random.PRNGKey(1), train=True, step=step, epoch=epoch)
  np.testing.assert_allclose(value, eager, rtol=1e-6)
  # The weighted sum (jitted too) is 0.1·CE + 0.9·term.
  total_value, total_metrics, _ = jax.jit(
      lambda s: total({}, _output(s), teacher, BATCH, rng=jax.random.PRNGKey(1), train=True, step=step,
                      epoch=epoch))(S.logits)
  np.testing.assert_allclose(total_value, 0.1 * losses.cross_entropy(S.logits, Y) + 0.9 * value, rtol=1e-5)
  np.testing.assert_allclose(total_metrics[f"{name}/loss"], value, rtol=1e-6)


def test_dkd_warmup_factor_from_epoch():
  dkd = distillers.DKD(warmup_epochs=10)
  full = losses.dkd(S.logits, T1.logits, labels=Y)
  run = jax.jit(lambda epoch: dkd({}, S, T1, BATCH, rng=None, train=True, step=0, epoch=epoch))
  # mdistiller: min(epoch / warmup, 1) with a 1-based epoch: epoch 1 gets 1/10, epoch 10 reaches 1.
  for epoch, factor in ((1, 0.1), (5, 0.5), (10, 1.0), (500, 1.0)):
    value, metrics, _ = run(jnp.asarray(epoch, jnp.int32))
    np.testing.assert_allclose(metrics["warmup"], factor, rtol=1e-6)
    np.testing.assert_allclose(value, factor * full, rtol=1e-5)
  # The default warm-up is mdistiller's CFG.DKD.WARMUP = 20 epochs (make_distiller too); 0 turns it off.
  # The parts are reported with their T² factor and without the warm-up.
  assert distillers.DKD().warmup_epochs == distillers.make_distiller("dkd").warmup_epochs == 20
  for epoch, factor in ((1, 1 / 20), (20, 1.0)):
    value, metrics, _ = distillers.DKD()({}, S, T1, BATCH, rng=None, train=True, step=0, epoch=epoch)
    np.testing.assert_allclose(metrics["warmup"], factor, rtol=1e-6)
    np.testing.assert_allclose(value, factor * full, rtol=1e-5)
    np.testing.assert_allclose(value, factor * (metrics["tckd"] + 8.0 * metrics["nckd"]), rtol=1e-5)
  value, _, _ = distillers.DKD(warmup_epochs=0)({}, S, T1, BATCH, rng=None, train=True, step=0)
  np.testing.assert_allclose(value, full, rtol=1e-6)


def test_energy_kd_distiller_requires_thresholds_and_reports_group_sizes():
  term = distillers.make_distiller("energy_kd")  # builds; the loop fills the thresholds later
  for call in (lambda: term.init(jax.random.PRNGKey(0), S, T1, BATCH),
               lambda: term({}, S, T1, BATCH, rng=None, train=True, step=0)):
    with pytest.raises(KDJaxError, match="energy_low and energy_high are not set.*energy_thresholds"):
      call()
  filled = distillers.make_distiller("energy_kd", energy_low=LOW, energy_high=HIGH)
  _, metrics, _ = filled({}, S, T1, BATCH, rng=None, train=True, step=0)
  np.testing.assert_allclose(metrics["low_energy_fraction"], np.mean(np.asarray(ENERGY) < LOW))
  np.testing.assert_allclose(metrics["high_energy_fraction"], np.mean(np.asarray(ENERGY) > HIGH))


def test_ensemble_kd_distiller_accepts_one_teacher_and_checks_weights():
  single, _, _ = distillers.EnsembleKD()({}, S, T1, BATCH, rng=None, train=True, step=0)
  np.testing.assert_allclose(single, losses.kd(S.logits, T1.logits, 4.0), rtol=1e-5)
  weighted = distillers.EnsembleKD(weights=(3.0, 1.0))
  value, _, _ = weighted({}, S, (T1, T2), BATCH, rng=None, train=True, step=0)
  np.testing.assert_allclose(value, losses.ensemble_kd(S.logits, [T1.logits, T2.logits], weights=[0.75, 0.25]),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="2 weights for 3 teachers"):
    weighted({}, S, (T1, T2, T1), BATCH, rng=None, train=True, step=0)
  hash(distillers.make_distiller("ensemble_kd", weights=[1.0, 2.0]))  # lists from configs become tuples


@pytest.mark.parametrize("name,hparams,match", [
    ("dkd", {"temperature": 0.0}, "temperature must be > 0"),
    ("dkd", {"beta": -1.0}, "alpha and beta must be >= 0"),
    ("dkd", {"warmup_epochs": -5}, "warmup_epochs"),
    ("dist", {"temperature": -1.0}, "temperature must be > 0"),
    ("dist", {"gamma": -1.0}, "beta and gamma"),
    ("ls_kd", {"temperature": 0.0}, "temperature must be > 0"),
    ("energy_kd", {"low_energy_temperature": 0.0}, "low_energy_temperature must be > 0"),
    ("energy_kd", {"energy_low": 1.0, "energy_high": 0.0}, "must be <= energy_high"),
    ("energy_kd", {"high_fraction": 1.0}, "high_fraction must be in"),
    ("ensemble_kd", {"average": "median"}, "average must be"),
    ("ensemble_kd", {"weights": [-1.0, 2.0]}, "weights must be non-negative"),
    ("ensemble_kd", {"temperature": 0.0}, "temperature must be > 0"),
])
def test_invalid_hyper_parameters_raise_kdjaxerror(name, hparams, match):
  with pytest.raises(KDJaxError, match=match):
    distillers.from_config({name: {"weight": 1.0, **hparams}})


def test_shapes_are_checked():
  z = jnp.zeros((4, 5))
  for fn in (lambda: losses.dkd(z, z[:, :3], labels=jnp.zeros(4, jnp.int32)), lambda: losses.dist(z, z[:3]),
             lambda: losses.logit_standardized_kd(z, z[:, :3]),
             lambda: losses.energy_kd(z, z[:, :3], energy_low=0.0, energy_high=1.0)):
    with pytest.raises(ValueError, match="same shape"):
      fn()
  chex.assert_shape(losses.dkd_parts(z, z, labels=jnp.zeros(4, jnp.int32)), ((4,), (4,)))
