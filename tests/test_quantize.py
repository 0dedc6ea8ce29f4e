"""Quantisation-aware training: hand-computed fake-quant and LSQ values and gradients, qparams, the
quantised apply of a small conv net (observers, first/last widths), a QAT student trained on digits with
its integer export, and jit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax.compression.quantize import (SCALE_EPS, QuantConfig, QuantState, dequantize_weights,
                                         export_int_weights, fake_quant, init_quant_state, layer_bits,
                                         lsq_grad_scale, lsq_init_scale, lsq_quant, minmax_activation_qparams,
                                         quant_range, quantize_params, quantized_apply, quantized_model_bytes,
                                         symmetric_weight_qparams)
from kd_jax.errors import KDJaxError

# ------------------------------------------------------------------------------------------------------
# fake_quant: forward values


def test_quant_range_signed_and_unsigned():
  assert quant_range(8, True) == (-128, 127)
  assert quant_range(8, False) == (0, 255)
  assert quant_range(4, True) == (-8, 7)
  assert quant_range(2, True) == (-2, 1)
  assert quant_range(2, False) == (0, 3)
  assert quant_range(16, True) == (-32768, 32767)


@pytest.mark.parametrize("bits, signed, x_codes, expected_codes", [
    # x/scale -> clipped code; scale 0.5, zero point 0.
    (8, True, [-130.0, -128.0, -127.6, 0.0, 126.6, 127.0, 127.4, 127.6, 300.0],
     [-128, -128, -128, 0, 127, 127, 127, 127, 127]),
    (8, False, [-3.0, -0.4, 0.0, 254.6, 255.0, 255.6, 1000.0], [0, 0, 0, 255, 255, 255, 255]),
    (4, True, [-9.0, -8.4, -8.6, 6.6, 7.0, 7.4, 7.6, 20.0], [-8, -8, -8, 7, 7, 7, 7, 7]),
    (4, False, [-1.0, 14.6, 15.0, 15.6], [0, 15, 15, 15]),
    (2, True, [-3.0, -2.4, -2.0, -1.4, 0.4, 0.6, 1.0, 1.6, 5.0], [-2, -2, -2, -1, 0, 1, 1, 1, 1]),
    (2, False, [-1.0, 0.6, 2.4, 3.0, 3.6], [0, 1, 2, 3, 3]),
])
def test_fake_quant_range_edges(bits, signed, x_codes, expected_codes):
  scale = 0.5
  x = jnp.asarray(x_codes, jnp.float32) * scale
  np.testing.assert_array_equal(fake_quant(x, scale, 0, bits=bits, signed=signed),
                                np.asarray(expected_codes, np.float32) * scale)


def test_fake_quant_negative_zero_point_by_hand():
  # Signed 4 bits, zp = -5, scale 0.25: code = round(x/0.25) - 5 in [-8, 7], value (code + 5)·0.25.
  # So representable values are (-3..12)·0.25.
  x = jnp.array([0.0, -0.75, -1.0, -5.0, 3.0, 3.2, 3.25, 10.0], jnp.float32)
  expected = np.array([0.0, -0.75, -0.75, -0.75, 3.0, 3.0, 3.0, 3.0], np.float32)
  np.testing.assert_array_equal(fake_quant(x, 0.25, -5, bits=4), expected)
  # Unsigned 2 bits with zp = -2: codes [0, 3] are the values (2..5)·scale, so 0 itself is not representable
  # and maps to 2·scale: the formula, not a convention, decides.
  x = jnp.array([0.0, 2.0, 4.0, 5.0, 7.0], jnp.float32)
  np.testing.assert_array_equal(fake_quant(x, 1.0, -2, bits=2, signed=False), [2.0, 2.0, 4.0, 5.0, 5.0])
  # Unsigned 8 bits with zp = 10: values (-10..245)·scale.
  x = jnp.array([-12.0, -10.0, 0.0, 245.0, 246.0], jnp.float32)
  np.testing.assert_array_equal(fake_quant(x, 1.0, 10, bits=8, signed=False), [-10.0, -10.0, 0.0, 245.0, 245.0])


def test_fake_quant_rounds_half_to_even():
  x = jnp.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5], jnp.float32)
  out = np.asarray(fake_quant(x, 1.0, 0, bits=8))
  # -0.5 rounds to -0; adding the zero point 0 makes it +0 (IEEE), a zero either way.
  np.testing.assert_array_equal(out, [0.0, 2.0, 2.0, 4.0, 0.0, -2.0, -2.0])
  # Ties at a non-unit scale: x/scale = 0.5, 1.5, 2.5 with scale 0.25 (exact in binary).
  np.testing.assert_array_equal(fake_quant(jnp.array([0.125, 0.375, 0.625]), 0.25, 0, bits=8), [0.0, 0.5, 0.5])
  # A tie with a zero point: round(x/s) happens before adding zp, so 2.5 -> 2, then +3 -> 5, then -3.
  np.testing.assert_array_equal(fake_quant(jnp.array([2.5]), 1.0, 3, bits=8, signed=False), [2.0])


@pytest.mark.parametrize("axis", [0, -1])
def test_fake_quant_per_channel(axis):
  scale = jnp.array([0.5, 0.1, 2.0], jnp.float32)
  zero_point = jnp.array([0, 3, -1], jnp.int32)
  base = np.array([[1.3, 1.3, 1.3, 1.3], [-0.9, 0.0, 0.42, 100.0], [3.0, -300.0, 4.9, 0.0]], np.float32)
  x = base if axis == 0 else base.T  # channel axis of length 3 either first or last
  out = np.asarray(fake_quant(jnp.asarray(x), scale, zero_point, bits=8, axis=axis))
  out = out if axis == 0 else out.T
  expected = np.array([
      [1.5, 1.5, 1.5, 1.5],                        # s=0.5: round(2.6)=3 -> 1.5
      [-0.9, 0.0, 0.4, 12.4],                      # s=0.1, zp=3: 100 -> code 1003 -> 127 -> (127-3)·0.1
      [4.0, -254.0, 4.0, 0.0],                     # s=2, zp=-1: 3/2=1.5 -> 2; -150-1 -> -128 -> -127·2
  ], np.float32)
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_fake_quant_bad_arguments():
  x = jnp.ones((2, 3))
  for bits in (1, 17, 8.0, True):
    with pytest.raises(KDJaxError, match="2 to 16"):
      fake_quant(x, 1.0, 0, bits=bits)
  with pytest.raises(KDJaxError, match="shape"):
    fake_quant(x, jnp.ones(2), 0, bits=8, axis=-1)  # 3 channels on the last axis
  with pytest.raises(KDJaxError, match="per-tensor"):
    fake_quant(x, jnp.ones(3), 0, bits=8)
  with pytest.raises(KDJaxError, match="axis"):
    fake_quant(x, jnp.ones(3), jnp.zeros(3), bits=8, axis=2)


# ------------------------------------------------------------------------------------------------------
# fake_quant: gradient


def test_fake_quant_gradient_is_one_inside_zero_outside():
  # Signed 4 bits, scale 0.1, zp = 2: codes round(x/0.1) + 2 in [-8, 7], i.e. round(x/0.1) in [-10, 5].
  v = np.array([-10.6, -10.4, -10.0, -3.3, 0.0, 4.6, 5.0, 5.4, 5.6, 50.0], np.float32)
  inside = np.array([0, 1, 1, 1, 1, 1, 1, 1, 0, 0], np.float32)
  x = jnp.asarray(v * 0.1)
  scale, zp = jnp.float32(0.1), jnp.float32(2.0)
  gx, gs, gz = jax.grad(lambda x, s, z: jnp.sum(fake_quant(x, s, z, bits=4)), argnums=(0, 1, 2))(x, scale, zp)
  np.testing.assert_array_equal(gx, inside)
  assert float(gs) == 0.0 and float(gz) == 0.0
  # The upstream gradient is passed through unchanged where inside (not just ones).
  w = jnp.arange(1.0, 11.0)
  np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(w * fake_quant(x, scale, zp, bits=4)))(x),
                                np.arange(1.0, 11.0) * inside)


def test_fake_quant_per_channel_gradient_and_zero_scale_gradient():
  scale = jnp.array([1.0, 0.25])
  x = jnp.array([[1.4, 0.3], [1.6, 0.4], [-2.6, -0.6]])  # signed 2 bits: codes -2..1
  gx, gs = jax.grad(lambda x, s: jnp.sum(fake_quant(x, s, jnp.zeros(2), bits=2, axis=1)), argnums=(0, 1))(x, scale)
  # channel 0: codes 1, 2, -3 -> in, out, out; channel 1: codes 1 (1.2), 2 (1.6), -2 (-2.4) -> in, out, in.
  np.testing.assert_array_equal(gx, [[1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
  np.testing.assert_array_equal(gs, [0.0, 0.0])


# ------------------------------------------------------------------------------------------------------
# LSQ


def _np_lsq_grads(x, s, w, qmin, qmax, g, axis=None):
  """The paper's Eq. 3 and 5 in float64 NumPy for the loss sum(w · lsq(x))."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  sb = np.asarray(s, np.float64)
  if axis is not None:
    shape = [1] * x.ndim
    shape[axis] = -1
    sb = sb.reshape(shape)
  v = x / sb
  inside = (v > qmin) & (v < qmax)
  dvds = np.where(inside, np.round(v) - v, np.where(v <= qmin, qmin, qmax))
  gx = w * inside
  if axis is None:
    gs = np.sum(w * dvds) * g
  else:
    gs = np.sum(w * dvds, axis=tuple(i for i in range(x.ndim) if i != axis % x.ndim)) * g
  return gx, gs


