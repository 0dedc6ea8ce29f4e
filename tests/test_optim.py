"""Schedules in epochs and the PyTorch-equivalent SGD update."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax.config import base_config
from kd_jax.train import optim


def _optim(**kw):
  c = base_config().optim
  for k, v in kw.items():
    c[k] = v
  return c


def test_multistep_decays_at_milestone_epochs():
  f = optim.learning_rate_schedule(_optim(lr=0.1, milestones=(2, 3), gamma=0.1), steps_per_epoch=10,
                                   total_steps=50)
  np.testing.assert_allclose([f(s) for s in (0, 19, 20, 29, 30, 49)], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001],
                             rtol=1e-6)


def test_warmup_then_multistep_and_cosine():
  f = optim.learning_rate_schedule(_optim(lr=0.1, milestones=(3,), warmup_epochs=1), 10, 50)
  np.testing.assert_allclose([f(0), f(5), f(10), f(29), f(30)], [0.0, 0.05, 0.1, 0.1, 0.01], rtol=1e-6)
  g = optim.learning_rate_schedule(_optim(lr=0.1, schedule="cosine", warmup_epochs=1), 10, 50)
  np.testing.assert_allclose([g(5), g(10), g(30), g(50)], [0.05, 0.1, 0.05, 0.0], rtol=1e-5, atol=1e-7)
  h = optim.learning_rate_schedule(_optim(lr=0.1, schedule="cosine"), 10, 40)
  np.testing.assert_allclose([h(0), h(20), h(40)], [0.1, 0.05, 0.0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_torch_semantics(nesterov):
  """torch.optim.SGD: g += wd·θ; buf = μ·buf + g; step = g + μ·buf if nesterov else buf; θ -= lr·step."""
  lr, mu, wd = 0.1, 0.9, 5e-4
  tx = optim.make_optimizer(_optim(lr=lr, momentum=mu, weight_decay=wd, nesterov=nesterov),
                            optax.constant_schedule(lr))
  theta = jnp.array([1.0, -2.0])
  grads = [jnp.array([0.5, 0.25]), jnp.array([-1.0, 2.0]), jnp.array([0.1, 0.1])]
  state = tx.init(theta)
  ref, buf = np.array([1.0, -2.0]), np.zeros(2)
  for g in grads:
    updates, state = tx.update(g, state, theta)
    theta = optax.apply_updates(theta, updates)
    d = np.asarray(g) + wd * ref
    buf = mu * buf + d
    ref = ref - lr * (d + mu * buf if nesterov else buf)
  np.testing.assert_allclose(theta, ref, rtol=1e-6)
