"""Cheap convolutions (Moonshine, arXiv:1711.02613) as model options of the CIFAR ResNet and the WRN:
parameter counts by hand, the substitute block against a hand-written lax computation, g = 1 shapes,
training, and bad options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax.errors import KDJaxError
from kd_jax.models import create_model, param_count
from kd_jax.models.resnet_cifar import GroupedPointwiseConv, conv_groups

import helpers


def _abstract(model, shape=(1, 8, 8, 3), **kwargs):
  kwargs = {"train": False} if not kwargs and not isinstance(model, GroupedPointwiseConv) else kwargs
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), **kwargs))


def _substitute(c_in: int, c_out: int, groups) -> int:
  """Parameters replacing one 3x3 conv C_in -> C_out: the conv itself (groups None), or the grouped 3x3
  (C_in -> C_in, g groups; 0 = depthwise), its BN's scale and bias, and the 1x1 (C_in -> C_out)."""
  if groups is None:
    return 9 * c_in * c_out
  g = c_in if groups == 0 else groups
  return 9 * (c_in // g) * c_in + 2 * c_in + c_in * c_out


CONVS = {"standard": None, "dw_sep": 0, "g1": 1, "g2": 2, "g4": 4}


@pytest.mark.parametrize("conv", list(CONVS))
def test_param_counts_by_hand(conv):
  g = CONVS[conv]
  assert conv_groups(conv) == g
  sub = lambda c_in, c_out: _substitute(c_in, c_out, g)
  # ResNet-8 (stem 16; stages 16, 32, 64; one BasicBlock each), 10 classes.
  resnet8 = (9 * 3 * 16 + 2 * 16                                          # stem conv (always full) + bn1
             + sub(16, 16) + 2 * 16 + sub(16, 16) + 2 * 16                # layer1_0: identity shortcut
             + sub(16, 32) + 2 * 32 + sub(32, 32) + 2 * 32 + 16 * 32 + 2 * 32   # layer2_0 + 1x1/BN shortcut
             + sub(32, 64) + 2 * 64 + sub(64, 64) + 2 * 64 + 32 * 64 + 2 * 64   # layer3_0
             + 64 * 10 + 10)                                              # fc
  assert param_count(_abstract(create_model("resnet8", 10, conv=conv))["params"]) == resnet8
  # WRN-10-2 (stem 16; stages 32, 64, 128; one pre-activation block each), 10 classes.
  wrn_10_2 = (9 * 3 * 16                                                  # stem conv (always full)
              + 2 * 16 + sub(16, 32) + 2 * 32 + sub(32, 32) + 16 * 32     # block1: bn1, conv1, bn2, conv2, 1x1
              + 2 * 32 + sub(32, 64) + 2 * 64 + sub(64, 64) + 32 * 64
              + 2 * 64 + sub(64, 128) + 2 * 128 + sub(128, 128) + 64 * 128
              + 2 * 128 + 128 * 10 + 10)                                  # final bn, fc
  assert param_count(_abstract(create_model("wrn", 10, depth=10, widen_factor=2, conv=conv))["params"]) == wrn_10_2


def test_defaults_keep_the_reference_tree_and_g1_keeps_the_shapes():
  x = jnp.zeros((2, 8, 8, 3))
  for name, kwargs in (("resnet8", {}), ("wrn", dict(depth=10, widen_factor=1))):
    reference = _abstract(create_model(name, 10, **kwargs))
    standard = _abstract(create_model(name, 10, conv="standard", **kwargs))
    assert jax.tree.structure(standard) == jax.tree.structure(reference)
    block = reference["params"]["layer1_0" if name == "resnet8" else "block1_layer0"]
    assert block["conv1"] == {"kernel": block["conv1"]["kernel"]}                   # a plain conv
    full, g1 = create_model(name, 10, **kwargs), create_model(name, 10, conv="g1", **kwargs)
    out_full = jax.eval_shape(lambda: full.apply(full.init(jax.random.key(0), x, train=False), x, train=False))
    out_g1 = jax.eval_shape(lambda: g1.apply(g1.init(jax.random.key(0), x, train=False), x, train=False))
    assert jax.tree.map(lambda a: a.shape, out_g1) == jax.tree.map(lambda a: a.shape, out_full)
    g1_block = _abstract(g1)["params"]["layer1_0" if name == "resnet8" else "block1_layer0"]["conv1"]
    assert set(g1_block) == {"conv_grouped", "bn", "conv_pointwise"}


def _init(model, x):
  """Variables drawn in numpy (an eager `model.init` compiles one RNG kernel per parameter shape)."""
  return jax.tree.map(jnp.asarray, helpers.numpy_variables(_abstract(model, x.shape)))


def _manual(x, w_grouped, groups, stride, scale, bias, mean, var, w_pointwise):
  y = jax.lax.conv_general_dilated(x, w_grouped, (stride, stride), ((1, 1), (1, 1)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
                                   precision=jax.lax.Precision.HIGHEST)
  y = (y - mean) / jnp.sqrt(var + 1e-5) * scale + bias
  return jnp.einsum("bhwc,cd->bhwd", jax.nn.relu(y), w_pointwise[0, 0], precision=jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("groups,stride", [(0, 2), (2, 1)])
def test_substitute_block_equals_grouped_lax_conv_then_pointwise(groups, stride):
  rng = np.random.default_rng(groups)
  c_in, c_out = 6, 10
  x = jnp.asarray(rng.normal(size=(2, 7, 7, c_in)), jnp.float32)
  module = GroupedPointwiseConv(c_out, stride, groups, train=False)
  g = c_in if groups == 0 else groups
  params = {"conv_grouped": {"kernel": jnp.asarray(rng.normal(size=(3, 3, c_in // g, c_in)), jnp.float32)},
            "bn": {"scale": jnp.asarray(rng.uniform(0.5, 1.5, c_in), jnp.float32),
                   "bias": jnp.asarray(rng.normal(size=c_in), jnp.float32)},
            "conv_pointwise": {"kernel": jnp.asarray(rng.normal(size=(1, 1, c_in, c_out)), jnp.float32)}}
  stats = {"bn": {"mean": jnp.asarray(rng.normal(size=c_in), jnp.float32),
                  "var": jnp.asarray(rng.uniform(0.5, 2.0, c_in), jnp.float32)}}
  shapes = jax.tree.map(jnp.shape, _abstract(module, x.shape)["params"])
  assert shapes == jax.tree.map(jnp.shape, params)
  w_g, w_p = params["conv_grouped"]["kernel"], params["conv_pointwise"]["kernel"]
  bn = params["bn"]
  out = module.apply({"params": params, "batch_stats": stats}, x)
  expected = _manual(x, w_g, g, stride, bn["scale"], bn["bias"], stats["bn"]["mean"], stats["bn"]["var"], w_p)
  assert out.shape == (2, (7 - 1) // stride + 1, (7 - 1) // stride + 1, c_out)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  # Train mode: the BN uses the batch's biased statistics of the grouped conv's output.
  train = GroupedPointwiseConv(c_out, stride, groups, train=True)
  out, _ = train.apply({"params": params, "batch_stats": stats}, x, mutable=["batch_stats"])
  y = jax.lax.conv_general_dilated(x, w_g, (stride, stride), ((1, 1), (1, 1)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=g,
                                   precision=jax.lax.Precision.HIGHEST)
  expected = _manual(x, w_g, g, stride, bn["scale"], bn["bias"], y.mean((0, 1, 2)), y.var((0, 1, 2)), w_p)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


# Each option once, each family once (a train step takes seconds to compile on 2 cores).
@pytest.mark.parametrize("name,kwargs", [
    ("resnet8", dict(conv="dw_sep")),
    ("wrn", dict(depth=10, widen_factor=1, conv="g2")),
])
def test_tiny_cheap_models_train(name, kwargs):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 8, 8, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 16))
  model = create_model(name, 10, **kwargs)
  variables = _init(model, x)
  tx = optax.adam(3e-3)
  opt_state = tx.init(variables["params"])

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(p):
      out, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(out.prediction, y).mean(), updates["batch_stats"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  params, batch_stats = variables["params"], variables["batch_stats"]
  losses = []
  for _ in range(6):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_bad_cheap_conv_options():
  with pytest.raises(KDJaxError, match="dw_sep"):
    create_model("resnet8", 10, conv="depthwise")
  with pytest.raises(KDJaxError, match="dw_sep"):
    create_model("wrn_16_2", 10, conv="g0")
  with pytest.raises(KDJaxError, match="not both"):
    create_model("wrn", 10, depth=10, widen_factor=1, kernel="1x3", conv="dw_sep")
  with pytest.raises(KDJaxError, match="not both"):
    create_model("wrn_40_4_1x3", 10, conv="g2")
  with pytest.raises(KDJaxError, match="divisible"):                    # 16 channels, 3 groups
    _abstract(create_model("resnet8", 10, conv="g3"))
