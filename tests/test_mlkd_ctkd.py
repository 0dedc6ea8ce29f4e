"""MLKD, CTKD, Energy DKD and the logit-standardization switch: the pure losses against float64 NumPy
re-implementations, the gradient-reversal layer and CTKD's curriculum, the distillers, the configs, and one
short end-to-end run on digits.

The NumPy references follow the reference code step by step, never calling the function under test:
- MLKD: Jin-Ying/Multi-Level-Logit-Distillation `mdistiller/distillers/KD_ours.py` (`kd_loss`, `cc_loss`,
  `bc_loss`, `KD_ours.forward_train`), with logit standardization as in sunshangquan/logit-standardization-KD
  `mdistiller/distillers/MLKD.py` (`normalize`);
- CTKD: zhengli97/CTKD `train_student.py` (`CosineDecay`), `models/temp_global.py` (`Global_T`);
- Energy DKD: Seonghak35/EnergyKD `mdistiller/distillers/energyDKD.py` (`dkd_loss`, `forward_train`).
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import distillers, losses
from kd_jax.config import load_config_file
from kd_jax.distillers.logit import TemperatureMLP, strong_view
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput

from helpers import export_random_mlp_teacher

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


# ---------------------------------------------------------------- NumPy float64 references


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _softmax(z):
  return np.exp(_log_softmax(z))


def _normalize(z):
  """The reference's `normalize`: `(z − mean) / (1e-7 + std)`, torch's unbiased std."""
  z = np.asarray(z, np.float64)
  return (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))


def _np_kd(zs, zt, temp, stand=False):
  """`kd_loss(..., reduce=True)`: KL summed over classes, batch mean, × T²."""
  if stand:
    zs, zt = _normalize(zs), _normalize(zt)
  log_ps = _log_softmax(np.asarray(zs) / temp)
  pt = _softmax(np.asarray(zt) / temp)
  return (pt * (np.log(pt) - log_ps)).sum(1).mean() * temp**2


def _np_cc(zs, zt, temp):
  ps, pt = _softmax(np.asarray(zs) / temp), _softmax(np.asarray(zt) / temp)
  return ((pt.T @ pt - ps.T @ ps) ** 2).sum() / zs.shape[1]


def _np_bc(zs, zt, temp):
  ps, pt = _softmax(np.asarray(zs) / temp), _softmax(np.asarray(zt) / temp)
  return ((pt @ pt.T - ps @ ps.T) ** 2).sum() / zs.shape[0]


def _np_mlkd(s_w, t_w, s_s, t_s, temps, stand=False, reference=True):
  """`KD_ours.forward_train`'s four loss terms without the KD weight (first temperature = cfg.KD.TEMPERATURE)."""
  pred = _softmax(t_w)
  conf = pred.max(1)
  mask = conf <= np.percentile(conf, 50)  # torch `le`
  class_conf = pred.sum(0)
  class_mask = class_conf <= np.percentile(class_conf, 50)
  # `(scalar_loss * mask).mean()`: the mask is a [B] (or [C]) vector multiplying an already reduced loss.
  weak = sum((_np_kd(s_w, t_w, T, stand) * mask).mean() for T in temps)
  if reference:
    strong = (sum(_np_kd(s_s, t_s, T, stand) for T in temps[:3])
              + sum(_np_kd(s_w, t_w, T, stand) for T in temps[3:]))
  else:
    strong = sum(_np_kd(s_s, t_s, T, stand) for T in temps)
  return {"instance_weak": weak, "instance_strong": strong,
          "class": sum((_np_cc(s_w, t_w, T) * class_mask).mean() for T in temps),
          "batch": sum((_np_bc(s_w, t_w, T) * mask).mean() for T in temps)}


def _np_cosine_decay(max_value, min_value, num_loops, i):
  """zhengli97/CTKD `CosineDecay.get_value`."""
  i = min(max(i, 0), num_loops)
  return (math.cos(i * math.pi / num_loops) + 1.0) * 0.5 * (max_value - min_value) + min_value


