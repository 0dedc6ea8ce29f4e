"""DGKD: the summed KD terms over every teacher, stochastic teaching's masks, and terms that read a subset of
the teachers (`teacher` in a loss term)."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import losses
from kd_jax.distillers import DGKD, KD, WeightedSum, from_config
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.train.loop import train_and_evaluate

from helpers import small_config


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _kl_batchmean(zs, zt, t):
  ps, pt = _softmax(zs / t), _softmax(zt / t)
  return float(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), -1)))


def _logits(seed, k=3, b=6, c=5):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(b, c)) * 3, [rng.normal(size=(b, c)) * 3 for _ in range(k)]


def test_dgkd_is_the_hand_computed_sum_over_every_teacher():
  zs, zts = _logits(0)
  t = 5.0
  expected = t * t * sum(_kl_batchmean(zs, zt, t) for zt in zts)
  np.testing.assert_allclose(losses.dgkd(jnp.asarray(zs), [jnp.asarray(z) for z in zts], t), expected, rtol=1e-5)
  # The reference's nn.KLDivLoss() default divides by B·C instead of B.
  np.testing.assert_allclose(losses.dgkd(jnp.asarray(zs), np.stack(zts), t, reduction="mean"),
                             expected / zs.shape[1], rtol=1e-5)
  # A dropped teacher's term is gone; one teacher is Hinton KD.
  kept = t * t * (_kl_batchmean(zs, zts[0], t) + _kl_batchmean(zs, zts[2], t))
  np.testing.assert_allclose(losses.dgkd(jnp.asarray(zs), np.stack(zts), t, keep=jnp.array([1.0, 0.0, 1.0])),
                             kept, rtol=1e-5)
  np.testing.assert_allclose(losses.dgkd(jnp.asarray(zs), [zts[1]], t), losses.kd(jnp.asarray(zs), zts[1], t),
                             rtol=1e-6)


def test_dgkd_gradient_is_t_times_the_summed_probability_gaps():
  zs, zts = _logits(1)
  t = 4.0
  grad = jax.grad(lambda z: losses.dgkd(z, np.stack(zts), t))(jnp.asarray(zs, jnp.float32))
  expected = t * sum(_softmax(zs / t) - _softmax(zt / t) for zt in zts) / zs.shape[0]
  np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_drop_num_drops_exactly_that_many_uniformly_and_never_all():
  dropped_counts = np.zeros(4)
  for i in range(400):
    mask = np.asarray(losses.teacher_keep_mask(jax.random.PRNGKey(i), 4, drop_num=1))
    assert sorted(mask.tolist()) == [0.0, 1.0, 1.0, 1.0]
    dropped_counts += 1 - mask
  assert dropped_counts.min() > 60  # each of the 4 teachers is dropped about 100 times in 400 steps
  for i in range(50):
    assert np.asarray(losses.teacher_keep_mask(jax.random.PRNGKey(i), 4, drop_num=3)).sum() == 1
  with pytest.raises(ValueError, match="drop_num"):
    losses.teacher_keep_mask(jax.random.PRNGKey(0), 3, drop_num=3)
  # The same key gives the same mask: a resumed step drops what the uninterrupted one dropped.
  chex.assert_trees_all_equal(losses.teacher_keep_mask(jax.random.PRNGKey(7), 5, drop_num=2),
                              losses.teacher_keep_mask(jax.random.PRNGKey(7), 5, drop_num=2))


def test_bernoulli_survival_keeps_each_term_with_probability_p_and_at_least_one():
  masks = np.stack([np.asarray(losses.teacher_keep_mask(jax.random.PRNGKey(i), 3, survival=0.75))
                    for i in range(600)])
  assert masks.sum(1).min() >= 1
  assert abs(masks.mean() - 0.75) < 0.05
  rare = np.stack([np.asarray(losses.teacher_keep_mask(jax.random.PRNGKey(i), 2, survival=0.05))
                   for i in range(200)])
  assert rare.sum(1).min() == 1  # nearly always all dropped, so the fallback keeps exactly one
  with pytest.raises(ValueError, match="not both"):
    losses.teacher_keep_mask(jax.random.PRNGKey(0), 3, drop_num=1, survival=0.5)


def _outputs(zs, zts):
  out = lambda z: ModelOutput(prediction=jnp.asarray(z), stages=(), preact_stages=(), embedding=None)
  return out(zs), tuple(out(z) for z in zts)


def test_the_distiller_drops_in_training_only_with_the_steps_key():
  zs, zts = _logits(2, k=4)
  student, teachers = _outputs(zs, zts)
  rng = jax.random.PRNGKey(3)
  d = DGKD(temperature=5.0, drop_num=2)
  value, metrics, _ = d({}, student, teachers, {}, rng=rng, train=True)
  keep = losses.teacher_keep_mask(rng, 4, drop_num=2)
  np.testing.assert_allclose(value, losses.dgkd(jnp.asarray(zs), np.stack(zts), 5.0, keep=keep), rtol=1e-6)
  assert float(metrics["kept"]) == 2.0
  assert [float(metrics[f"kept/teacher{k}"]) for k in range(4)] == np.asarray(keep).tolist()
  value, metrics, _ = d({}, student, teachers, {}, rng=rng, train=False)  # evaluation sees every teacher
  np.testing.assert_allclose(value, losses.dgkd(jnp.asarray(zs), np.stack(zts), 5.0), rtol=1e-6)
  with pytest.raises(ValueError, match="drop every one"):
    DGKD(drop_num=4)({}, student, teachers, {}, rng=rng, train=True)
  with pytest.raises(ValueError, match="not both"):
    DGKD(drop_num=1, survival=0.75)


def test_a_term_reads_the_teacher_it_picks():
  zs, zts = _logits(4, k=3)
  student, teachers = _outputs(zs, zts)
  batch = {"label": jnp.zeros(zs.shape[0], jnp.int32)}
  picked = from_config({"kd": {"weight": 1.0, "temperature": 4.0, "teacher": 2}})
  value, _, _ = picked({}, student, teachers, batch)
  np.testing.assert_allclose(value, losses.kd(jnp.asarray(zs), zts[2], 4.0), rtol=1e-6)
  pair = from_config({"dgkd": {"weight": 1.0, "teacher": (0, 2)}})
  value, _, _ = pair({}, student, teachers, batch)
  np.testing.assert_allclose(value, losses.dgkd(jnp.asarray(zs), [zts[0], zts[2]], 5.0), rtol=1e-6)
  with pytest.raises(KDJaxError, match="has 3 teacher"):
    from_config({"kd": {"weight": 1.0, "teacher": 3}})({}, student, teachers, batch)
  for bad in (-1, "0", (1, 1), (), True):
    with pytest.raises(KDJaxError, match="teacher must be"):
      from_config({"kd": {"weight": 1.0, "teacher": bad}})
  with pytest.raises(ValueError, match="not in the sum"):
    WeightedSum((("kd", 1.0, KD()),), (("ce", 0),))


@pytest.fixture(scope="module")
def two_teachers(tmp_path_factory):
  dirs = []
  for seed in (0, 1):
    d = str(tmp_path_factory.mktemp(f"teacher{seed}"))
    train_and_evaluate(small_config(seed=seed, **{"student.model": "cnn_tiny"}), d)
    dirs.append(d)
  return dirs


def _stochastic(teachers, max_steps):
  # One step per epoch (a batch of 1024 of the 1,293 training images), so metrics.jsonl has every step's mask.
  return small_config(**{"teacher.workdir": teachers[0], "teacher.extra_workdirs": (teachers[1],),
                         "loss": {"ce": {"weight": 0.5}, "dgkd": {"weight": 0.5, "drop_num": 1}},
                         "student.model": "mlp_tiny", "batch_size": 1024, "max_steps": max_steps, "epochs": 10,
                         "checkpoint_every_epochs": 1})


def _kept(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: (r["train/dgkd/kept/teacher0"], r["train/dgkd/kept/teacher1"]) for r in rows
          if "train/dgkd/kept/teacher0" in r}


def test_a_resumed_run_drops_the_same_teachers_at_the_same_steps(two_teachers, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(_stochastic(two_teachers, 8), straight)
  train_and_evaluate(_stochastic(two_teachers, 4), resumed)
  train_and_evaluate(_stochastic(two_teachers, 8), resumed)
  a, b = _kept(straight), _kept(resumed)
  assert sorted(a) == list(range(1, 9)) and all(sum(v) == 1.0 for v in a.values())
  assert len({v for v in a.values()}) == 2  # both teachers are dropped at some step
  assert {s: b[s] for s in range(5, 9)} == {s: a[s] for s in range(5, 9)}