def test_lsq_forward_values():
  # Signed 3 bits: codes -4..3; s = 0.25, so x/s = 1.2, -8, 6, 1.5, -1.5, 2.5, 0, -4, -4.8.
  x = jnp.array([0.3, -2.0, 1.5, 0.375, -0.375, 0.625, 0.0, -1.0, -1.2], jnp.float32)
  expected = np.array([1, -4, 3, 2, -2, 2, 0, -4, -4], np.float32) * 0.25  # ties to even
  np.testing.assert_array_equal(lsq_quant(x, 0.25, bits=3), expected)
  # Unsigned 2 bits: codes 0..3.
  np.testing.assert_allclose(lsq_quant(jnp.array([-1.0, 0.6, 5.0]), 0.5, bits=2, signed=False),
                             [0.0, 0.5, 1.5], rtol=1e-6)


def test_lsq_gradients_match_eq3_by_hand():
  # Signed 3 bits (qmin -4, qmax 3), s = 0.3: v = 0.35/0.3 = 1.1667 inside -> round(v) - v = -0.1667;
  # v = -2/0.3 = -6.67 below -> qmin = -4; v = 1.5/0.3 = 5 above -> qmax = 3.
  x = jnp.array([0.35, -2.0, 1.5], jnp.float32)
  g = 0.5
  gx, gs = jax.grad(lambda x, s: jnp.sum(lsq_quant(x, s, bits=3, grad_scale=g)), argnums=(0, 1))(x, 0.3)
  np.testing.assert_array_equal(gx, [1.0, 0.0, 0.0])
  np.testing.assert_allclose(gs, g * ((1.0 - 0.35 / 0.3) - 4.0 + 3.0), rtol=1e-5)
  # Exactly at the edge v = qmax: the forward value is qmax·s on both sides, so ∂/∂s = qmax, ∂/∂x = 0
  # (the paper's strict inside).
  gx, gs = jax.grad(lambda x, s: jnp.sum(lsq_quant(x, s, bits=3, grad_scale=1.0)), argnums=(0, 1))(
      jnp.array([1.5]), 0.5)
  assert float(gx[0]) == 0.0 and float(gs) == 3.0