def _np_energy_dkd(zs, zt, y, alpha, beta, low_thr, high_thr, t_low, t_mid, t_high, energy_t=4.0):
  """`energyDKD.forward_train` + `dkd_loss` (T_LOW is the temperature of the samples with E < low_thr)."""
  zs, zt = np.asarray(zs, np.float64), np.asarray(zt, np.float64)
  energy = -energy_t * np.log(np.exp(zt / energy_t).sum(1))
  kd_temp = (energy < low_thr) * t_low + (energy > high_thr) * t_high
  kd_temp = np.where(kd_temp == 0, t_mid, kd_temp)
  t_mat = kd_temp[:, None]
  gt = np.eye(zs.shape[1])[y].astype(bool)
  cat = lambda p: np.stack([(p * gt).sum(1), (p * ~gt).sum(1)], 1)
  ps, pt = cat(_softmax(zs / t_mat)), cat(_softmax(zt / t_mat))
  tckd = ((pt * (np.log(pt) - np.log(ps))).sum(1) * kd_temp**2).mean()
  pt2 = _softmax(zt / t_mat - 1000.0 * gt)
  log_ps2 = _log_softmax(zs / t_mat - 1000.0 * gt)  # F.log_softmax
  kl = np.where(pt2 > 0, pt2 * (np.log(np.where(pt2 > 0, pt2, 1.0)) - log_ps2), 0.0)  # kl_div's 0·log 0 = 0
  nckd = (kl.sum(1) * kd_temp**2).mean()
  return alpha * tckd + beta * nckd, kd_temp


def _logits(seed, shape=(8, 7), scale=3.0):
  return np.random.default_rng(seed).normal(size=shape) * scale


def _output(logits):
  logits = jnp.asarray(logits, jnp.float32)
  return ModelOutput(prediction=logits, stages=(), preact_stages=(), embedding=jnp.zeros((logits.shape[0], 4)))


LABELS = np.array([0, 1, 2, 3, 4, 5, 6, 0])


# ---------------------------------------------------------------- MLKD


@pytest.mark.parametrize("stand,reference,batch", [(False, True, 8), (True, True, 7), (False, False, 7)])
def test_mlkd_parts_match_the_reference_code(stand, reference, batch):
  s_w, t_w, s_s, t_s = (_logits(i, (batch, 6)) for i in (1, 2, 3, 4))
  t_w[2] = t_w[5]  # a tie among the confidences: `≤` keeps both at the median
  temps = (4.0, 3.0, 5.0, 2.0, 6.0)
  expected = _np_mlkd(s_w, t_w, s_s, t_s, temps, stand, reference)
  args = dict(temperatures=temps, standardize=stand, reference_strong_sum=reference)
  got = losses.mlkd_parts(*(jnp.asarray(x, jnp.float32) for x in (s_w, t_w, s_s, t_s)), **args)
  for key, value in expected.items():
    np.testing.assert_allclose(got[key], value, rtol=2e-5, err_msg=key)
  with jax.enable_x64(True):
    got64 = losses.mlkd_parts(*(jnp.asarray(x) for x in (s_w, t_w, s_s, t_s)), **args)
    for key, value in expected.items():
      np.testing.assert_allclose(got64[key], value, rtol=1e-10, err_msg=key)
    np.testing.assert_allclose(losses.mlkd(*(jnp.asarray(x) for x in (s_w, t_w, s_s, t_s)), **args),
                               sum(expected.values()), rtol=1e-10)


