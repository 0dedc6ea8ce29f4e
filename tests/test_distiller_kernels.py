"""A distiller's own convolutions (ReviewKD's fusion, regressors, translators) run on the run's kernels.

`Context.kernels` carries the run's `kd_jax.backends.Kernels` (the student's, set by the schemes) and
`conv_of` gives its convolution to the distillers' modules: the same values and gradients as XLA's plain
convolution, and, with oneDNN's kernels, oneDNN custom calls in the compiled program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import numpy_variables, small_config
from kd_jax import backends, distillers
from kd_jax.backends.cpu import conv as kd_conv
from kd_jax.backends.cpu import onednn
from kd_jax.distillers.base import Context, conv_of
from kd_jax.models.outputs import ModelOutput

needs_onednn = pytest.mark.skipif(not onednn.available(), reason=(
    f"kd_jax's oneDNN convolutions are not available here: {onednn.why_unavailable()}"))
ONEDNN = 'custom_call_target="kd_jax_onednn_conv'
BATCH = {"label": jnp.array([0, 1, 2, 3])}


def _output(seed, channels, sizes=(8, 4, 2), classes=10):
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  preacts = tuple(normal(4, s, s, c) for c, s in zip(channels, sizes))
  return ModelOutput(prediction=normal(4, classes), stages=tuple(jax.nn.relu(x) for x in preacts),
                     preact_stages=preacts, embedding=normal(4, channels[-1]))


def _variables(distiller, student, teacher):
  """`distiller.init`'s structure with numpy values (no random initialisers to compile)."""
  return numpy_variables(jax.eval_shape(distiller.init, jax.random.PRNGKey(0), student, teacher, BATCH))


# Every distiller with convolutions of its own, on maps whose sizes its modules accept.
CASES = {
    "review_kd": lambda: distillers.ReviewKD(warmup_epochs=0.0),  # ABF: 1x1, attention 1x1, 3x3
    "fitnet": lambda: distillers.FitNet(stage=1),                  # 3x3 regressor, 16 -> 24 channels
    "fitnet_strided": lambda: distillers.FitNet(stage=0, teacher_stage=1),  # 3x3 stride 2 (8x8 -> 4x4)
    "ab": lambda: distillers.AB(),                                 # 1x1 connectors
    "ft": lambda: distillers.FT(mode="transfer"),                  # paraphraser encoder and translator
    "vid": lambda: distillers.VID(),                               # three 1x1 convs per stage
    "feed": lambda: distillers.FEED(),                             # three 3x3 convs
    "lsfd": lambda: distillers.LSFD(stages=(0, 1)),                # local regressors
}


def test_conv_of_is_lax_without_kernels_and_the_kernels_convolution_with_them():
  assert conv_of(None) is jax.lax.conv_general_dilated
  kernels = backends.Kernels("xla")
  assert conv_of(kernels) == kernels.conv_general_dilated
  assert Context().kernels is None


@needs_onednn
@pytest.mark.parametrize("name", sorted(CASES))
def test_onednn_kernels_give_the_plain_convolutions_values_and_gradients(name):
  distiller = CASES[name]()
  student, teacher = _output(0, (8, 16, 32)), _output(1, (12, 24, 48))
  variables = _variables(distiller, student, teacher)
  kernels = backends.Kernels(kd_conv.resolve_conv_backward("auto", "onednn"))

  def loss(params, s, with_kernels):
    ctx = Context(train=True, kernels=kernels if with_kernels else None)
    value, _, _ = distiller.loss(dict(variables, params=params), s, teacher, BATCH, ctx)
    return value

  grads = {}
  for with_kernels in (False, True):
    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    text = fn.lower(variables["params"], student, with_kernels).compile().as_text()
    assert (ONEDNN in text) == with_kernels  # the distiller's convolutions, and only they, are oneDNN's here
    grads[with_kernels] = fn(variables["params"], student, with_kernels)
  (plain_value, plain_grads), (value, kernel_grads) = grads[False], grads[True]
  np.testing.assert_allclose(value, plain_value, rtol=1e-5)
  # Float32 reassociation, relative to the gradients' scale (a conv bias before BatchNorm has a ~0 gradient).
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(plain_grads))
  for got, want in zip(jax.tree.leaves(kernel_grads), jax.tree.leaves(plain_grads)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * scale)


def test_the_distill_scheme_hands_the_students_kernels_to_the_distillers(digits, monkeypatch):
  from helpers import scheme_steps_on
  from kd_jax.distillers.logit import CrossEntropy
  seen = []
  original = CrossEntropy.loss

  def recording(self, variables, student, teacher, batch, ctx):
    seen.append(ctx.kernels)
    return original(self, variables, student, teacher, batch, ctx)

  monkeypatch.setattr(CrossEntropy, "loss", recording)
  config = small_config(cpu_conv_kernels="xla", max_steps=1)
  scheme_steps_on(jax.devices()[:1], config, digits, count=1)
  assert seen and all(k == backends.kernels_for(config) for k in seen)  # traced with the run's kernels
