"""The README's distiller example runs and trains through the real interface (docs that cannot rot)."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.models.outputs import ModelOutput

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _example():
  blocks = re.findall(r"```python\n(.*?)```", open(README).read(), flags=re.S)
  assert blocks, "README lost its distiller example"
  namespace = {}
  exec(blocks[0], namespace)  # noqa: S102 - our own README
  return namespace


def _out(key, width):
  k1, k2 = jax.random.split(key)
  emb = jax.random.normal(k1, (4, width))
  return ModelOutput(prediction=jax.random.normal(k2, (4, 10)), stages=(emb,), preact_stages=(emb,), embedding=emb)


def test_readme_distiller_example():
  ns = _example()
  objective = ns["objective"]
  s, t = _out(jax.random.PRNGKey(0), 8), _out(jax.random.PRNGKey(1), 16)
  batch = {"label": jnp.arange(4)}
  variables = objective.init(jax.random.PRNGKey(2), s, t, batch)
  assert variables["params"]["emb"]["kernel"].shape == (8, 16)
  loss, metrics, _ = objective(variables, s, t, batch, rng=jax.random.PRNGKey(3), train=True)
  w = variables["params"]["emb"]
  expected = np.mean(np.sum((s.embedding @ w["kernel"] + w["bias"] - t.embedding) ** 2, -1))
  np.testing.assert_allclose(metrics["emb/loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.1 * metrics["ce/loss"] + 0.9 * metrics["kd/loss"] + expected, rtol=1e-5)