def test_mlkd_masks_are_the_fraction_at_or_below_the_median_and_the_gram_terms_vanish_at_the_teacher():
  s_w, s_s, t_s = _logits(5, (6, 5)), _logits(6, (6, 5)), _logits(7, (6, 5))
  t_w = np.tile(_logits(8, (1, 5)), (6, 1))  # every confidence tied: all six are ≤ the median
  parts = losses.mlkd_parts(*(jnp.asarray(x) for x in (s_w, t_w, s_s, t_s)), temperatures=(4.0,))
  np.testing.assert_allclose(parts["instance_weak"], _np_kd(s_w, t_w, 4.0), rtol=1e-5)  # fraction 1
  t_w = _logits(9, (6, 5))  # distinct confidences: exactly 3 of 6 at or below the median
  parts = losses.mlkd_parts(*(jnp.asarray(x) for x in (s_w, t_w, s_s, t_s)), temperatures=(4.0,))
  np.testing.assert_allclose(parts["instance_weak"], 0.5 * _np_kd(s_w, t_w, 4.0), rtol=1e-5)
  np.testing.assert_allclose(parts["batch"], 0.5 * _np_bc(s_w, t_w, 4.0), rtol=1e-5)
  # Gram terms: zero when the student is the teacher up to per-sample shifts; the class term ignores the
  # order of the batch, the batch term the order of the classes.
  shift = _logits(10, (6, 1))
  for fn in (losses.mlkd_class_loss, losses.mlkd_batch_loss):
    np.testing.assert_allclose(fn(jnp.asarray(t_w + shift), jnp.asarray(t_w), 3.0), 0.0, atol=1e-7)
  rows, cols = np.random.default_rng(11).permutation(6), np.random.default_rng(12).permutation(5)
  np.testing.assert_allclose(losses.mlkd_class_loss(jnp.asarray(s_w[rows]), jnp.asarray(t_w[rows]), 3.0),
                             _np_cc(s_w, t_w, 3.0), rtol=1e-5)
  np.testing.assert_allclose(losses.mlkd_batch_loss(jnp.asarray(s_w[:, cols]), jnp.asarray(t_w[:, cols]), 3.0),
                             _np_bc(s_w, t_w, 3.0), rtol=1e-5)


def test_strong_view_draws_one_cutout_square_per_image():
  images = jnp.ones((6, 8, 8, 1))
  np.testing.assert_array_equal(strong_view(jax.random.PRNGKey(0), images, flip=False, cutout_fraction=0.0),
                                images)
  view = np.asarray(strong_view(jax.random.PRNGKey(1), images, flip=False, cutout_fraction=0.5))
  zeros = (view == 0).reshape(6, -1).sum(1)
  assert np.all(zeros <= 16) and len(set(zeros.tolist())) > 1  # sides up to 4 = 0.5·8, drawn per image
  for image in view[..., 0]:  # each hole is one axis-aligned square
    r, c = np.nonzero(image == 0)
    if r.size:
      assert r.size == (np.ptp(r) + 1) * (np.ptp(c) + 1) and np.ptp(r) == np.ptp(c)


def _linear_model(seed):
  w = jnp.asarray(_logits(seed, (64, 7), 0.5), jnp.float32)
  return lambda images: _output(images.reshape(images.shape[0], -1) @ w)


def test_mlkd_distiller_runs_the_strong_view_through_forward():
  student, teacher = _linear_model(13), _linear_model(14)
  images = jnp.asarray(np.random.default_rng(15).normal(size=(8, 8, 8, 1)), jnp.float32)
  batch = {"image": images, "label": jnp.asarray(LABELS)}
  term = distillers.make_distiller("mlkd", strong_flip=False)
  rng = jax.random.PRNGKey(3)
  value, metrics, state = term({}, student(images), teacher(images), batch, rng=rng, train=True,
                               forward=lambda x: (student(x), teacher(x)))
  strong = strong_view(rng, images, flip=False, cutout_fraction=0.5)
  expected = _np_mlkd(student(images).logits, teacher(images).logits, student(strong).logits,
                      teacher(strong).logits, (4.0, 3.0, 5.0, 2.0, 6.0))
  ps = _softmax(student(strong).logits)
  strong_ce = -np.mean(np.log(ps[np.arange(8), LABELS]))
  np.testing.assert_allclose(value, 0.9 * sum(expected.values()) + 0.1 * strong_ce, rtol=2e-5)
  np.testing.assert_allclose(metrics["strong_ce"], strong_ce, rtol=1e-5)
  assert state == {}
  with pytest.raises(KDJaxError, match="Context.forward"):
    term({}, student(images), teacher(images), batch, rng=rng)
  with pytest.raises(KDJaxError, match="temperatures"):
    distillers.make_distiller("mlkd", temperatures=(4.0, 0.0))


