"""Calibration metrics pinned to hand-computed values, temperature scaling on synthetic logits, and what a run
does with a temperature fitted at a bound of its search range."""

import json
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import calibration
from kd_jax.config import CHOICES, base_config, set_value, validate
from kd_jax.data import from_arrays
from kd_jax.errors import KDJaxError
from kd_jax.train import train_and_evaluate


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _nll(z, y, t):
  """Independent reference: mean -log softmax(z / t)[y], in float64."""
  s = np.asarray(z, np.float64) / t
  m = s.max(-1, keepdims=True)
  log_p = s - m - np.log(np.exp(s - m).sum(-1, keepdims=True))
  return -np.mean(log_p[np.arange(len(y)), y])


def _synthetic(seed, n=20_000, c=10, scale=2.0):
  """Logits z ~ N(0, scale²) and labels drawn from softmax(z): z is calibrated by construction."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, c)) * scale
  y = (np.cumsum(softmax(z), axis=-1) > rng.random((n, 1))).argmax(-1)
  return z, y


# --- ECE ---------------------------------------------------------------------------------------------

# Six examples, four classes, three bins (0, 1/3], (1/3, 2/3], (2/3, 1].
_PROBS = np.array([
    [0.30, 0.25, 0.25, 0.20],  # conf .30 -> bin 0, predicts 0, label 0: correct
    [0.50, 0.20, 0.20, 0.10],  # conf .50 -> bin 1, predicts 0, label 0: correct
    [0.10, 0.60, 0.20, 0.10],  # conf .60 -> bin 1, predicts 1, label 2: wrong
    [0.90, 0.05, 0.03, 0.02],  # conf .90 -> bin 2, predicts 0, label 0: correct
    [0.05, 0.05, 0.10, 0.80],  # conf .80 -> bin 2, predicts 3, label 1: wrong
    [0.10, 0.70, 0.10, 0.10],  # conf .70 -> bin 2, predicts 1, label 1: correct
])
_LABELS = np.array([0, 0, 2, 0, 1, 1])


def test_ece_and_its_split_by_hand():
  # bin 0: |B|=1, acc 1,   conf .30            -> under-confident by .70,  weight 1/6
  # bin 1: |B|=2, acc 1/2, conf (.5+.6)/2=.55  -> over-confident by .05,   weight 2/6
  # bin 2: |B|=3, acc 2/3, conf (.9+.8+.7)/3=.8 -> over-confident by 2/15, weight 3/6
  under = 0.70 / 6
  over = 0.05 * 2 / 6 + (2 / 15) * 3 / 6  # = 0.1/6 + 0.4/6 = 0.5/6
  split = calibration.ece_split(_PROBS, _LABELS, num_bins=3)
  np.testing.assert_allclose(split["under"], under, rtol=1e-12)
  np.testing.assert_allclose(split["over"], over, rtol=1e-12)
  np.testing.assert_allclose(split["ece"], 0.2, rtol=1e-12)  # 1.2 / 6
  np.testing.assert_allclose(calibration.ece(_PROBS, _LABELS, num_bins=3), 0.2, rtol=1e-12)


def test_ece_bins_are_right_closed():
  # Two bins (0, .5] and (.5, 1]. A confidence of exactly .5 belongs to the first (Guo et al.'s code).
  probs = np.array([[0.5, 0.5], [0.75, 0.25]])
  labels = np.array([0, 1])  # first correct, second wrong
  # right-closed: bin 0 {acc 1, conf .5}, bin 1 {acc 0, conf .75} -> .5·.5 + .5·.75 = .625
  # (left-closed would put both in bin 1: |1/2 − .625| = .125)
  np.testing.assert_allclose(calibration.ece(probs, labels, num_bins=2), 0.625, rtol=1e-12)


def test_ece_is_zero_for_a_perfectly_calibrated_construction():
  # 10 predictions at confidence .8 of which 8 are right, 4 at confidence .5 of which 2 are right.
  probs = np.array([[0.8, 0.2]] * 10 + [[0.5, 0.5]] * 4)
  labels = np.array([0] * 8 + [1] * 2 + [0, 0, 1, 1])
  split = calibration.ece_split(probs, labels)
  assert split["ece"] == pytest.approx(0.0, abs=1e-12)
  assert split["over"] == pytest.approx(0.0, abs=1e-12)
  assert split["under"] == pytest.approx(0.0, abs=1e-12)


def test_ece_one_bin_is_accuracy_minus_mean_confidence_and_split_adds_up():
  z, y = _synthetic(0, n=2000)
  p = softmax(z * 1.7)
  gap = np.mean(p.max(-1)) - np.mean(p.argmax(-1) == y)
  np.testing.assert_allclose(calibration.ece(p, y, num_bins=1), abs(gap), rtol=1e-10)
  split = calibration.ece_split(p, y, num_bins=15)
  np.testing.assert_allclose(split["over"] + split["under"], split["ece"], rtol=1e-12)
  assert split["over"] > 0.1 > split["under"]  # logits × 1.7 are over-confident


# --- ACE ---------------------------------------------------------------------------------------------


def test_ace_by_hand():
  # N = 4, K = 3 classes, R = 2 ranges of two examples each.
  probs = np.array([[0.7, 0.2, 0.1],
                    [0.1, 0.3, 0.6],
                    [0.2, 0.5, 0.3],
                    [0.4, 0.4, 0.2]])
  labels = np.array([0, 2, 1, 1])
  # class 0: sorted p (1{y=0}): .1(0) .2(0) | .4(0) .7(1) -> |0 − .15| = .15, |.5 − .55| = .05
  # class 1: sorted p (1{y=1}): .2(0) .3(0) | .4(1) .5(1) -> |0 − .25| = .25, |1 − .45| = .55
  # class 2: sorted p (1{y=2}): .1(0) .2(0) | .3(0) .6(1) -> |0 − .15| = .15, |.5 − .45| = .05
  expected = (0.15 + 0.05 + 0.25 + 0.55 + 0.15 + 0.05) / (3 * 2)  # = 0.2
  np.testing.assert_allclose(calibration.ace(probs, labels, num_bins=2), expected, rtol=1e-12)


def test_ace_unequal_ranges_by_hand():
  # N = 5, R = 2: ranges of 3 and 2 examples (the first N mod R ranges get one more).
  p0 = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
  probs = np.stack([p0, 1 - p0], axis=1)
  labels = np.array([1, 1, 0, 1, 0])
  # class 0: .1(0) .2(0) .3(1) | .4(0) .5(1) -> |1/3 − .2| = 2/15, |.5 − .45| = .05
  # class 1: .5(0) .6(1) .7(0) | .8(1) .9(1) -> |1/3 − .6| = 4/15, |1 − .85| = .15
  expected = (2 / 15 + 0.05 + 4 / 15 + 0.15) / 4  # = 0.15
  np.testing.assert_allclose(calibration.ace(probs, labels, num_bins=2), expected, rtol=1e-12)


def test_ace_ignores_example_order_and_falls_after_temperature_scaling():
  z, y = _synthetic(1, n=3000)
  p = softmax(z * 2.5)
  perm = np.random.default_rng(0).permutation(len(y))
  np.testing.assert_allclose(calibration.ace(p[perm], y[perm]), calibration.ace(p, y), rtol=1e-12)
  assert calibration.ace(softmax(z), y) < 0.5 * calibration.ace(p, y)


# --- temperature scaling -----------------------------------------------------------------------------


def test_fit_temperature_recovers_a_known_temperature_and_lowers_ece():
  z, y = _synthetic(0)  # softmax(z) is the true label distribution
  over_confident = z * 2.5
  t = calibration.fit_temperature(over_confident, y)
  assert t == pytest.approx(2.5, rel=0.05)
  before = calibration.ece(softmax(over_confident), y)
  after = calibration.ece(softmax(over_confident / t), y)
  assert after < 0.2 * before
  # The same through the one-call summary a run logs; accuracy is unchanged by a temperature.
  m0 = calibration.calibration_metrics(over_confident, y)
  m1 = calibration.calibration_metrics(over_confident, y, temperature=t)
  np.testing.assert_allclose([m0["ece"], m1["ece"]], [before, after], rtol=1e-12)
  assert m1["nll"] < m0["nll"] and m1["ace"] < m0["ace"] and m1["accuracy"] == m0["accuracy"]


def test_fit_temperature_returns_one_on_calibrated_logits_and_sharpens_under_confident_ones():
  z, y = _synthetic(2)
  assert calibration.fit_temperature(z, y) == pytest.approx(1.0, rel=0.05)
  assert calibration.fit_temperature(z / 2.0, y) == pytest.approx(0.5, rel=0.05)


def test_fit_temperature_is_the_nll_minimiser():
  z, y = _synthetic(3, n=4000)
  t = calibration.fit_temperature(z * 3.0, y)
  grid = np.exp(np.linspace(np.log(0.2), np.log(20.0), 2001))
  best_on_grid = grid[np.argmin([_nll(z * 3.0, y, g) for g in grid])]
  assert t == pytest.approx(best_on_grid, rel=3e-3)  # the grid step is 0.23%
  assert _nll(z * 3.0, y, t) <= min(_nll(z * 3.0, y, t * 1.001), _nll(z * 3.0, y, t / 1.001))


def test_fit_temperature_converges_from_bad_initial_values():
  z, y = _synthetic(4, n=4000)
  ts = [calibration.fit_temperature(z * 2.5, y, init=init) for init in (1e-3, 0.05, 1.0, 40.0, 1e3)]
  np.testing.assert_allclose(ts, ts[2], rtol=1e-5)


def test_fit_temperature_is_scale_equivariant_and_shift_invariant():
  z, y = _synthetic(5, n=4000)
  t = calibration.fit_temperature(z, y)
  # softmax(c·z / (c·T)) = softmax(z / T), and adding a constant to a row does not change its softmax.
  assert calibration.fit_temperature(z * 7.0, y) == pytest.approx(7.0 * t, rel=1e-5)
  shift = np.random.default_rng(0).normal(size=(len(y), 1)) * 100.0
  assert calibration.fit_temperature(z + shift, y) == pytest.approx(t, rel=1e-5)


def test_fit_temperature_accepts_jax_float32_arrays():
  z, y = _synthetic(6, n=2000)
  t_np = calibration.fit_temperature(z.astype(np.float32), y)
  t_jax = calibration.fit_temperature(jnp.asarray(z, jnp.float32), jnp.asarray(y))
  assert isinstance(t_jax, float) and t_jax == pytest.approx(t_np, rel=1e-9)


def test_fit_temperature_warns_when_the_minimum_is_at_a_bound():
  z, _ = _synthetic(7, n=500)
  with pytest.warns(RuntimeWarning, match="search bound"):
    t = calibration.fit_temperature(z, z.argmax(-1))  # separable: NLL -> 0 as T -> 0
  assert t == pytest.approx(1e-3)


def test_fit_temperature_can_refuse_a_bound_and_says_which_and_why():
  z, _ = _synthetic(7, n=500)
  with pytest.raises(calibration.TemperatureAtBoundError, match="lower search bound.*all 500 examples") as e:
    calibration.fit_temperature(z, z.argmax(-1), at_bound="raise")  # separable: NLL -> 0 as T -> 0
  assert isinstance(e.value, KDJaxError)
  assert (e.value.bound, e.value.accuracy, e.value.num_examples) == ("lower", 1.0, 500)
  assert e.value.temperature == pytest.approx(1e-3)
  # Logits so confident that the NLL underflows to exactly 0 around T = 1: a search sees a flat function and
  # once returned T ≈ 1 with no warning; every label holds its row's largest logit, so it is the bound.
  confident = 800.0 * np.eye(10)[np.arange(50) % 10]
  assert _nll(confident, np.arange(50) % 10, 1.0) == 0.0
  with pytest.raises(calibration.TemperatureAtBoundError, match="lower search bound"):
    calibration.fit_temperature(confident, np.arange(50) % 10, at_bound="raise")
  # Labels at each row's smallest logit: the NLL's slope in β = 1/T is mean_c z − z_y > 0 at β = 0, so by
  # convexity it only rises with β and the minimum is at T -> ∞, the upper bound.
  with pytest.raises(calibration.TemperatureAtBoundError, match="upper search bound.*no information") as e:
    calibration.fit_temperature(z, z.argmin(-1), at_bound="raise")
  assert e.value.bound == "upper" and e.value.temperature == pytest.approx(1e3)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a well-posed fit neither warns nor raises
    z, y = _synthetic(9, n=200)
    assert calibration.fit_temperature(z, y, at_bound="raise") == pytest.approx(calibration.fit_temperature(z, y))
  with pytest.raises(KDJaxError, match="at_bound must be 'warn' or 'raise'"):
    calibration.fit_temperature(z, y, at_bound="ignore")


# --- calibration at a bound in a run ------------------------------------------------------------------


def _separable_dataset():
  """Two well-separated Gaussian blobs in 4 dimensions: a teacher gets every validation example right."""
  rng = np.random.default_rng(0)
  y = np.arange(280) % 2
  x = (rng.normal(size=(280, 4)) * 0.3 + np.where(y[:, None] == 1, 2.0, -2.0)).astype(np.float32)
  return from_arrays(x[:240], y[:240], x_test=x[240:], y_test=y[240:], val_fraction=0.25, seed=0)


def _arrays_config(**overrides):
  c = base_config()
  c.student.model = "mlp_tiny"
  c.batch_size, c.eval_batch_size, c.epochs, c.max_steps = 32, 64, 2, 2
  c.progress_bar, c.optim.schedule = False, "constant"
  for key, value in overrides.items():
    set_value(c, key, value)
  return c


@pytest.fixture(scope="module")
def perfect_teacher(tmp_path_factory):
  """A teacher run that classifies the whole validation split correctly (its calibration split)."""
  dataset = _separable_dataset()
  workdir = str(tmp_path_factory.mktemp("perfect_teacher"))
  results = train_and_evaluate(_arrays_config(**{"student.model": "mlp_small", "max_steps": 12, "epochs": 2}),
                               workdir, dataset=dataset)
  assert results["val_accuracy"] == 1.0  # the premise of the tests below
  return dataset, workdir


def test_config_default_stops_a_run_whose_calibration_temperature_is_at_the_bound(tmp_path, perfect_teacher):
  dataset, teacher_dir = perfect_teacher
  config = _arrays_config(**{"loss": {"kd": {"weight": 1.0}}, "teacher.workdir": teacher_dir,
                             "teacher.calibrate": True})
  assert config.teacher.calibration_at_bound == "error"
  workdir = tmp_path / "student"
  # Why (the bound, the split, a teacher right on every example, one-hot targets) and what to do.
  with pytest.raises(KDJaxError, match=r"(?s)teacher 0 .*'val' split is at the lower bound of the search range "
                     r"\(T = 0\.001\).*classifies all 60 examples of that split correctly.*one-hot.*"
                     r"config\.data\.val_fraction.*calibration_split='train'.*calibrate=False.*"
                     r"calibration_at_bound='keep_one'"):
    train_and_evaluate(config, str(workdir), dataset=dataset)
  assert not (workdir / "teacher_calibration.json").exists()  # refused before anything was written
  assert not (workdir / "results.json").exists()


def test_keep_one_keeps_the_teacher_at_t_1_and_reports_why(tmp_path, perfect_teacher):
  dataset, teacher_dir = perfect_teacher
  config = _arrays_config(**{"loss": {"kd": {"weight": 1.0}}, "teacher.workdir": teacher_dir,
                             "teacher.calibrate": True, "teacher.calibration_at_bound": "keep_one"})
  workdir = tmp_path / "student"
  results = train_and_evaluate(config, str(workdir), dataset=dataset)
  report = results["teacher_calibration"][0]
  assert report["temperature"] == 1.0 and report["fitted_temperature"] == pytest.approx(1e-3)
  assert "lower bound" in report["kept_uncalibrated"] and "kept T = 1" in report["kept_uncalibrated"]
  assert report["accuracy_before"] == 1.0 and report["nll_after"] == report["nll_before"]  # T = 1 both times
  on_disk = json.loads((workdir / "results.json").read_text())["teacher_calibration"][0]
  assert on_disk["kept_uncalibrated"] == report["kept_uncalibrated"] and on_disk["temperature"] == 1.0
  assert json.loads((workdir / "teacher_calibration.json").read_text())[0]["temperature"] == 1.0


def test_calibration_at_bound_is_a_checked_config_choice():
  assert CHOICES["teacher.calibration_at_bound"] == ("error", "keep_one")
  config = base_config()
  set_value(config, "teacher.calibration_at_bound", "keep")
  with pytest.raises(KDJaxError, match="teacher.calibration_at_bound must be 'error' or 'keep_one'"):
    validate(config)


# --- reliability diagram -----------------------------------------------------------------------------


def test_reliability_diagram_writes_a_png(tmp_path):
  z, y = _synthetic(8, n=1000)
  path = tmp_path / "plots" / "teacher_before.png"
  out = calibration.reliability_diagram(softmax(z * 2.5), y, path, num_bins=10, title="teacher")
  assert out == str(path)
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# --- bad inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [calibration.ece, calibration.ece_split, calibration.ace])
def test_metrics_reject_bad_inputs(fn):
  with pytest.raises(ValueError, match=r"labels must have shape \[N\] = \(6,\)"):
    fn(_PROBS, _LABELS[:5])
  with pytest.raises(ValueError, match="num_bins must be an integer >= 1"):
    fn(_PROBS, _LABELS, num_bins=0)
  with pytest.raises(ValueError, match="num_bins must be an integer >= 1"):
    fn(_PROBS, _LABELS, num_bins=2.5)
  with pytest.raises(ValueError, match=r"expected a \[N, C\] array"):
    fn(_PROBS[0], _LABELS[:1])
  with pytest.raises(ValueError, match="If these are logits, pass softmax"):
    fn(np.log(_PROBS), _LABELS)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
    fn(_PROBS, _LABELS + 2)


def test_fit_temperature_and_diagram_reject_bad_inputs(tmp_path):
  z, y = _synthetic(9, n=100)
  with pytest.raises(ValueError, match="labels must have shape"):
    calibration.fit_temperature(z, y[:-1])
  with pytest.raises(ValueError, match="init must be a finite temperature > 0"):
    calibration.fit_temperature(z, y, init=0.0)
  with pytest.raises(ValueError, match="integer class ids"):
    calibration.fit_temperature(z, y.astype(np.float32))
  with pytest.raises(ValueError, match="NaN or infinite"):
    calibration.fit_temperature(np.where(z > 2, np.nan, z), y)
  with pytest.raises(ValueError, match="temperature is undefined"):
    calibration.fit_temperature(np.zeros_like(z), y)
  with pytest.raises(ValueError, match="num_bins must be an integer >= 1"):
    calibration.reliability_diagram(softmax(z), y, tmp_path / "x.png", num_bins=0)
  assert not (tmp_path / "x.png").exists()
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a well-posed fit does not warn
    calibration.fit_temperature(z, y)
