"""The distiller interface: registry, weighted sums, FitNet's regressor."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import distillers, losses
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput


def _output(key, batch=4, classes=10, channels=(8, 16), sizes=(8, 4)):
  keys = jax.random.split(key, len(channels) + 2)
  stages = tuple(jax.random.normal(k, (batch, s, s, c)) for k, c, s in zip(keys, channels, sizes))
  return ModelOutput(prediction=jax.random.normal(keys[-1], (batch, classes)), stages=stages,
                     preact_stages=stages, embedding=jax.random.normal(keys[-2], (batch, channels[-1])))


BATCH = {"label": jnp.array([0, 1, 2, 3])}


def test_weighted_sum_equals_sum_of_weighted_parts_and_reports_each_part():
  s, t = _output(jax.random.PRNGKey(0)), _output(jax.random.PRNGKey(1), channels=(12, 24))
  total = distillers.from_config({"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 2.0},
                                  "hint": {"weight": 3.0, "distiller": "fitnet", "stage": 0}})
  variables = total.init(jax.random.PRNGKey(2), s, t, BATCH)
  assert set(variables["params"]) == {"hint"}
  loss, metrics, state = total(variables, s, t, BATCH, rng=jax.random.PRNGKey(3), train=False)
  ce = losses.cross_entropy(s.logits, BATCH["label"])
  kd = losses.kd(s.logits, t.logits, temperature=2.0)
  hint_vars = {col: tree["hint"] for col, tree in variables.items()}
  hint, _, _ = distillers.FitNet(stage=0)(hint_vars, s, t, BATCH, rng=None, train=False)
  np.testing.assert_allclose(loss, 0.1 * ce + 0.9 * kd + 3.0 * hint, rtol=1e-6)
  np.testing.assert_allclose(metrics["ce/loss"], ce, rtol=1e-6)
  np.testing.assert_allclose(metrics["kd/loss"], kd, rtol=1e-6)
  np.testing.assert_allclose(metrics["hint/loss"], hint, rtol=1e-6)
  assert state == {}


def test_weighted_sum_nests_and_returns_state_in_train_mode():
  s, t = _output(jax.random.PRNGKey(0)), _output(jax.random.PRNGKey(1), channels=(12, 24))
  total = distillers.WeightedSum((("a", 1.0, distillers.FitNet(stage=0)), ("b", 2.0, distillers.FitNet(stage=1))))
  variables = total.init(jax.random.PRNGKey(2), s, t, BATCH)
  assert set(variables) == {"params", "batch_stats"} and set(variables["batch_stats"]) == {"a", "b"}
  _, _, state = total(variables, s, t, BATCH, rng=jax.random.PRNGKey(3), train=True)
  chex.assert_trees_all_equal_shapes(state["batch_stats"], variables["batch_stats"])
  # Train-mode BatchNorm moves its running statistics.
  assert not np.allclose(state["batch_stats"]["a"]["BatchNorm_0"]["mean"],
                         variables["batch_stats"]["a"]["BatchNorm_0"]["mean"])
  assert total.needs_teacher
  assert not distillers.from_config({"ce": {"weight": 1.0}}).needs_teacher


@pytest.mark.parametrize("student_shape,teacher_shape", [
    ((2, 8, 8, 4), (2, 8, 8, 16)),    # channels differ
    ((2, 8, 8, 4), (2, 4, 4, 16)),    # student map twice as large
    ((2, 4, 4, 4), (2, 8, 8, 16)),    # student map half as large
    ((2, 7, 7, 4), (2, 5, 5, 6)),     # larger by 2: valid 3x3 conv
    ((2, 32), (2, 64)),               # embeddings
])
def test_regressor_maps_student_onto_teacher_shape(student_shape, teacher_shape):
  x = jnp.ones(student_shape)
  reg = distillers.Regressor(teacher_shape)
  variables = reg.init(jax.random.PRNGKey(0), x)
  chex.assert_shape(reg.apply(variables, x), teacher_shape)


def test_regressor_rejects_impossible_shapes():
  with pytest.raises(ValueError, match="cannot map"):
    distillers.Regressor((2, 8, 8, 3)).init(jax.random.PRNGKey(0), jnp.ones((2, 3, 3, 4)))


def test_fitnet_gradient_reaches_student_and_regressor_not_teacher():
  s, t = _output(jax.random.PRNGKey(0)), _output(jax.random.PRNGKey(1), channels=(12, 24))
  fitnet = distillers.FitNet(stage=1)
  variables = fitnet.init(jax.random.PRNGKey(2), s, t, BATCH)

  def f(params, student_stage, teacher_stage):
    so = s.replace(stages=(s.stages[0], student_stage))
    to = t.replace(stages=(t.stages[0], teacher_stage))
    return fitnet({**variables, "params": params}, so, to, BATCH, rng=None, train=False)[0]

  g_params, g_student, g_teacher = jax.grad(f, argnums=(0, 1, 2))(variables["params"], s.stages[1], t.stages[1])
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(g_params))
  assert float(jnp.abs(g_student).sum()) > 0
  np.testing.assert_allclose(g_teacher, 0.0)
  with pytest.raises(ValueError, match="stage 5 does not exist"):
    distillers.FitNet(stage=5).init(jax.random.PRNGKey(0), s, t, BATCH)


def test_ab_connector_init_is_the_references_fan_out_normal():
  # bhheo/AB_distillation (models/distillation_module.py) draws each connector conv from
  # normal_(0, sqrt(2 / n)), n = k·k·out_channels: fan-out, untruncated. A wide 1×1 layer (64 → 1024, 65536
  # weights) pins the std to ~0.3% (1/sqrt(2N)), far from fan-in He-normal's sqrt(2/64), 4× larger.
  c_in, c_out = 64, 1024
  s = _output(jax.random.PRNGKey(0), batch=2, channels=(c_in,), sizes=(2,))
  t = _output(jax.random.PRNGKey(1), batch=2, channels=(c_out,), sizes=(2,))
  variables = distillers.make_distiller("ab").init(jax.random.PRNGKey(2), s, t, BATCH)
  kernel = np.asarray(variables["params"]["stage0"]["Conv_0"]["kernel"], np.float64)
  assert kernel.shape == (1, 1, c_in, c_out)
  expected = np.sqrt(2.0 / (1 * 1 * c_out))
  assert abs(kernel.mean()) < 4 * expected / np.sqrt(kernel.size)
  assert kernel.std() == pytest.approx(expected, rel=0.02)
  # Untruncated: 65536 normal draws reach beyond 3.5σ (P(not) ≈ e^-30); JAX's truncated normal stops at ~2.3σ.
  assert np.abs(kernel).max() > 3.5 * expected
  np.testing.assert_allclose(variables["params"]["stage0"]["BatchNorm_0"]["scale"], 1.0)
  np.testing.assert_allclose(variables["params"]["stage0"]["BatchNorm_0"]["bias"], 0.0)
  # A [B, D] response gets a Dense layer with the same rule.
  dense = distillers.ABConnector((2, c_out)).init(jax.random.PRNGKey(3), jnp.ones((2, c_in)))
  assert np.asarray(dense["params"]["Dense_0"]["kernel"]).std() == pytest.approx(expected, rel=0.02)


def test_registry_errors_list_valid_names():
  with pytest.raises(KDJaxError, match=r"Registered distillers: (.*, )?ce, .*fitnet, .*kd"):
    distillers.make_distiller("kdd")
  with pytest.raises(KDJaxError, match="Valid: temperature, reduction"):
    distillers.make_distiller("kd", temprature=4.0)
  with pytest.raises(KDJaxError, match="temperature must be > 0"):
    distillers.make_distiller("kd", temperature=-1.0)
  with pytest.raises(KDJaxError, match="needs a 'weight'"):
    distillers.from_config({"kd": {"temperature": 4.0}})
  with pytest.raises(KDJaxError, match="config.loss is empty"):
    distillers.from_config({})