@pytest.mark.parametrize("signed, axis", [(True, None), (False, None), (True, -1), (True, 0)])
def test_lsq_gradients_match_numpy_with_default_grad_scale(signed, axis):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 5)).astype(np.float32) * 2.0
  w = rng.normal(size=(6, 5)).astype(np.float32)
  bits = 3
  qmin, qmax = quant_range(bits, signed)
  s = np.float32(0.4) if axis is None else np.linspace(0.2, 0.6, x.shape[axis]).astype(np.float32)
  gx, gs = jax.grad(lambda x, s: jnp.sum(w * lsq_quant(x, s, bits=bits, signed=signed, axis=axis)),
                    argnums=(0, 1))(jnp.asarray(x), jnp.asarray(s))
  n = x.size if axis is None else x.size // x.shape[axis]
  g = 1.0 / np.sqrt(n * qmax)
  assert lsq_grad_scale(x.shape, bits, signed, axis) == pytest.approx(g, rel=1e-12)
  egx, egs = _np_lsq_grads(x, s, w, qmin, qmax, g, axis)
  np.testing.assert_array_equal(gx, egx)
  np.testing.assert_allclose(gs, egs, rtol=1e-5, atol=1e-7)
  assert np.shape(gs) == np.shape(s)


def test_lsq_init_scale_is_two_mean_abs_over_sqrt_qmax():
  x = np.array([[1.0, -3.0], [2.0, 0.0], [-3.0, 1.0]], np.float32)
  # signed 4 bits: qmax = 7; per tensor mean|x| = 10/6.
  np.testing.assert_allclose(lsq_init_scale(jnp.asarray(x), 4), 2 * (10 / 6) / np.sqrt(7), rtol=1e-6)
  # unsigned 2 bits: qmax = 3; per channel (last axis) means 2 and 4/3.
  np.testing.assert_allclose(lsq_init_scale(jnp.asarray(x), 2, signed=False, axis=-1),
                             [2 * 2 / np.sqrt(3), 2 * (4 / 3) / np.sqrt(3)], rtol=1e-6)
  assert float(lsq_init_scale(jnp.zeros(4), 8)) == pytest.approx(SCALE_EPS)


