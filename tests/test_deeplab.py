"""Deformable convolution v2 (kd_jax.models.deformable) and the DeepLabv3+ segmentation models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.test_util import check_grads

from kd_jax import data as kd_data
from kd_jax import models
from kd_jax.errors import KDJaxError
from kd_jax.models.deformable import DeformableConv2D, deform_conv2d
from kd_jax.train import run as kd_run
from kd_jax.train import sharding
from kd_jax.train.teachers import Teachers

from helpers import segmentation_config

_DN = ("NHWC", "HWIO", "NHWC")


def _lax_conv(x, kernel, stride, padding, dilation):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding), (padding, padding)),
                                      rhs_dilation=(dilation, dilation), dimension_numbers=_DN)


def _out_size(size, k, stride, padding, dilation):
  return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _bilinear64(image, r, c):
  """Float64 bilinear interpolation of one [H, W, C] image at (r, c); zero outside the image."""
  height, width, _ = image.shape
  r0, c0 = int(np.floor(r)), int(np.floor(c))
  out = np.zeros(image.shape[-1])
  for i, wi in ((r0, 1 - (r - r0)), (r0 + 1, r - r0)):
    for j, wj in ((c0, 1 - (c - c0)), (c0 + 1, c - c0)):
      if 0 <= i < height and 0 <= j < width:
        out += wi * wj * image[i, j]
  return out


def _deform64(x, offsets, mask, kernel, stride, padding, dilation):
  """DCNv2 written out pixel by pixel and tap by tap in float64 (torchvision's definition, NHWC)."""
  x, offsets, mask, kernel = (np.asarray(a, np.float64) for a in (x, offsets, mask, kernel))
  kh, kw, _, cout = kernel.shape
  batch, ho, wo, _ = mask.shape
  out = np.zeros((batch, ho, wo, cout))
  for b in range(batch):
    for oy in range(ho):
      for ox in range(wo):
        for i in range(kh):
          for j in range(kw):
            k = i * kw + j
            r = oy * stride - padding + i * dilation + offsets[b, oy, ox, 2 * k]
            c = ox * stride - padding + j * dilation + offsets[b, oy, ox, 2 * k + 1]
            out[b, oy, ox] += mask[b, oy, ox, k] * _bilinear64(x[b], r, c) @ kernel[i, j]
  return out


# ---------------------------------------------------------------------------------------------------
# deform_conv2d.


@pytest.mark.parametrize("kernel_size,stride,padding,dilation", [
    ((3, 3), 1, 1, 1), ((3, 3), 2, 1, 1), ((3, 3), 1, 2, 2), ((3, 3), 2, 0, 1), ((2, 3), 1, 1, 1)])
def test_zero_offsets_and_unit_mask_equal_a_regular_convolution(kernel_size, stride, padding, dilation):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(*kernel_size, 3, 4)), jnp.float32)
  ref = _lax_conv(x, kernel, stride, padding, dilation)
  taps = kernel_size[0] * kernel_size[1]
  shape = ref.shape[:3]
  out = deform_conv2d(x, jnp.zeros((*shape, 2 * taps)), jnp.ones((*shape, taps)), kernel, stride=stride,
                      padding=padding, dilation=dilation)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  # No mask is the same as a mask of ones (DCNv1).
  np.testing.assert_allclose(deform_conv2d(x, jnp.zeros((*shape, 2 * taps)), None, kernel, stride=stride,
                                           padding=padding, dilation=dilation), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 2)])
