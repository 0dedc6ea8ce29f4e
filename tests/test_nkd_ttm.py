"""NKD, TTM and WTTM: the pure losses against float64 NumPy re-implementations, their identities and
invariances, the distillers, and the configs.

The NumPy references are written from the reference code, step by step as it computes, never by calling the
function under test:
- NKD: yzd-v/cls_KD, `mmcls/models/dis_losses/nkd.py` (`NKDLoss.forward`);
- TTM: zkxufo/TTM, `distiller_zoo/ttm.py`; WTTM: zkxufo/TTM, `distiller_zoo/wttm.py`.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import distillers, losses
from kd_jax.config import load_config_file
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput

from helpers import export_random_mlp_teacher

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


# ---------------------------------------------------------------- NumPy float64 references


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _np_nkd(zs, zt, y, temp, gamma):
  """As `NKDLoss.forward` (cls_KD nkd.py): target term at T = 1 on gathered columns, `.mean()` of an N×1
  tensor; the target column removed (boolean mask, reshape to N × (C−1)), softmax at T over what is left,
  `−γ·T²·mean_n Σ_c T_i·S_i`."""
  zs, zt, y = np.asarray(zs, np.float64), np.asarray(zt, np.float64), np.asarray(y)
  n, c = zs.shape
  s_i = _log_softmax(zs)
  t_i = np.exp(_log_softmax(zt))
  s_t = s_i[np.arange(n), y][:, None]
  t_t = t_i[np.arange(n), y][:, None]
  loss_t = -(t_t * s_t).mean()
  mask = np.ones((n, c), bool)
  mask[np.arange(n), y] = False
  s_rest, t_rest = zs[mask].reshape(n, -1), zt[mask].reshape(n, -1)
  big_s = _log_softmax(s_rest / temp)
  big_t = np.exp(_log_softmax(t_rest / temp))
  loss_non = -gamma * temp**2 * (big_t * big_s).sum(1).mean()
  return loss_t + loss_non


def _np_ttm_parts(zs, zt, l):
  """As `TTM.forward`/`WTTM.forward` (zkxufo/TTM ttm.py, wttm.py): per-example KL(p_t^l / norm ‖ p_s), norm."""
  p_s = _log_softmax(zs)
  p_t = np.exp(_log_softmax(zt)) ** l
  norm = p_t.sum(1)
  p_t = p_t / norm[:, None]
  kl = (p_t * (np.log(p_t) - p_s)).sum(1)  # F.kl_div(p_s, p_t, reduction='none') summed over classes
  return kl, norm


def _np_ttm(zs, zt, l):
  return _np_ttm_parts(zs, zt, l)[0].mean()


def _np_wttm(zs, zt, l):
  kl, norm = _np_ttm_parts(zs, zt, l)
  return (norm * kl).mean()


def _logits(seed, shape=(8, 7), scale=3.0):
  return np.random.default_rng(seed).normal(size=shape) * scale


LABELS = np.array([0, 1, 2, 3, 4, 5, 6, 0])


# ---------------------------------------------------------------- NKD


@pytest.mark.parametrize("temp,gamma", [(1.0, 1.5), (3.0, 3.5), (0.5, 1.0), (4.0, 0.7)])
def test_nkd_matches_the_reference_formula(temp, gamma):
  zs, zt = _logits(1), _logits(2)
  expected = _np_nkd(zs, zt, LABELS, temp, gamma)
  got = losses.nkd(jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32), jnp.asarray(LABELS),
                   temperature=temp, gamma=gamma)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  with jax.enable_x64(True):  # float64 logits compute in float64: agreement to rounding
    got64 = losses.nkd(jnp.asarray(zs), jnp.asarray(zt), jnp.asarray(LABELS), temperature=temp, gamma=gamma)
    np.testing.assert_allclose(got64, expected, rtol=1e-12)


def test_nkd_gamma_zero_is_the_target_term_and_the_non_target_term_ignores_the_target_logits():
  zs, zt = _logits(3), _logits(4)
  y = jnp.asarray(LABELS)
  rows = np.arange(len(LABELS))
  target_only = -np.mean(np.exp(_log_softmax(zt))[rows, LABELS] * _log_softmax(zs)[rows, LABELS])
  np.testing.assert_allclose(losses.nkd(jnp.asarray(zs), jnp.asarray(zt), y, temperature=3.0, gamma=0.0),
                             target_only, rtol=1e-5)

  def non_target(s, t):
    return (losses.nkd(jnp.asarray(s), jnp.asarray(t), y, temperature=3.0, gamma=3.5)
            - losses.nkd(jnp.asarray(s), jnp.asarray(t), y, temperature=3.0, gamma=0.0))

  base = non_target(zs, zt)
  assert float(base) > 1e-3
  zs2, zt2 = zs.copy(), zt.copy()
  rng = np.random.default_rng(5)
  zs2[rows, LABELS] += rng.normal(size=len(rows)) * 20.0  # any value of the target logits
  zt2[rows, LABELS] = rng.normal(size=len(rows)) * 20.0
  np.testing.assert_allclose(non_target(zs2, zt2), base, rtol=1e-5)
  # The non-target term is a cross-entropy over the renormalised non-targets: minimal (the teacher's
  # entropy, γT² times) when the student's non-target logits equal the teacher's, whatever the target logit.
  same = zt.copy()
  same[rows, LABELS] = -7.0
  mask = np.ones_like(zt, bool)
  mask[rows, LABELS] = False
  q = np.exp(_log_softmax(zt[mask].reshape(len(rows), -1) / 3.0))
  entropy = -np.mean(np.sum(q * np.log(q), 1))
  np.testing.assert_allclose(non_target(same, zt), 3.5 * 9.0 * entropy, rtol=1e-5)


def test_nkd_invariant_to_per_sample_shifts_and_finite_for_extreme_logits():
  zs, zt = _logits(6), _logits(7)
  y = jnp.asarray(LABELS)
  shift = np.random.default_rng(8).normal(size=(8, 1)) * 30
  base = losses.nkd(jnp.asarray(zs), jnp.asarray(zt), y, temperature=3.0, gamma=3.5)
  np.testing.assert_allclose(losses.nkd(jnp.asarray(zs + shift), jnp.asarray(zt - shift), y, temperature=3.0,
                                        gamma=3.5), base, rtol=1e-5)
  # A teacher sure of the target, a student sure of a wrong class: finite value and gradient.
  zt_sure = np.where(np.eye(7)[LABELS] > 0, 200.0, 0.0)
  value, grad = jax.value_and_grad(lambda s: losses.nkd(s, jnp.asarray(zt_sure), y, temperature=1.0))(
      jnp.asarray(-zt_sure))
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_nkd_rejects_bad_arguments():
  zs, zt = jnp.asarray(_logits(9)), jnp.asarray(_logits(10))
  with pytest.raises(ValueError, match="temperature"):
    losses.nkd(zs, zt, jnp.asarray(LABELS), temperature=0.0)
  with pytest.raises(ValueError, match="labels"):
    losses.nkd(zs, zt, jnp.asarray(LABELS[:3]))
  with pytest.raises(ValueError, match="same shape"):
    losses.nkd(zs, zt[:, :3], jnp.asarray(LABELS))


# ---------------------------------------------------------------- TTM and WTTM


@pytest.mark.parametrize("l", [0.1, 0.2, 0.25, 0.5, 1.0])
def test_ttm_and_wttm_match_the_reference_formula(l):
  zs, zt = _logits(11), _logits(12)
  s32, t32 = jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32)
  np.testing.assert_allclose(losses.ttm(s32, t32, l), _np_ttm(zs, zt, l), rtol=1e-5)
  np.testing.assert_allclose(losses.wttm(s32, t32, l), _np_wttm(zs, zt, l), rtol=1e-5)
  with jax.enable_x64(True):
    np.testing.assert_allclose(losses.ttm(jnp.asarray(zs), jnp.asarray(zt), l), _np_ttm(zs, zt, l), rtol=1e-12)
    np.testing.assert_allclose(losses.wttm(jnp.asarray(zs), jnp.asarray(zt), l), _np_wttm(zs, zt, l),
                               rtol=1e-12)


def test_ttm_identities_with_kd():
  zs, zt = jnp.asarray(_logits(13)), jnp.asarray(_logits(14))
  # Exponent 1: the batch-mean KL of Hinton KD at T = 1 (no T² factor to remove there).
  np.testing.assert_allclose(losses.ttm(zs, zt, 1.0), losses.kd(zs, zt, 1.0), rtol=1e-5)
  np.testing.assert_allclose(losses.ttm(zs, zt, 1.0),
                             np.mean(losses.kl_divergence_per_example(zs, zt, 1.0)), rtol=1e-5)
  # Exponent 1/T: the teacher at temperature T, the student at 1.
  for temp in (2.0, 4.0, 10.0):
    np.testing.assert_allclose(losses.ttm(zs, zt, 1.0 / temp), losses.kd(zs, zt / temp, 1.0), rtol=1e-5)
  # Zero exactly when the student's distribution is the transformed teacher's: z_s = l·z_t (+ any shift).
  np.testing.assert_allclose(losses.ttm(0.1 * zt + 3.0, zt, 0.1), 0.0, atol=1e-6)
  np.testing.assert_allclose(losses.wttm(0.2 * zt - 1.0, zt, 0.2), 0.0, atol=1e-5)


def test_wttm_weights_and_its_identity_with_ttm():
  zs, zt = jnp.asarray(_logits(15)), jnp.asarray(_logits(16))
  # Exponent 1: every weight Σ p_t = 1, so WTTM is TTM.
  np.testing.assert_allclose(losses.wttm(zs, zt, 1.0), losses.ttm(zs, zt, 1.0), rtol=1e-5)
  # For l < 1 each weight is ≥ 1, so WTTM ≥ TTM; with every row's teacher uniform, the weight is C^(1−l).
  for l in (0.1, 0.5):
    assert float(losses.wttm(zs, zt, l)) > float(losses.ttm(zs, zt, l))
  flat = jnp.zeros_like(zt)
  np.testing.assert_allclose(losses.wttm(zs, flat, 0.2), 7 ** 0.8 * losses.ttm(zs, flat, 0.2), rtol=1e-5)
  # Both are invariant to per-sample shifts of either side's logits.
  shift = np.random.default_rng(17).normal(size=(8, 1)) * 30
  for fn in (losses.ttm, losses.wttm):
    np.testing.assert_allclose(fn(zs + shift, zt - shift, 0.3), fn(zs, zt, 0.3), rtol=1e-5)


def test_ttm_is_finite_for_a_saturated_teacher_and_rejects_bad_exponents():
  # p_t underflows to 0 for most classes in float32; the log-space transform keeps p̃_t and its log finite.
  zt = jnp.asarray(np.where(np.eye(7)[LABELS] > 0, 300.0, 0.0), jnp.float32)
  zs = jnp.asarray(_logits(18), jnp.float32)
  for fn in (losses.ttm, losses.wttm):
    value, grad = jax.value_and_grad(lambda s: fn(s, zt, 0.1))(zs)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="exponent"):
      fn(zs, zt, 0.0)
    with pytest.raises(ValueError, match="same shape"):
      fn(zs, zt[:, :3], 0.1)


# ---------------------------------------------------------------- gradients

Y = jnp.asarray(LABELS)
LOSSES = {
    "nkd": lambda s, t: losses.nkd(s, t, Y, temperature=3.0, gamma=3.5),
    "nkd_t1": lambda s, t: losses.nkd(s, t, Y),
    "ttm": lambda s, t: losses.ttm(s, t, 0.1),
    "wttm": lambda s, t: losses.wttm(s, t, 0.2),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_reach_the_student_only(name):
  zs, zt = jnp.asarray(_logits(19), jnp.float32), jnp.asarray(_logits(20), jnp.float32)
  g_student, g_teacher = jax.grad(LOSSES[name], argnums=(0, 1))(zs, zt)
  assert np.all(np.isfinite(g_student)) and float(jnp.abs(g_student).sum()) > 1e-3
  np.testing.assert_array_equal(g_teacher, 0.0)
  # Softmax-based losses: each row's gradient sums to 0 (the loss ignores per-sample shifts).
  np.testing.assert_allclose(np.sum(g_student, axis=1), 0.0, atol=1e-6)


def test_ttm_gradient_is_the_probability_difference():
  # ∂/∂z_s mean_b KL(p̃_t ‖ softmax(z_s)) = (softmax(z_s) − p̃_t) / B; WTTM scales row b by its weight.
  zs, zt = _logits(21), _logits(22)
  ps = np.exp(_log_softmax(zs))
  pt = np.exp(_log_softmax(0.25 * zt))
  weight = np.sum(np.exp(_log_softmax(zt)) ** 0.25, axis=1, keepdims=True)
  np.testing.assert_allclose(jax.grad(losses.ttm)(jnp.asarray(zs), jnp.asarray(zt), 0.25), (ps - pt) / 8,
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(jax.grad(losses.wttm)(jnp.asarray(zs), jnp.asarray(zt), 0.25),
                             weight * (ps - pt) / 8, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- distillers


def _output(logits):
  logits = jnp.asarray(logits, jnp.float32)
  return ModelOutput(prediction=logits, stages=(), preact_stages=(), embedding=jnp.zeros((logits.shape[0], 4)))


S, T = _output(_logits(23)), _output(_logits(24))
BATCH = {"label": Y}
CONFIGS = {
    "nkd": ({"temperature": 3.0, "gamma": 3.5}, lambda: losses.nkd(S.logits, T.logits, Y, temperature=3.0,
                                                                    gamma=3.5)),
    "ttm": ({"exponent": 0.1}, lambda: losses.ttm(S.logits, T.logits, 0.1)),
    "wttm": ({"exponent": 0.2}, lambda: losses.wttm(S.logits, T.logits, 0.2)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_registry_builds_each_distiller_and_jit_matches_the_loss(name):
  hparams, expected = CONFIGS[name]
  total = distillers.from_config({"ce": {"weight": 1.0}, name: {"weight": 45.0, **hparams}})
  term = dict((n, d) for n, _, d in total.terms)[name]
  assert type(term) is distillers.DISTILLERS[name]
  assert term.init(jax.random.PRNGKey(0), S, T, BATCH) == {}
  call = lambda d, s: d({}, _output(s), T, BATCH, rng=jax.random.PRNGKey(1), train=True, step=0, epoch=1)
  value, metrics, state = jax.jit(lambda s: call(term, s))(S.logits)
  np.testing.assert_allclose(value, expected(), rtol=1e-5)
  assert state == {} and all(np.isfinite(v) for v in jax.tree.leaves(metrics))
  total_value, total_metrics, _ = jax.jit(lambda s: call(total, s))(S.logits)
  np.testing.assert_allclose(total_value, losses.cross_entropy(S.logits, Y) + 45.0 * value, rtol=1e-5)
  np.testing.assert_allclose(total_metrics[f"{name}/loss"], value, rtol=1e-6)
  if name == "nkd":
    np.testing.assert_allclose(metrics["target"] + metrics["non_target"], value, rtol=1e-6)
    np.testing.assert_allclose(metrics["target"], losses.nkd(S.logits, T.logits, Y, gamma=0.0), rtol=1e-6)
  if name == "wttm":
    _, norm = _np_ttm_parts(S.logits, T.logits, 0.2)
    np.testing.assert_allclose(metrics["weight"], norm.mean(), rtol=1e-5)


def test_distiller_defaults_validation_and_per_pixel_logits():
  assert distillers.make_distiller("nkd") == distillers.NKD(temperature=1.0, gamma=1.5)  # NKDLoss defaults
  assert distillers.make_distiller("ttm").exponent == 0.1 and distillers.make_distiller("wttm").exponent == 0.2
  for name, bad in (("nkd", {"temperature": 0.0}), ("nkd", {"gamma": -1.0}), ("ttm", {"exponent": 0.0}),
                    ("wttm", {"exponent": -0.5})):
    with pytest.raises(KDJaxError, match=next(iter(bad))):
      distillers.make_distiller(name, **bad)
  # Per-pixel logits [B, H, W, C]: every pixel is an example (class_rows / label_rows).
  zs, zt = _logits(25, (2, 2, 2, 7)), _logits(26, (2, 2, 2, 7))
  labels = jnp.asarray(LABELS.reshape(2, 2, 2))
  for name, expected in (("nkd", losses.nkd(zs.reshape(8, 7), zt.reshape(8, 7), Y)),
                         ("ttm", losses.ttm(zs.reshape(8, 7), zt.reshape(8, 7))),
                         ("wttm", losses.wttm(zs.reshape(8, 7), zt.reshape(8, 7)))):
    value, _, _ = distillers.make_distiller(name)({}, _output(zs), _output(zt), {"label": labels}, rng=None,
                                                  train=True, step=0)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


# ---------------------------------------------------------------- configs

CONFIG_LOSSES = {
    "digits_nkd.py": {"ce": {"weight": 1.0}, "nkd": {"weight": 1.0, "temperature": 3.0, "gamma": 3.5}},
    "digits_ttm.py": {"ce": {"weight": 1.0}, "ttm": {"weight": 5.0, "exponent": 0.1}},
    "digits_wttm.py": {"ce": {"weight": 1.0}, "wttm": {"weight": 4.0, "exponent": 0.2}},
    "cifar100_nkd.py": {"ce": {"weight": 1.0}, "nkd": {"weight": 1.0, "temperature": 3.0, "gamma": 3.5}},
    "cifar100_ttm.py": {"ce": {"weight": 1.0}, "ttm": {"weight": 45.0, "exponent": 0.1}},
    "cifar100_wttm.py": {"ce": {"weight": 1.0}, "wttm": {"weight": 4.0, "exponent": 0.2}},
}


@pytest.mark.parametrize("file", sorted(CONFIG_LOSSES))
def test_configs_load_and_build(file):
  config = load_config_file(os.path.join(EXPERIMENTS, file))
  assert config.loss.to_dict() == CONFIG_LOSSES[file]
  distillers.from_config(config.loss.to_dict())
  if file.startswith("digits"):  # the default study's student and teacher
    assert (config.data.name, config.student.model, config.teacher.model) == ("digits", "mlp_small", "cnn_large")
  else:  # the pair of the reference's CIFAR-100 table
    assert (config.data.name, config.student.model, config.teacher.model) == ("cifar100", "resnet8x4",
                                                                              "resnet32x4")
    assert config.epochs == 240 and config.optim.lr == 0.05 and config.batch_size == 64


def test_digits_configs_train_end_to_end(tmp_path, digits):
  """One short run: the three digits configs' terms together (CE once), from a random exported teacher."""
  from kd_jax.train.loop import train_and_evaluate

  teacher_dir = export_random_mlp_teacher(str(tmp_path / "teacher"))
  loss = {}
  for file in ("digits_nkd.py", "digits_ttm.py", "digits_wttm.py"):
    loss.update(load_config_file(os.path.join(EXPERIMENTS, file)).loss.to_dict())
  config = load_config_file(os.path.join(EXPERIMENTS, "digits_ttm.py"))
  config.loss = loss
  config.teacher.model, config.teacher.workdir = "mlp_tiny", teacher_dir
  config.epochs, config.max_steps, config.log_every_steps, config.progress_bar = 1, 3, 1, False
  workdir = str(tmp_path / "student")
  results = train_and_evaluate(config, workdir, dataset=digits)
  assert results["steps"] == 3 and 0.0 <= results["test_accuracy"] <= 1.0
  import json
  last = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))][-1]
  for key in ("train/nkd/loss", "train/ttm/loss", "train/wttm/loss", "train/nkd/non_target", "train/wttm/weight"):
    assert np.isfinite(last[key]), key