# ------------------------------------------------------------------------------------------------------
# Quantisation parameters


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_symmetric_weight_qparams_put_max_abs_at_qmax(bits):
  rng = np.random.default_rng(1)
  kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
  kernel[..., 3] = 0.0  # an all-zero channel gets the eps scale, not a division by zero
  scale, zp = symmetric_weight_qparams(jnp.asarray(kernel), bits)
  qmax = 2 ** (bits - 1) - 1
  amax = np.abs(kernel).reshape(-1, 4).max(0)
  np.testing.assert_allclose(scale[:3], amax[:3] / qmax, rtol=1e-7)
  assert float(scale[3]) == pytest.approx(SCALE_EPS)
  np.testing.assert_array_equal(zp, np.zeros(4, np.int32))
  assert zp.dtype == jnp.int32
  # The largest |w| of each channel maps to the code ±qmax and comes back as ±qmax·scale = ±max|w|.
  flat = kernel.reshape(-1, 4)
  idx = np.abs(flat).argmax(0)[:3]
  wmax = flat[idx, np.arange(3)]
  codes = np.round(wmax / np.asarray(scale[:3]))
  np.testing.assert_array_equal(np.abs(codes), [qmax] * 3)
  fq = np.asarray(fake_quant(jnp.asarray(kernel), scale, zp, bits=bits, axis=-1)).reshape(-1, 4)
  np.testing.assert_allclose(fq[idx, np.arange(3)], wmax, rtol=1e-6)
  assert np.all(fq[:, 3] == 0.0)
  with pytest.raises(KDJaxError, match="ndim"):
    symmetric_weight_qparams(jnp.ones(3), 8)


def test_minmax_activation_qparams_by_hand():
  # [-1, 3] at 8 bits: scale 4/255, zp = round(255/4) = round(63.75) = 64.
  scale, zp = minmax_activation_qparams(-1.0, 3.0, 8)
  np.testing.assert_allclose(scale, 4.0 / 255, rtol=1e-7)
  assert int(zp) == 64 and zp.dtype == jnp.int32
  # The range is extended to contain 0: [0.5, 2] -> [0, 2] (zp 0); [-2, -0.5] -> [-2, 0] (zp 255).
  scale, zp = minmax_activation_qparams(0.5, 2.0, 8)
  np.testing.assert_allclose(scale, 2.0 / 255, rtol=1e-7)
  assert int(zp) == 0
  scale, zp = minmax_activation_qparams(-2.0, -0.5, 4)
  np.testing.assert_allclose(scale, 2.0 / 15, rtol=1e-7)
  assert int(zp) == 15
  # A constant zero range gets the eps scale.
  scale, zp = minmax_activation_qparams(0.0, 0.0, 8)
  assert float(scale) == pytest.approx(SCALE_EPS) and int(zp) == 0