def test_integer_offsets_per_tap_equal_shifted_zero_filled_inputs(stride, dilation):
  # Each tap k reads the input shifted by its own (Δy_k, Δx_k): the sum over taps of a one-tap convolution of
  # the shifted, zero-filled input. Per-tap shifts with Δy ≠ Δx pin the interleaved (Δy, Δx) order and
  # the tap order k = i·kw + j.
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 6, 7, 3))
  kernel = rng.normal(size=(3, 3, 3, 2))
  shifts = rng.integers(-2, 3, (9, 2))
  shifts[0] = (2, -1)
  padding = dilation
  ho, wo = _out_size(6, 3, stride, padding, dilation), _out_size(7, 3, stride, padding, dilation)
  margin = 8
  canvas = np.zeros((2, 6 + 2 * margin, 7 + 2 * margin, 3))
  canvas[:, margin:margin + 6, margin:margin + 7] = x
  ref = np.zeros((2, ho, wo, 2))
  for i in range(3):
    for j in range(3):
      dy, dx = shifts[i * 3 + j]
      rows = margin + np.arange(ho) * stride - padding + i * dilation + dy
      cols = margin + np.arange(wo) * stride - padding + j * dilation + dx
      ref += canvas[:, rows][:, :, cols] @ kernel[i, j]
  offsets = np.broadcast_to(shifts.reshape(-1), (2, ho, wo, 18))
  out = deform_conv2d(jnp.asarray(x, jnp.float32), jnp.asarray(offsets, jnp.float32), None,
                      jnp.asarray(kernel, jnp.float32), stride=stride, padding=padding, dilation=dilation)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 2)])
def test_fractional_offsets_and_mask_equal_a_float64_bilinear_reimplementation(stride, padding, dilation):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 5, 6, 3))
  kernel = rng.normal(size=(3, 3, 3, 4))
  ho, wo = _out_size(5, 3, stride, padding, dilation), _out_size(6, 3, stride, padding, dilation)
  offsets = rng.uniform(-3.0, 3.0, (2, ho, wo, 18))
  mask = rng.uniform(0.0, 1.0, (2, ho, wo, 9))
  ref = _deform64(x, offsets, mask, kernel, stride, padding, dilation)
  out = deform_conv2d(*(jnp.asarray(a, jnp.float32) for a in (x, offsets, mask)), jnp.asarray(kernel, jnp.float32),
                      stride=stride, padding=padding, dilation=dilation)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
  # The draw reaches samples wholly outside (all four neighbours off the image) and partly outside.
  k = np.arange(9)
  rows = (np.arange(ho)[:, None, None] * stride - padding + (k // 3) * dilation)[None] + offsets[..., 0::2]
  assert np.any((rows <= -1) | (rows >= 5)) and np.any((rows > -1) & (rows < 0))


def test_mask_scales_each_taps_contribution_position_by_position():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)
  offsets = jnp.asarray(rng.uniform(-1.5, 1.5, (1, 5, 5, 18)), jnp.float32)
  mask = jnp.asarray(rng.uniform(0.0, 2.0, (1, 5, 5, 9)), jnp.float32)
  conv = jax.jit(deform_conv2d)
  per_tap = [conv(x, offsets, jnp.broadcast_to(jnp.eye(9)[k], mask.shape), kernel) for k in range(9)]
  combined = sum(mask[..., k:k + 1] * per_tap[k] for k in range(9))
  np.testing.assert_allclose(conv(x, offsets, mask, kernel), combined, rtol=1e-5, atol=1e-5)
  # A tap's contribution does not depend on the other taps' offsets.
  moved = offsets.at[..., 2:].add(0.7)
  np.testing.assert_allclose(conv(x, moved, jnp.broadcast_to(jnp.eye(9)[0], mask.shape), kernel),
                             per_tap[0], rtol=1e-6, atol=1e-6)


def test_gradients_with_respect_to_offsets_mask_input_and_kernel_match_finite_differences():
  rng = np.random.default_rng(4)
  # Fractional parts in [0.2, 0.8]: away from the integer grid lines where bilinear sampling has kinks.
  whole = rng.integers(-2, 3, (1, 4, 4, 18))
  frac = rng.uniform(0.2, 0.8, whole.shape) * rng.choice([-1, 1], whole.shape)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(1, 4, 4, 2)))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 2)))
    offsets = jnp.asarray(whole + frac)
    mask = jnp.asarray(rng.uniform(0.2, 1.0, (1, 4, 4, 9)))
    assert offsets.dtype == jnp.float64
    f = jax.jit(lambda o, m, xx, w: jnp.sum(jnp.sin(deform_conv2d(xx, o, m, w))))
    check_grads(f, (offsets, mask, x, kernel), order=1, modes=["rev"], eps=1e-5, atol=1e-6, rtol=1e-6)