# ---------------------------------------------------------------- CTKD


def test_gradient_reversal_is_the_identity_forward_and_scales_the_gradient_by_minus_lambda():
  x = jnp.asarray(_logits(16, (3, 4)), jnp.float32)
  cotangent = jnp.asarray(_logits(17, (3, 4)), jnp.float32)
  for lam in (0.0, 0.3, 1.0):
    y, vjp = jax.vjp(losses.gradient_reversal, x, jnp.float32(lam))
    np.testing.assert_array_equal(y, x)
    gx, glam = vjp(cotangent)
    np.testing.assert_allclose(gx, -lam * cotangent, rtol=1e-6)
    assert float(glam) == 0.0
  # Inside jit with a traced strength, and composed with a downstream function (chain rule kept).
  grad = jax.jit(jax.grad(lambda x, lam: jnp.sum(jnp.sin(losses.gradient_reversal(x, lam)))))(x, jnp.float32(0.7))
  np.testing.assert_allclose(grad, -0.7 * np.cos(np.asarray(x)), rtol=1e-5)


def test_ctkd_lambda_follows_the_reference_cosine_schedule():
  # Ends and midpoint of the formula, λ_min = 0.2, λ_max = 1.5 over 8 epochs.
  kw = dict(lambda_min=0.2, lambda_max=1.5, epochs=8.0)
  np.testing.assert_allclose(losses.ctkd_lambda(0, **kw), 0.2, rtol=1e-6)
  np.testing.assert_allclose(losses.ctkd_lambda(4, **kw), (0.2 + 1.5) / 2, rtol=1e-6)
  np.testing.assert_allclose(losses.ctkd_lambda(8, **kw), 1.5, rtol=1e-6)
  np.testing.assert_allclose(losses.ctkd_lambda(20, **kw), 1.5, rtol=1e-6)
  # The reference passes CosineDecay(max 0, min −1, loops 10).get_value(epoch) to its reversal layer: −λ.
  for epoch in range(0, 13):
    np.testing.assert_allclose(-losses.ctkd_lambda(epoch), _np_cosine_decay(0.0, -1.0, 10, epoch), atol=1e-6)


@pytest.mark.parametrize("form", ["global", "instance"])
def test_ctkd_temperature_stays_in_range(form):
  term = distillers.make_distiller("ctkd", form=form, hidden=8)
  zs, zt = _output(_logits(18)), _output(_logits(19))
  params = term.init(jax.random.PRNGKey(0), zs, zt, {})["params"]
  for scale in (1.0, 1e3, -1e3):  # saturate the sigmoid both ways
    scaled = jax.tree.map(lambda p: p * scale, params)
    temps, _ = term.temperature(scaled, zs.logits, zt.logits, 3)
    assert np.all(np.asarray(temps) >= 1.0) and np.all(np.asarray(temps) <= 21.0)
  temps, _ = term.temperature(params, zs.logits, zt.logits, 3)
  if form == "global":  # θ starts at 1, as `torch.ones(1)`: T = 1 + 20·sigmoid(1)
    np.testing.assert_allclose(temps, 1.0 + 20.0 / (1.0 + np.exp(-1.0)), rtol=1e-6)
  else:
    assert temps.shape == (8,)