@pytest.mark.parametrize("lo, hi, bits", [(-1.0, 3.0, 8), (-0.37, 5.1, 4), (-2.2, 0.9, 2), (0.0, 1.0, 2)])
def test_minmax_activation_qparams_cover_range_with_exact_zero(lo, hi, bits):
  scale, zp = minmax_activation_qparams(lo, hi, bits)
  x = jnp.array([lo, 0.0, hi], jnp.float32)
  out = np.asarray(fake_quant(x, scale, zp, bits=bits, signed=False))
  assert out[1] == 0.0  # 0 is a code: zp
  # Both ends of [lo, hi] are reproduced to within half a step (they are rounded, not clipped away).
  np.testing.assert_array_less(np.abs(out[[0, 2]] - np.array([lo, hi])), float(scale) / 2 + 1e-6)


def test_quant_config_validation():
  QuantConfig()
  QuantConfig(weight_bits=2, activation_bits=4, activation_range="lsq", weight_range="lsq",
              observer_momentum=0.0, first_last_bits=None)
  bad = [dict(weight_bits=1), dict(weight_bits=32), dict(activation_bits=8.0), dict(weight_bits=True),
         dict(first_last_bits=0), dict(activation_range="ema"), dict(weight_range="max"),
         dict(observer_momentum=1.5), dict(observer_momentum=-0.1), dict(observer_momentum="0.9")]
  messages = ["weight_bits", "weight_bits", "activation_bits", "weight_bits", "first_last_bits",
              "activation_range", "weight_range", "observer_momentum", "observer_momentum", "observer_momentum"]
  for kwargs, message in zip(bad, messages):
    with pytest.raises(KDJaxError, match=message):
      QuantConfig(**kwargs)


# ------------------------------------------------------------------------------------------------------
# quantized_apply on a small conv net


class RecordingConv(nn.Conv):
  """A Conv that keeps the input it receives (after the interceptor has quantised it), for tests only.

  It calls `super().__call__`, which Flax intercepts again: the quantiser must act once, not twice."""

  seen = []

  def __call__(self, inputs):
    RecordingConv.seen.append(inputs)
    return super().__call__(inputs)


class TinyNet(nn.Module):
  """conv - BN - ReLU - conv(stride 2) - ReLU - flatten - Dense: 8x8x1 in, 10 out."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = RecordingConv(6, (3, 3), name="conv_a")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x))
    x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv_b")(x))
    return nn.Dense(10, name="head")(x.reshape((x.shape[0], -1)))


class TinyMLP(nn.Module):
  """Flatten - Dense - BN - ReLU - Dense: few operations, so the un-jitted step stays quick."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(16, name="fc1")(x.reshape((x.shape[0], -1)))
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x))
    return nn.Dense(10, name="head")(x)


