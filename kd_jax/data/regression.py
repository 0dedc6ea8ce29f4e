"""Regression datasets (task 'regression'): in-memory arrays, the embedded diabetes and trajectory sets, files.

Batches are `{'input': float32 [B, ...], 'target': float32 [B, D] or dense maps [B, H, W, C], 'labeled':
float32 [B] (1 = the example's target may be used for training), 'index': int32 [B]}` (an `ArraySplit`).

Units: inputs are standardised per channel (the last axis: a feature of tabular data, a coordinate of a
trajectory, a colour channel of an image) with the mean and standard deviation of the whole non-test pool,
which holds no target information and does not depend on the run seed. Targets stay in their ORIGINAL units
in the batch; the dataset computes their per-channel mean and standard deviation over the LABELED training
examples only (`info['target_mean']`, `info['target_std']`, one value per target dimension for vectors [N, D],
per channel for dense maps), and the task (`kd_jax.tasks.Regression`) standardises them for the loss:
models predict standardised targets `(y − mean) / std`, and metrics are computed back in original units. The
targets are kept unstandardised so that metrics compare with the targets exactly (a depth map's invalid
pixels, t = 0, stay exactly 0 and are excluded from AbsRel and δ).

Splits: without `x_test` the test split is a fixed `test_fraction` of the examples, drawn with seed 0 whatever
the run seed (every run reports on the same examples, as `from_ratings`); the validation split is a
`val_fraction` of the rest drawn from `seed`; `labeled_fraction` marks round(f · n_train) training examples
as labeled, drawn from `seed` (validation and test are all labeled). A teacher whose pseudo-labels a student
reads must see the same split (so the same labeled examples and the same target standardisation): the
config key `data.split_seed` draws these splits independently of `config.seed`, so the teachers of an
ensemble can differ in their initialisation only.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from kd_jax.data.datasets import ArraySplit, ArrayLike, Dataset
from kd_jax.errors import KDJaxError, one_of

REGRESSION_DATASETS = ("diabetes", "trajectories", "regression_files")

# The fixed test split's seed (never the run's), and tags mixed into the run seed for the validation carve
# and the labeled subset, so these streams differ from each other and from the batch shuffling streams.
_TEST_SEED = 0
_VAL_STREAM = 0x72766C   # "rvl"
_LABEL_STREAM = 0x6C626C  # "lbl"

# The embedded synthetic trajectories: the generator's own seed (fixed: every run sees the same agents).
TRAJECTORY_SEED = 2024
TRAJECTORY_AGENTS = 2000
TRAJECTORY_DT = 0.4      # seconds between positions (ETH/UCY annotations are at 2.5 Hz)
OBSERVED, PREDICTED = 8, 12  # the ETH/UCY 8 → 12 convention: 3.2 s observed, 4.8 s predicted


def from_regression_arrays(x_train: ArrayLike, y_train: ArrayLike, *, x_test: Optional[ArrayLike] = None,
                           y_test: Optional[ArrayLike] = None, labeled_fraction: float = 1.0,
                           val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                           standardize_inputs: bool = True, name: str = "regression") -> Dataset:
  """A regression `Dataset` from arrays (see the module docstring for units and splits).

  Args:
    x_train: inputs [N, ...] (tabular [N, F], sequences [N, T, F], images [N, H, W, C]; [N] is [N, 1]).
    y_train: targets [N] (taken as [N, 1]), [N, D], or dense maps [N, H, W, C].
    x_test, y_test: the test split (both or neither); without them a fixed `test_fraction` of the
      examples, drawn with seed 0, is held out.
    labeled_fraction: in (0, 1]: the fraction of the training split marked labeled (drawn from `seed`).
    val_fraction: in [0, 1): the fraction of the non-test examples carved out for validation (from `seed`).
    test_fraction: in [0, 1), used only without `x_test`; it must leave at least one test example.
    seed: draws the validation carve and the labeled subset.
    standardize_inputs: standardise inputs per channel (last axis) with the non-test pool's statistics.
    name: the dataset's name in logs and results.

  Raises:
    KDJaxError: non-finite inputs or targets, mismatched lengths or shapes, fractions out of range, an
      empty split.
  """
  _check_fractions(labeled_fraction, val_fraction, test_fraction)
  x, y = _inputs(x_train, "x_train"), _targets(y_train, "y_train")
  _check_pair(x, y, "x_train", "y_train")
  if (x_test is None) != (y_test is None):
    raise KDJaxError("Pass both x_test and y_test, or neither (then a fixed test_fraction of the examples is "
                     "held out).")
  if x_test is not None:
    x_te, y_te = _inputs(x_test, "x_test"), _targets(y_test, "y_test")
    _check_pair(x_te, y_te, "x_test", "y_test")
    for a, b, what in ((x_te, x, "x"), (y_te, y, "y")):
      if a.shape[1:] != b.shape[1:]:
        raise KDJaxError(f"{what}_test examples have shape {a.shape[1:]} but {what}_train examples have "
                         f"{b.shape[1:]}; they must match.")
    if len(x_te) == 0:
      raise KDJaxError("x_test is empty; pass at least one test example, or leave x_test out to hold out "
                       "test_fraction of the training arrays.")
    pool_x, pool_y = x, y
  else:
    n_test = int(round(test_fraction * len(x)))
    if n_test == 0:
      raise KDJaxError(f"test_fraction={test_fraction} of {len(x)} examples leaves no test split; raise "
                       "test_fraction or pass x_test and y_test.")
    test_idx = np.sort(np.random.default_rng([_TEST_SEED]).permutation(len(x))[:n_test])
    pool_idx = np.setdiff1d(np.arange(len(x)), test_idx)
    x_te, y_te, pool_x, pool_y = x[test_idx], y[test_idx], x[pool_idx], y[pool_idx]

  entropy = int(seed) % (1 << 64)
  carve = np.random.default_rng([entropy, _VAL_STREAM]).permutation(len(pool_x))
  val_idx = np.sort(carve[:int(round(val_fraction * len(pool_x)))])
  train_idx = np.setdiff1d(np.arange(len(pool_x)), val_idx)
  n_labeled = int(round(labeled_fraction * len(train_idx)))
  if len(train_idx) == 0 or n_labeled == 0:
    raise KDJaxError(f"val_fraction={val_fraction} and labeled_fraction={labeled_fraction} leave "
                     f"{len(train_idx)} training examples, {n_labeled} of them labeled, out of {len(pool_x)} "
                     "non-test examples; lower val_fraction or raise labeled_fraction (at least one labeled "
                     "training example is needed).")
  labeled = np.zeros(len(train_idx), np.float32)
  labeled[np.random.default_rng([entropy, _LABEL_STREAM]).permutation(len(train_idx))[:n_labeled]] = 1.0

  x_mean, x_std = _channel_moments(pool_x) if standardize_inputs else (0.0, 1.0)
  y_mean, y_std = _channel_moments(pool_y[train_idx][labeled > 0])

  def split(xs, ys, flags):
    arrays = {"input": ((xs - x_mean) / x_std).astype(np.float32), "target": ys.astype(np.float32),
              "labeled": flags.astype(np.float32)}
    for a in arrays.values():
      a.setflags(write=False)
    return ArraySplit(arrays)

  ones = lambda n: np.ones(n, np.float32)
  return Dataset(
      name=name, train=split(pool_x[train_idx], pool_y[train_idx], labeled),
      val=split(pool_x[val_idx], pool_y[val_idx], ones(len(val_idx))), test=split(x_te, y_te, ones(len(x_te))),
      num_classes=0, image_shape=tuple(int(d) for d in x.shape[1:]), task="regression",
      info={"target_shape": tuple(int(d) for d in y.shape[1:]), "target_mean": tuple(float(v) for v in y_mean),
            "target_std": tuple(float(v) for v in y_std), "num_labeled": n_labeled,
            "labeled_fraction": float(labeled_fraction)})


def load_regression_dataset(name: str, *, data_dir: str = "", labeled_fraction: float = 1.0,
                            val_fraction: float = 0.1, seed: int = 0) -> Dataset:
  """The regression dataset `name` (config.data.name with config.task='regression').

  'diabetes': scikit-learn's `load_diabetes()` (442 patients, 10 features, disease progression after one
  year; bundled with scikit-learn, no download), 20% held out as the fixed test split [assume].
  'trajectories': `trajectory_arrays()` (synthetic agents, 8 observed → 12 predicted positions), 20% held
  out [assume].
  'regression_files': `data_dir/train.npz` (and optionally `data_dir/test.npz`) holding arrays `x` and `y`
  (`y` [N, D] or dense maps [N, H, W, C]); without test.npz 20% of train.npz is held out.
  """
  if name == "diabetes":
    from sklearn.datasets import load_diabetes  # pylint: disable=g-import-not-at-top
    bunch = load_diabetes()
    x, y = bunch.data, bunch.target
    return from_regression_arrays(x, y, labeled_fraction=labeled_fraction, val_fraction=val_fraction,
                                  seed=seed, name="diabetes")
  if name == "trajectories":
    x, y = trajectory_arrays()
    return from_regression_arrays(x, y, labeled_fraction=labeled_fraction, val_fraction=val_fraction,
                                  seed=seed, name="trajectories")
  if name == "regression_files":
    train, test = _read_files(data_dir)
    return from_regression_arrays(train[0], train[1], x_test=None if test is None else test[0],
                                  y_test=None if test is None else test[1], labeled_fraction=labeled_fraction,
                                  val_fraction=val_fraction, seed=seed,
                                  name=os.path.basename(os.path.normpath(data_dir)) or "regression_files")
  raise KDJaxError(f"Unknown regression dataset {name!r}; config.task='regression' takes config.data.name "
                   f"{one_of(REGRESSION_DATASETS)}.")


def trajectory_arrays(num_agents: int = TRAJECTORY_AGENTS,
                      seed: int = TRAJECTORY_SEED) -> Tuple[np.ndarray, np.ndarray]:
  """Synthetic pedestrian-like trajectories: inputs [N, 8, 2] and targets [N, 24], float32, in metres.

  Each agent moves for 20 steps of dt = 0.4 s (ETH/UCY's 2.5 Hz): heading uniform in [0, 2π), speed uniform
  in [0.5, 2] m/s (walking to running), a per-agent constant turn rate ~ N(0, 0.15²) rad/s, and per step
  Gaussian noise on the speed (σ 0.03 m/s) and heading (σ 0.02 rad). So that the future is not a linear
  extrapolation of the past, 20% of the agents stop (their speed decays to 0 with a time constant of 1 s)
  and 25% turn sharply (their turn rate jumps to ±(0.4–0.8) rad/s), each from a step drawn uniformly in
  [3, 10]: mostly inside the observed window, where a model can see it begin, sometimes after it. Every
  number here is our choice [assume]. The input is the 8 observed positions relative to the last observed
  one (so its last row is 0), the target the 12 future positions relative to it, flattened to
  [x1, y1, x2, y2, ...] (the ETH/UCY 8 → 12 convention). Deterministic in (`num_agents`, `seed`); the
  loader uses the fixed `TRAJECTORY_SEED`, never the run seed.
  """
  rng = np.random.default_rng([seed])
  steps = OBSERVED + PREDICTED
  heading = rng.uniform(0.0, 2 * np.pi, num_agents)
  speed = rng.uniform(0.5, 2.0, num_agents)
  turn = rng.normal(0.0, 0.15, num_agents)
  kind = rng.random(num_agents)  # < 0.2: stops, 0.2–0.45: sharp turn, else steady
  change = rng.integers(3, 11, num_agents)
  sharp = rng.choice([-1.0, 1.0], num_agents) * rng.uniform(0.4, 0.8, num_agents)
  speed_noise = rng.normal(0.0, 0.03, (num_agents, steps))
  heading_noise = rng.normal(0.0, 0.02, (num_agents, steps))
  positions = np.zeros((num_agents, steps, 2))
  for t in range(1, steps):
    after = t >= change
    speed = np.where((kind < 0.2) & after, speed * np.exp(-TRAJECTORY_DT / 1.0), speed)
    speed = np.maximum(speed + speed_noise[:, t], 0.0)
    rate = np.where((kind >= 0.2) & (kind < 0.45) & after, sharp, turn)
    heading = heading + rate * TRAJECTORY_DT + heading_noise[:, t]
    step = speed[:, None] * TRAJECTORY_DT * np.stack([np.cos(heading), np.sin(heading)], -1)
    positions[:, t] = positions[:, t - 1] + step
  last = positions[:, OBSERVED - 1:OBSERVED]
  x = (positions[:, :OBSERVED] - last).astype(np.float32)
  y = (positions[:, OBSERVED:] - last).reshape(num_agents, PREDICTED * 2).astype(np.float32)
  return x, y


# ---------------------------------------------------------------------------------------------------
# Helpers.


def _check_fractions(labeled: float, val: float, test: float) -> None:
  problems = []
  if not 0.0 < float(labeled) <= 1.0:
    problems.append(f"labeled_fraction must be in (0, 1], got {labeled}")
  if not 0.0 <= float(val) < 1.0:
    problems.append(f"val_fraction must be in [0, 1), got {val}")
  if not 0.0 <= float(test) < 1.0:
    problems.append(f"test_fraction must be in [0, 1), got {test}")
  if problems:
    raise KDJaxError("; ".join(problems) + ".")


def _finite(a: np.ndarray, what: str) -> np.ndarray:
  if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
    raise KDJaxError(f"{what} must be a numeric array, got dtype {a.dtype}.")
  a = a.astype(np.float64)
  bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1) if a.ndim > 1 else ~np.isfinite(a)
  if np.any(bad):
    rows = np.flatnonzero(bad)
    raise KDJaxError(f"{what} holds NaN or infinite values in {len(rows)} example(s) (first: row {rows[0]}); "
                     "remove or impute those examples before training.")
  return a


def _inputs(x: ArrayLike, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 0:
    raise KDJaxError(f"{what} must be an array of examples [N, ...], got a scalar.")
  x = _finite(x, what)
  return x[:, None] if x.ndim == 1 else x


def _targets(y: ArrayLike, what: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim not in (1, 2, 4):
    raise KDJaxError(f"{what} must be [N], [N, D] or dense maps [N, H, W, C]; got shape {y.shape} (flatten "
                     "vector targets to [N, D], give maps a channel axis).")
  y = _finite(y, what)
  return y[:, None] if y.ndim == 1 else y


def _check_pair(x: np.ndarray, y: np.ndarray, x_what: str, y_what: str) -> None:
  if len(x) != len(y):
    raise KDJaxError(f"{x_what} has {len(x)} examples but {y_what} has {len(y)}; lengths must match.")
  if len(x) == 0:
    raise KDJaxError(f"{x_what} is empty; pass at least one example.")


def _channel_moments(a: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and standard deviation per channel (last axis) over every other axis; a constant channel's std is 1."""
  flat = a.reshape(-1, a.shape[-1])
  mean, std = flat.mean(axis=0), flat.std(axis=0)
  return mean, np.where(std > 0, std, 1.0)


def _read_files(data_dir: str) -> Tuple[Tuple[np.ndarray, np.ndarray], Optional[Tuple[np.ndarray, np.ndarray]]]:
  """(x, y) of `data_dir/train.npz` and of `data_dir/test.npz` (None when absent)."""
  if not data_dir:
    raise KDJaxError("config.data.name='regression_files' reads config.data.data_dir, which is empty: set it to a "
                     "folder holding train.npz (and optionally test.npz), each with arrays 'x' and 'y'.")
  directory = os.path.expanduser(data_dir)
  train_path = os.path.join(directory, "train.npz")
  if not os.path.isfile(train_path):
    where = "does not exist" if not os.path.isdir(directory) else "holds no train.npz"
    raise KDJaxError(f"config.data.data_dir={data_dir!r} {where}: 'regression_files' needs train.npz (and "
                     "optionally test.npz), each with arrays 'x' (inputs [N, ...]) and 'y' (targets [N, D] or "
                     "[N, H, W, C]), e.g. np.savez(path, x=x, y=y).")
  test_path = os.path.join(directory, "test.npz")
  return _read_npz(train_path), _read_npz(test_path) if os.path.isfile(test_path) else None


def _read_npz(path: str) -> Tuple[np.ndarray, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise KDJaxError(f"{path} is not a readable .npz file ({e}); save it with np.savez(path, x=..., y=...).") from e
  missing = [k for k in ("x", "y") if k not in arrays]
  if missing:
    raise KDJaxError(f"{path} lacks array(s) {', '.join(missing)} (it has {', '.join(arrays) or 'none'}); "
                     "save it with np.savez(path, x=inputs, y=targets).")
  return arrays["x"], arrays["y"]


__all__ = ["REGRESSION_DATASETS", "TRAJECTORY_SEED", "from_regression_arrays", "load_regression_dataset",
           "trajectory_arrays"]