def test_ctkd_global_gradient_ascends_the_kd_loss():
  term = distillers.make_distiller("ctkd")
  zs, zt = _logits(20), _logits(21)
  params = {"temperature": jnp.float32(0.3)}
  epoch = 5  # λ = 1/2
  loss = lambda p, s: term({"params": p}, _output(s), _output(zt), {}, epoch=epoch)[0]
  g_params, g_student = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(zs, jnp.float32))

  def kd_at(theta):  # the KD value as a function of θ, float64, no reversal
    return _np_kd(zs, zt, 1.0 + 20.0 / (1.0 + np.exp(-theta)))

  h = 1e-5
  d_kd = (kd_at(0.3 + h) - kd_at(0.3 - h)) / (2 * h)
  assert abs(d_kd) > 1e-3
  np.testing.assert_allclose(g_params["temperature"], -0.5 * d_kd, rtol=1e-3)  # reversed, scaled by λ
  # The student's gradient is the plain KD gradient at the current temperature (not reversed).
  temp = 1.0 + 20.0 / (1.0 + np.exp(-0.3))
  np.testing.assert_allclose(g_student, jax.grad(losses.kd)(jnp.asarray(zs, jnp.float32), jnp.asarray(zt), temp),
                             rtol=1e-4, atol=1e-7)
  # An optimiser step that descends the total loss raises the KD loss through the temperature.
  stepped = 0.3 - 0.5 * float(g_params["temperature"])
  assert kd_at(stepped) > kd_at(0.3)


def test_ctkd_instance_gradient_is_the_reversed_gradient_of_per_sample_kd():
  term = distillers.make_distiller("ctkd", form="instance", hidden=8)
  zs, zt = _output(_logits(22)), _output(_logits(23))
  params = term.init(jax.random.PRNGKey(1), zs, zt, {})["params"]
  epoch = 2  # λ = (1 − cos(π/5))/2
  lam = (1.0 - math.cos(math.pi / 5)) / 2
  loss = lambda p: term({"params": p}, zs, zt, {}, epoch=epoch)[0]

  def plain(p):  # the same temperature module without the reversal layer
    pair = jnp.concatenate([zt.logits, zs.logits], axis=-1)
    temps = 1.0 + 20.0 * jax.nn.sigmoid(TemperatureMLP(8).apply({"params": p}, pair))
    return losses.kd_per_sample_temperature(zs.logits, zt.logits, temps)

  np.testing.assert_allclose(loss(params), plain(params), rtol=1e-6)
  for g, g_plain in zip(jax.tree.leaves(jax.grad(loss)(params)), jax.tree.leaves(jax.grad(plain)(params))):
    np.testing.assert_allclose(g, -lam * g_plain, rtol=1e-4, atol=1e-8)
  stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, jax.grad(loss)(params))
  assert float(plain(stepped)) > float(plain(params))


# ---------------------------------------------------------------- Energy DKD


@pytest.mark.parametrize("t_low,t_high", [(6.0, 2.0), (2.0, 6.0)])
def test_energy_dkd_matches_the_reference_code_with_both_temperature_directions(t_low, t_high):
  zs, zt = _logits(24), _logits(25)
  e = np.sort(-4.0 * np.log(np.exp(zt / 4.0).sum(1)))
  low, high = (e[1] + e[2]) / 2, (e[5] + e[6]) / 2  # two low-energy and two high-energy samples
  expected, temps = _np_energy_dkd(zs, zt, LABELS, 1.0, 6.0, low, high, t_low, 4.0, t_high)
  assert sorted(temps.tolist()) == sorted([t_low] * 2 + [4.0] * 4 + [t_high] * 2)
  lowest = np.argmin(-4.0 * np.log(np.exp(zt / 4.0).sum(1)))
  assert temps[lowest] == t_low  # the most confident sample gets the low-energy temperature
  got = losses.energy_dkd(jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32), labels=jnp.asarray(LABELS),
                          energy_low=low, energy_high=high, beta=6.0, low_energy_temperature=t_low,
                          high_energy_temperature=t_high)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # The direction matters: the swapped rule gives another value.
  swapped, _ = _np_energy_dkd(zs, zt, LABELS, 1.0, 6.0, low, high, t_high, 4.0, t_low)
  assert abs(swapped - expected) > 1e-3 * abs(expected)
  # One temperature for all: plain DKD.
  np.testing.assert_allclose(
      losses.energy_dkd(jnp.asarray(zs), jnp.asarray(zt), labels=jnp.asarray(LABELS), energy_low=-1e9,
                        energy_high=1e9, beta=6.0),
      losses.dkd(jnp.asarray(zs), jnp.asarray(zt), labels=jnp.asarray(LABELS), beta=6.0, temperature=4.0), rtol=1e-6)