def test_bad_shapes_are_refused():
  x, kernel = jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 2, 4))
  with pytest.raises(KDJaxError, match=r"offsets must have shape \(1, 5, 5, 18\)"):
    deform_conv2d(x, jnp.zeros((1, 5, 5, 9)), None, kernel)
  with pytest.raises(KDJaxError, match="mask must have shape"):
    deform_conv2d(x, jnp.zeros((1, 5, 5, 18)), jnp.zeros((1, 5, 5, 18)), kernel)
  with pytest.raises(KDJaxError, match="3 input channels"):
    deform_conv2d(x, jnp.zeros((1, 5, 5, 18)), None, jnp.zeros((3, 3, 3, 4)))
  with pytest.raises(KDJaxError, match="stride"):
    deform_conv2d(x, jnp.zeros((1, 5, 5, 18)), None, kernel, stride=0)


# ---------------------------------------------------------------------------------------------------
# DeformableConv2D.


@pytest.mark.parametrize("strides,dilation", [(1, 1), (2, 2)])
def test_deformable_layer_at_initialisation_is_half_a_regular_convolution_plus_bias(strides, dilation):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
  layer = DeformableConv2D(4, 3, strides, dilation)
  params = jax.tree.map(lambda a: a, jax.jit(layer.init)(jax.random.key(0), x)["params"])
  apply = jax.jit(layer.apply)
  assert not np.any(params["offset_conv"]["kernel"]) and not np.any(params["offset_conv"]["bias"])
  params["bias"] = jnp.asarray(rng.normal(size=4), jnp.float32)
  conv = _lax_conv(x, params["kernel"], strides, dilation, dilation)
  out = apply({"params": params}, x)
  np.testing.assert_allclose(out, 0.5 * conv + params["bias"], rtol=1e-5, atol=1e-5)
  # The predictor's channels [2K, 3K) are the modulation logits: a large bias there gives m ≈ 1.
  params["offset_conv"]["bias"] = params["offset_conv"]["bias"].at[18:].set(30.0)
  np.testing.assert_allclose(apply({"params": params}, x), conv + params["bias"], rtol=1e-5, atol=1e-5)
  # ... and channels (2k, 2k + 1) are tap k's (Δy, Δx): Δy = 1 everywhere reads the input one row down.
  params["offset_conv"]["bias"] = params["offset_conv"]["bias"].at[0:18:2].set(1.0)
  # Padded-input row r holds x[r − pad + 1] (zero outside), the padding rows included.
  pad = dilation
  down = jnp.pad(x, ((0, 0), (pad + 1, pad + 1), (pad, pad), (0, 0)))[:, 2:2 + 8 + 2 * pad]
  np.testing.assert_allclose(apply({"params": params}, x),
                             _lax_conv(down, params["kernel"], strides, 0, dilation) + params["bias"],
                             rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# DeepLabv3+.


def _random_variables(model, x, seed):
  """Variables of the shapes `model.init` gives, drawn directly (tracing init abstractly compiles nothing):
  kernels N(0, 1/fan_in), BatchNorm at its identity; every deformable layer gets nonzero offsets and masks."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "batch_stats" in name:
      return jnp.full(leaf.shape, 1.0 if name.endswith("['var']") else 0.0, jnp.float32)
    if name.endswith("['scale']"):
      return jnp.ones(leaf.shape, jnp.float32)
    fan_in = int(np.prod(leaf.shape[:-1])) or 1
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("name,channels,widths,deformable", [
    ("deeplab_tiny", 3, (16, 32, 64), False), ("deeplab_small", 4, (32, 64, 128), False),
    ("deeplab_small_dcn", 4, (32, 64, 128), True)])
def test_deeplab_returns_logits_and_the_documented_stages(name, channels, widths, deformable):
  model = models.create_model(name, num_classes=3)
  x = jax.ShapeDtypeStruct((2, 32, 32, channels), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)  # compiles nothing
  assert ("dcn1" in variables["params"]["layer3_0"]) == deformable
  assert ("conv1" in variables["params"]["layer3_0"]) != deformable
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0], variables, x)
  assert out.prediction.shape == (2, 32, 32, 3)
  expected = [(2, 8, 8, widths[0]), (2, 4, 4, widths[1]), (2, 4, 4, widths[2]), (2, 4, 4, model.aspp_features),
              (2, 8, 8, model.decoder_features)]
  assert [s.shape for s in out.stages] == expected == [s.shape for s in out.preact_stages]
  assert out.embedding.shape == (2, model.aspp_features)


def test_deformable_deeplab_under_jit_in_train_mode_with_batch_stats():
  model = models.create_model("deeplab_small_dcn", num_classes=3)
  x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 32, 32, 4)), jnp.float32)
  variables = _random_variables(model, x, 7)

  @jax.jit
  def forward(variables, x):
    train, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return train, updates, model.apply({**variables, **updates}, x, train=False)

  out, updates, evaluated = forward(variables, x)
  assert out.prediction.shape == evaluated.prediction.shape == (2, 32, 32, 3)
  assert np.all(np.isfinite(out.prediction)) and np.all(np.isfinite(evaluated.prediction))
  for stage, preact in zip(out.stages, out.preact_stages):
    np.testing.assert_array_equal(stage, jax.nn.relu(preact))
  np.testing.assert_allclose(out.embedding, out.stages[3].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  # Training moved every running statistic; eval mode reads them.
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), updates["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))
  assert not np.allclose(evaluated.prediction, out.prediction)


def test_generic_deeplab_fits_any_size_and_refuses_bad_arguments():
  model = models.create_model("deeplabv3plus", 2, widths=(8, 16), aspp_rates=(1, 2), deformable=True)
  x = jax.ShapeDtypeStruct((1, 20, 28, 5), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  # Two stages: output stride 4; 20×28 → 10×14 (stem) → 5×7 (the first stage, kept by the dilated second).
  assert out.prediction.shape == (1, 20, 28, 2)
  assert [s.shape[1:3] for s in out.stages] == [(5, 7), (5, 7), (5, 7), (5, 7)]
  assert len([k for k in variables["params"]["aspp"] if k.endswith("_conv")]) == 1 + 2 + 1 + 1
  with pytest.raises(KDJaxError, match="widths"):
    models.create_model("deeplabv3plus", 2, widths=(8,))
  with pytest.raises(KDJaxError, match="aspp_features"):
    models.create_model("deeplabv3plus", 2, aspp_features=0)
  with pytest.raises(KDJaxError, match="NHWC"):
    model.init(jax.random.key(0), jnp.zeros((20, 28, 5)))


# ---------------------------------------------------------------------------------------------------
# A student on EO with pixel KD from a deformable teacher on EO+SAR, through the run's own step.


def _config(**overrides):
  return segmentation_config(**{"student.model": "deeplab_tiny", "epochs": 1, **overrides})


def test_a_deeplab_student_distils_from_a_deformable_teacher_on_eo_plus_sar():
  images, labels, _ = kd_data.buildings_arrays(num_tiles=24, size=32)
  tiles = kd_data.from_segmentation_arrays(images, labels, num_classes=3, seed=0, name="tiles",
                                           channel_names=("red", "green", "blue", "sar"))
  teacher = models.create_model("deeplab_small_dcn", num_classes=3)
  teacher_variables = teacher.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 4)))
  loss = ml_collections.ConfigDict({"supervised": {"weight": 0.5}, "pixel_kd": {"weight": 0.5, "temperature": 4.0}})
  run = kd_run.build_run(_config(loss=loss), tiles, mesh=sharding.make_mesh(jax.devices()[:1]),
                         teachers=(Teachers((teacher,), (1.0,), (False,)), (teacher_variables,)))
  state = kd_run.init_state(run)
  first = jax.device_get(state.params)
  step = kd_run.make_step(run, state, 0)
  for i in range(2):
    state, metrics = step(state, kd_data.train_batch(tiles.train, 8, seed=0, step=i), run.teacher_variables)
  assert np.isfinite(float(metrics["pixel_kd/loss"])) and float(metrics["pixel_kd/loss"]) > 0
  assert first["stem_conv"]["kernel"].shape[2] == 3  # the student reads EO only
  assert not np.allclose(jax.device_get(state.params)["stem_conv"]["kernel"], first["stem_conv"]["kernel"])