def _init(model, x, seed):
  """Variables drawn with NumPy from the shapes `model.init` would give (`eval_shape` traces, never compiles:
  a jitted init alone took ~5 s of CPU here). Kernels N(0, 1/fan_in), biases 0, BatchNorm at identity."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1])), jnp.float32)
    return jnp.ones(leaf.shape, jnp.float32) if name in ("scale", "var") else jnp.zeros(leaf.shape, jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init, jax.random.key(0), x))


@pytest.fixture(scope="module")
def tiny():
  from sklearn.datasets import load_digits
  d = load_digits()
  images = jnp.asarray(d.images[..., None] / 8.0 - 1.0, jnp.float32)  # [-1, 1]
  labels = jnp.asarray(d.target, jnp.int32)
  model = TinyNet()
  variables = _init(model, images[:2], 0)
  return model, variables, images, labels


@pytest.mark.parametrize("ranges, tol", [("minmax", 1e-3), ("lsq", 2e-2)])
def test_quantized_apply_16_bits_close_2_bits_far(tiny, ranges, tol):
  model, variables, images, _ = tiny
  x = images[:32]
  ref = model.apply(variables, x)
  # Tolerance relative to max|logit|: a 16-bit minmax step is range/65535; LSQ's init step at 16 bits is
  # 2·mean|x|/181 (its init targets low widths), hence the looser bound.
  for bits, close in ((16, True), (2, False)):
    config = QuantConfig(weight_bits=bits, activation_bits=bits, activation_range=ranges, weight_range=ranges,
                         first_last_bits=None)
    qstate, qparams = init_quant_state(model, variables, x, config)
    out = quantized_apply(model, variables, x, qstate, qparams, config, train=False)[0]
    err = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
    assert (err < tol) if close else (err > 0.05), (bits, err)


def test_init_discovers_layers_in_call_order(tiny):
  model, variables, images, _ = tiny
  qstate, qparams = init_quant_state(model, variables, images[:32], QuantConfig())
  assert qstate.layers == ("conv_a", "conv_b", "head")
  assert qstate.first == "conv_a" and qstate.last == "head"
  assert qparams == {"weights": {}, "activations": {}}
  obs = qstate.observers["conv_a"]
  assert float(obs["lo"]) == float(images[:32].min()) and float(obs["hi"]) == float(images[:32].max())
  assert bool(obs["initialized"])
  qstate, qparams = init_quant_state(model, variables, images[:32],
                                     QuantConfig(weight_range="lsq", activation_range="lsq", weight_bits=4))
  assert qstate.observers == {}
  assert set(qparams["weights"]) == set(qparams["activations"]) == {"conv_a", "conv_b", "head"}
  np.testing.assert_allclose(qparams["weights"]["conv_b"],
                             lsq_init_scale(variables["params"]["conv_b"]["kernel"], 4, axis=-1), rtol=1e-6)
  np.testing.assert_allclose(qparams["activations"]["conv_a"], lsq_init_scale(images[:32], 8), rtol=1e-6)


def test_eval_mode_leaves_state_and_train_mode_moves_ema_by_formula(tiny):
  model, variables, images, _ = tiny
  m = 0.8
  config = QuantConfig(weight_bits=4, activation_bits=4, observer_momentum=m)
  x1, x2 = images[:32], images[32:64] * 1.5 + 0.25
  qstate, qparams = init_quant_state(model, variables, x1, config)
  _, q_eval, bs = quantized_apply(model, variables, x2, qstate, qparams, config, train=False)
  assert bs is None
  assert q_eval is qstate or jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), q_eval, qstate))
  RecordingConv.seen.clear()
  _, q_train, bs = quantized_apply(model, variables, x2, qstate, qparams, config, train=True)
  assert set(bs) == {"bn"}
  # conv_a reads the image itself, so its batch min/max are those of x2: new = m·old + (1 − m)·batch.
  obs = q_train.observers["conv_a"]
  np.testing.assert_allclose(obs["lo"], m * float(x1.min()) + (1 - m) * float(x2.min()), rtol=1e-6)
  np.testing.assert_allclose(obs["hi"], m * float(x1.max()) + (1 - m) * float(x2.max()), rtol=1e-6)
  # The updated range quantised this batch (first/last layers at 8 bits): conv_a received exactly
  # fake_quant(x2) with the new range's qparams, once.
  assert len(RecordingConv.seen) == 1
  scale, zp = minmax_activation_qparams(obs["lo"], obs["hi"], 8)
  np.testing.assert_array_equal(RecordingConv.seen[0], fake_quant(x2, scale, zp, bits=8, signed=False))
  # Every observed layer moved; a layer never initialised takes the batch range as is.
  for path in ("conv_b", "head"):
    assert float(q_train.observers[path]["hi"]) != float(qstate.observers[path]["hi"])
  fresh = qstate.replace(observers={**qstate.observers, "conv_a": {
      "lo": jnp.float32(0.0), "hi": jnp.float32(0.0), "initialized": jnp.asarray(False)}})
  _, q_train, _ = quantized_apply(model, variables, x2, fresh, qparams, config, train=True)
  assert float(q_train.observers["conv_a"]["lo"]) == float(x2.min())
  assert bool(q_train.observers["conv_a"]["initialized"])


def test_first_and_last_layers_keep_first_last_bits(tiny):
  model, variables, images, _ = tiny
  config = QuantConfig(weight_bits=2, activation_bits=2, first_last_bits=8)
  qstate, qparams = init_quant_state(model, variables, images[:32], config)
  assert layer_bits("conv_a", config, qstate) == (8, 8)
  assert layer_bits("conv_b", config, qstate) == (2, 2)
  assert layer_bits("head", config, qstate) == (8, 8)
  qp = quantize_params(variables["params"], qparams, config, qstate=qstate)

  def max_distinct_per_channel(kernel):
    k = np.asarray(kernel).reshape(-1, kernel.shape[-1])
    return max(len(np.unique(k[:, c])) for c in range(k.shape[1]))

  assert max_distinct_per_channel(qp["conv_b"]["kernel"]) <= 2 ** 2
  assert 2 ** 2 < max_distinct_per_channel(qp["conv_a"]["kernel"]) <= 2 ** 8  # 54 weights per channel
  assert 2 ** 2 < max_distinct_per_channel(qp["head"]["kernel"]) <= 2 ** 8
  np.testing.assert_array_equal(qp["bn"]["scale"], variables["params"]["bn"]["scale"])  # not a kernel
  # The first layer's input (the image) is quantised at 8 bits, not 2.
  RecordingConv.seen.clear()
  quantized_apply(model, variables, images[:32], qstate, qparams, config, train=False)
  assert 2 ** 2 < len(np.unique(np.asarray(RecordingConv.seen[0]))) <= 2 ** 8
  # With first_last_bits=None every layer is at 2 bits.
  flat = QuantConfig(weight_bits=2, activation_bits=2, first_last_bits=None)
  qp = quantize_params(variables["params"], {}, flat, qstate=qstate)
  assert max_distinct_per_channel(qp["conv_a"]["kernel"]) <= 4
  RecordingConv.seen.clear()
  quantized_apply(model, variables, images[:32], qstate, qparams, flat, train=False)
  assert len(np.unique(np.asarray(RecordingConv.seen[0]))) <= 4
  with pytest.raises(KDJaxError, match="qstate"):
    quantize_params(variables["params"], qparams, config)


def test_unknown_layer_is_an_error(tiny):
  model, variables, images, _ = tiny
  config = QuantConfig()
  qstate, qparams = init_quant_state(model, variables, images[:32], config)
  other = QuantState(observers={"conv_a": qstate.observers["conv_a"]}, layers=("conv_a",), first="conv_a")
  with pytest.raises(KDJaxError, match="'conv_b' is not in the quantiser state"):
    quantized_apply(model, variables, images[:32], other, qparams, config, train=False)
  lsq = QuantConfig(activation_range="lsq")
  with pytest.raises(KDJaxError, match="'conv_a' is not in the quantiser state"):
    quantized_apply(model, variables, images[:32], qstate, qparams, lsq, train=False)  # no learned scales


# ------------------------------------------------------------------------------------------------------
# A QAT student on digits, its integer export, and jit


def _train_step(model, config, tx):
  def step(params, batch_stats, opt_state, qstate, qparams, x, y):
    def loss_fn(trainable):
      p, qp = trainable
      logits, new_qstate, new_bs = quantized_apply(model, {"params": p, "batch_stats": batch_stats}, x, qstate,
                                                   qp, config, train=True)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, (new_qstate, new_bs)
    (loss, (qstate, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)((params, qparams))
    updates, opt_state = tx.update(grads, opt_state, (params, qparams))
    params, qparams = optax.apply_updates((params, qparams), updates)
    return params, batch_stats, opt_state, qstate, qparams, loss
  return step


@pytest.mark.parametrize("ranges", ["minmax", "lsq"])
def test_qat_int4_student_trains_and_exported_weights_reproduce_outputs(tiny, ranges):
  model, variables, images, labels = tiny
  config = QuantConfig(weight_bits=4, activation_bits=4, activation_range=ranges, weight_range=ranges,
                       first_last_bits=None)
  x, y = images[:256], labels[:256]
  qstate, qparams = init_quant_state(model, variables, x, config)
  initial_qparams = qparams
  tx = optax.sgd(0.1, momentum=0.9)
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init((params, qparams))
  step = jax.jit(_train_step(model, config, tx))
  losses = []
  for _ in range(30):
    params, batch_stats, opt_state, qstate, qparams, loss = step(params, batch_stats, opt_state, qstate, qparams,
                                                                  x, y)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  # Measured over init seeds 0-2: the last losses are 0.2% (minmax) to 6% (lsq) of the first ones.
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
  if ranges == "lsq":  # the step sizes were trained
    assert float(qparams["activations"]["conv_b"]) != float(initial_qparams["activations"]["conv_b"])

  trained = {"params": params, "batch_stats": batch_stats}
  eval_out = quantized_apply(model, trained, x[:32], qstate, qparams, config, train=False)[0]
  exported = export_int_weights(params, qparams, config, qstate=qstate)
  assert set(exported) == {"conv_a", "conv_b", "head"}
  for path, entry in exported.items():
    assert entry["q"].dtype == jnp.int8 and entry["bits"] == 4
    assert int(entry["q"].min()) >= -8 and int(entry["q"].max()) <= 7
    assert entry["scale"].shape == entry["zero_point"].shape == (params[path]["kernel"].shape[-1],)
  rebuilt = dequantize_weights(exported, params)
  fq = quantize_params(params, qparams, config, qstate=qstate)
  for path in exported:  # bit for bit the fake-quantised kernels
    np.testing.assert_array_equal(rebuilt[path]["kernel"], fq[path]["kernel"])
  np.testing.assert_array_equal(rebuilt["head"]["bias"], params["head"]["bias"])
  out = quantized_apply(model, {"params": rebuilt, "batch_stats": batch_stats}, x[:32], qstate, qparams, config,
                        train=False, quantize_weights=False)[0]
  np.testing.assert_allclose(out, eval_out, rtol=1e-6, atol=1e-6)


def test_export_errors_and_model_bytes(tiny):
  model, variables, images, _ = tiny
  params = variables["params"]
  config = QuantConfig(weight_bits=4, activation_bits=8, first_last_bits=8)
  qstate, qparams = init_quant_state(model, variables, images[:32], config)
  with pytest.raises(KDJaxError, match="qstate"):
    export_int_weights(params, qparams, config)
  exported = export_int_weights(params, qparams, config, qstate=qstate)
  assert exported["conv_a"]["bits"] == 8 and exported["conv_b"]["bits"] == 4
  bad = {"conv_x": exported["conv_a"]}
  with pytest.raises(KDJaxError, match="not in the params"):
    dequantize_weights(bad, params)
  with pytest.raises(KDJaxError, match="shape"):
    dequantize_weights({"conv_b": exported["conv_a"]}, params)
  # conv_a 3·3·1·6 = 54 weights at 8 bits + 6 scales; conv_b 3·3·6·8 = 432 at 4 bits + 8 scales;
  # head 128·10 = 1280 at 8 bits + 10 scales; float32: conv biases 6 + 8, bn scale/bias 6 + 6, head bias 10.
  expected = 54 + 4 * 6 + 432 // 2 + 4 * 8 + 1280 + 4 * 10 + 4 * (6 + 8 + 6 + 6 + 10)
  assert quantized_model_bytes(params, config, qstate=qstate) == expected
  # Odd sizes round up to whole bytes: 3 bits × 54 weights = 162 bits = 20.25 -> 21 bytes.
  odd = QuantConfig(weight_bits=3, first_last_bits=None)
  assert quantized_model_bytes({"c": {"kernel": jnp.zeros((3, 3, 1, 6))}}, odd) == 21 + 4 * 6


def test_jit_train_step_matches_eager(tiny):
  _, _, images, labels = tiny
  model = TinyMLP()
  variables = _init(model, images[:2], 1)
  config = QuantConfig(weight_bits=8, activation_bits=8, activation_range="minmax", weight_range="lsq")
  x, y = images[:32], labels[:32]
  qstate, qparams = init_quant_state(model, variables, x, config)
  tx = optax.sgd(0.05)
  args = (variables["params"], variables["batch_stats"], tx.init((variables["params"], qparams)), qstate,
          qparams, x, y)
  step = _train_step(model, config, tx)
  eager = step(*args)
  jitted = jax.jit(step)(*args)
  assert jax.tree.structure(eager) == jax.tree.structure(jitted)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
