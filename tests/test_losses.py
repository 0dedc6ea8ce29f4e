"""Known values, identities and gradients of the pure losses."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import losses


def _np_kd(zs, zt, t):
  """Reference KD computed with NumPy in float64, term by term."""
  def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
  ps, pt = softmax(np.asarray(zs, np.float64) / t), softmax(np.asarray(zt, np.float64) / t)
  return t * t * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), -1))


def test_kd_known_value_by_hand():
  # T = 1, one example: p_s = (1/2, 1/2), p_t = softmax(log 3, 0) = (3/4, 1/4).
  # KL = 3/4 log(3/2) + 1/4 log(1/2).
  zs = jnp.array([[0.0, 0.0]])
  zt = jnp.array([[np.log(3.0), 0.0]])
  expected = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
  np.testing.assert_allclose(losses.kd(zs, zt, temperature=1.0), expected, rtol=1e-6)


def test_kd_matches_numpy_reference_and_t_squared_scaling():
  rng = np.random.default_rng(0)
  zs, zt = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
  for t in (1.0, 2.0, 4.0):
    np.testing.assert_allclose(losses.kd(jnp.asarray(zs), jnp.asarray(zt), temperature=t),
                               _np_kd(zs, zt, t), rtol=1e-5)
  # T² scaling: at T=4 the loss is 16 × the unscaled KL at T=4.
  kl = np.mean(losses.kl_divergence_per_example(jnp.asarray(zs), jnp.asarray(zt), 4.0))
  np.testing.assert_allclose(losses.kd(jnp.asarray(zs), jnp.asarray(zt), temperature=4.0), 16 * kl, rtol=1e-6)


def test_kd_zero_when_equal_and_shift_invariant():
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 10))
  np.testing.assert_allclose(losses.kd(z, z), 0.0, atol=1e-6)
  zt = jax.random.normal(jax.random.PRNGKey(1), (4, 10))
  shift = jax.random.normal(jax.random.PRNGKey(2), (4, 1)) * 5
  np.testing.assert_allclose(losses.kd(z + shift, zt - shift), losses.kd(z, zt), rtol=1e-5)


def test_kd_gradient_is_t_times_prob_difference_over_batch():
  b, c, t = 6, 5, 3.0
  zs = jax.random.normal(jax.random.PRNGKey(3), (b, c))
  zt = jax.random.normal(jax.random.PRNGKey(4), (b, c))
  grad = jax.grad(lambda z: losses.kd(z, zt, temperature=t))(zs)
  expected = t * (jax.nn.softmax(zs / t) - jax.nn.softmax(zt / t)) / b
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
  # The teacher is a constant.
  np.testing.assert_allclose(jax.grad(lambda z: losses.kd(zs, z, temperature=t))(zt), 0.0)


def test_kd_reductions():
  zs = jax.random.normal(jax.random.PRNGKey(5), (4, 10))
  zt = jax.random.normal(jax.random.PRNGKey(6), (4, 10))
  per = losses.kd(zs, zt, reduction="none")
  chex.assert_shape(per, (4,))
  np.testing.assert_allclose(losses.kd(zs, zt), per.mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.kd(zs, zt, reduction="mean"), per.mean() / 10, rtol=1e-6)
  with pytest.raises(ValueError, match="reduction"):
    losses.kd(zs, zt, reduction="sum")
  with pytest.raises(ValueError, match="same shape"):
    losses.kd(zs, zt[:, :5])


def test_cross_entropy_known_values():
  logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]])
  labels = jnp.array([2, 0])
  expected = (np.log(4.0) + (np.log(1 + 3 * np.exp(-10.0)))) / 2
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-5)
  # With smoothing ε the uniform example's loss stays log C (every target distribution sums to 1).
  np.testing.assert_allclose(losses.cross_entropy(logits[:1], labels[:1], label_smoothing=0.3), np.log(4.0),
                             rtol=1e-6)


def test_fitnet_value_zero_and_gradient():
  s = jax.random.normal(jax.random.PRNGKey(7), (2, 4, 4, 3))
  t = jax.random.normal(jax.random.PRNGKey(8), (2, 4, 4, 3))
  np.testing.assert_allclose(losses.fitnet(s, t), np.mean((np.asarray(s) - np.asarray(t)) ** 2), rtol=1e-6)
  np.testing.assert_allclose(losses.fitnet(t, t), 0.0)
  grad = jax.grad(losses.fitnet)(s, t)
  np.testing.assert_allclose(grad, 2 * (s - t) / s.size, rtol=1e-5)
  np.testing.assert_allclose(jax.grad(losses.fitnet, argnums=1)(s, t), 0.0)
  with pytest.raises(ValueError, match="regressor"):
    losses.fitnet(s, t[..., :2])