def test_energy_dkd_distiller_defaults_warmup_and_thresholds():
  term = distillers.make_distiller("energy_dkd")
  assert (term.alpha, term.beta, term.warmup_epochs) == (1.0, 8.0, 20.0)  # CFG.energyDKD
  assert (term.low_energy_temperature, term.high_energy_temperature) == (6.0, 2.0)  # the paper's rule
  zs, zt = _logits(26), _logits(27)
  with pytest.raises(KDJaxError, match="energy_dkd: energy_low and energy_high are not set"):
    term({}, _output(zs), _output(zt), {"label": jnp.asarray(LABELS)})
  e = np.sort(-4.0 * np.log(np.exp(zt / 4.0).sum(1)))
  low, high = (e[1] + e[2]) / 2, (e[5] + e[6]) / 2
  term = distillers.make_distiller("energy_dkd", energy_low=low, energy_high=high, beta=6.0)
  value, metrics, _ = term({}, _output(zs), _output(zt), {"label": jnp.asarray(LABELS)}, epoch=5)
  expected, _ = _np_energy_dkd(zs, zt, LABELS, 1.0, 6.0, low, high, 6.0, 4.0, 2.0)
  np.testing.assert_allclose(value, 5 / 20 * expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["tckd"] + 6.0 * metrics["nckd"], expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["low_energy_fraction"], 0.25)
  with pytest.raises(KDJaxError, match="energy_dkd: alpha and beta must be >= 0"):
    distillers.make_distiller("energy_dkd", beta=-1.0)


# ---------------------------------------------------------------- logit standardization


def test_standardize_switch_is_kd_on_logits_standardized_by_hand_and_ls_kd_is_that_switch():
  zs, zt = _logits(28), _logits(29)
  batch = {"label": jnp.asarray(LABELS)}
  call = lambda d, s=zs, t=zt: d({}, _output(s), _output(t), batch, epoch=30)[0]
  kd_ls = distillers.make_distiller("kd", temperature=2.0, standardize=True)
  np.testing.assert_allclose(call(kd_ls), _np_kd(_normalize(zs), _normalize(zt), 2.0), rtol=1e-5)
  assert float(call(distillers.make_distiller("ls_kd", temperature=2.0))) == float(call(kd_ls))
  np.testing.assert_allclose(call(kd_ls), losses.logit_standardized_kd(zs, zt, 2.0), rtol=1e-6)
  # Invariant to per-sample shifts and positive scalings of either side; plain KD is not.
  rng = np.random.default_rng(30)
  a, b = rng.uniform(0.3, 3.0, (8, 1)), rng.normal(size=(8, 1)) * 5
  moved = dict(s=a * zs + b, t=zt / a - b)
  np.testing.assert_allclose(call(kd_ls, **moved), call(kd_ls), rtol=1e-4)
  plain = distillers.make_distiller("kd", temperature=2.0)
  assert abs(float(call(plain, **moved)) - float(call(plain))) > 1e-2
  # DKD, ensemble KD, DGKD and CTKD with the switch: their plain loss on the standardized logits.
  zs_n, zt_n = (jnp.asarray(_normalize(z), jnp.float32) for z in (zs, zt))
  y = jnp.asarray(LABELS)
  cases = [(distillers.make_distiller("dkd", standardize=True, warmup_epochs=0.0),
            losses.dkd(zs_n, zt_n, labels=y)),
           (distillers.make_distiller("ensemble_kd", standardize=True), losses.ensemble_kd(zs_n, [zt_n], 4.0)),
           (distillers.make_distiller("dgkd", standardize=True), losses.dgkd(zs_n, [zt_n], 5.0))]
  for term, expected in cases:
    np.testing.assert_allclose(call(term), expected, rtol=1e-5, err_msg=type(term).__name__)
  ctkd = distillers.make_distiller("ctkd", standardize=True)
  value = ctkd({"params": {"temperature": jnp.float32(1.0)}}, _output(zs), _output(zt), batch)[0]
  np.testing.assert_allclose(value, _np_kd(_normalize(zs), _normalize(zt), 1.0 + 20.0 / (1.0 + np.exp(-1.0))),
                             rtol=1e-4)  # float32 at T ≈ 15.6


# ---------------------------------------------------------------- configs and an end-to-end run

CONFIG_PAIRS = {
    "digits_mlkd.py": ("digits", "mlp_small", "cnn_large"),
    "digits_ctkd.py": ("digits", "mlp_small", "cnn_large"),
    "digits_energy_dkd.py": ("digits", "mlp_small", "cnn_large"),
    "digits_energy_dkd_repo.py": ("digits", "mlp_small", "cnn_large"),
    "cifar100_mlkd.py": ("cifar100", "resnet8x4", "resnet32x4"),
    "cifar100_ctkd.py": ("cifar100", "resnet20", "resnet56"),
    "cifar100_energy_dkd.py": ("cifar100", "vgg8", "vgg13"),
}


@pytest.mark.parametrize("file", sorted(CONFIG_PAIRS))
def test_configs_load_and_build(file):
  config = load_config_file(os.path.join(EXPERIMENTS, file))
  distillers.from_config(config.loss.to_dict())
  assert (config.data.name, config.student.model, config.teacher.model) == CONFIG_PAIRS[file]
  if file == "cifar100_mlkd.py":
    assert config.optim.lr == 0.025 and config.epochs == 240
  if file == "cifar100_energy_dkd.py":
    term = config.loss.energy_dkd
    assert (term.beta, term.low_fraction, term.low_energy_temperature, config.epochs) == (6.0, 0.1, 2.0, 360)


def test_new_distillers_train_end_to_end_on_digits(tmp_path, digits):
  """Three steps with MLKD, CTKD (both forms) and Energy DKD together (CE once), from a random teacher."""
  from kd_jax.train.loop import train_and_evaluate

  teacher_dir = export_random_mlp_teacher(str(tmp_path / "teacher"))
  loss = {}
  for file in ("digits_mlkd.py", "digits_ctkd.py", "digits_energy_dkd.py"):
    loss.update(load_config_file(os.path.join(EXPERIMENTS, file)).loss.to_dict())
  loss["ctkd_instance"] = {"weight": 0.9, "distiller": "ctkd", "form": "instance", "hidden": 16,
                           "lambda_epochs": 0.01, "standardize": True}
  config = load_config_file(os.path.join(EXPERIMENTS, "digits_mlkd.py"))
  config.loss = loss
  config.teacher.model, config.teacher.workdir = "mlp_tiny", teacher_dir
  config.student.model = "mlp_tiny"
  config.epochs, config.max_steps, config.log_every_steps, config.progress_bar = 1, 3, 1, False
  workdir = str(tmp_path / "student")
  results = train_and_evaluate(config, workdir, dataset=digits)
  assert results["steps"] == 3 and 0.0 <= results["test_accuracy"] <= 1.0
  last = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))][-1]
  for key in ("train/mlkd/loss", "train/mlkd/class", "train/mlkd/strong_ce", "train/ctkd/loss",
              "train/ctkd_instance/temperature", "train/energy_dkd/loss", "train/energy_dkd/low_energy_fraction"):
    assert np.isfinite(last[key]), key
  assert 1.0 < last["train/ctkd/temperature"] < 21.0
  # The temperature parameters are trained with the student: the checkpoint's θ left its initial value 1.
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  state = manager.restore(max(manager.all_steps()), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  theta = float(state["state"]["distiller_params"]["ctkd"]["temperature"])
  assert theta != 1.0 and abs(theta - 1.0) < 0.1
