"""The convolution with CPU-specific backward passes (kd_jax.backends.cpu.conv) against lax.conv_general_dilated."""

from __future__ import annotations

import importlib.util
import os
import sys
import unittest.mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from helpers import model_grads
from kd_jax import models
from kd_jax.backends.cpu import conv as kd_conv
from kd_jax.config import base_config, validate
from kd_jax.errors import KDJaxError

NHWC = ("NHWC", "HWIO", "NHWC")
# float32 reassociation: the matmul forms sum the same products in another order. Errors are measured
# relative to the largest magnitude of the reference (a few ulps of the sum's scale, ~1e-6 seen).
RTOL = 1e-5


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _value_and_grads(conv_fn, x, w, dy, **kwargs):
  y, vjp = jax.vjp(lambda x_, w_: conv_fn(x_, w_, **kwargs), x, w)
  dx, dw = vjp(dy)
  return y, dx, dw


CASES = [  # (batch, size, c_in, c_out, kernel, stride, padding)
    (4, 8, 3, 16, 3, 1, ((1, 1), (1, 1))),
    (3, 8, 16, 32, 3, 2, ((1, 1), (1, 1))),
    (2, 7, 8, 8, 3, 2, ((1, 1), (1, 1))),     # odd size at stride 2: the last padded row is unused
    (2, 9, 8, 24, 1, 2, "VALID"),             # the 1x1 projection shortcut
    (2, 6, 5, 7, 1, 1, "VALID"),
    (2, 10, 4, 6, 5, 1, ((2, 2), (2, 2))),
    (2, 9, 4, 6, 3, 1, "SAME"),
    (2, 8, 6, 4, 3, 2, ((0, 1), (1, 0))),     # asymmetric padding
    (3, 11, 3, 4, 5, 3, ((2, 1), (0, 2))),    # stride 3: nine output phases
    (2, 9, 3, 4, 2, 3, ((0, 0), (1, 1))),     # kernel smaller than the stride: phases without taps
    (9, 8, 4, 6, 3, 2, ((1, 1), (1, 1))),     # several weight-gradient blocks (with _BLOCK_POSITIONS below)
]


@pytest.mark.parametrize("mode", ["matmul", "blocked"])
@pytest.mark.parametrize("case", CASES, ids=[f"n{c[0]}s{c[1]}c{c[2]}-{c[3]}k{c[4]}st{c[5]}" for c in CASES])
def test_matches_lax_forward_and_both_gradients(case, mode):
  n, size, c_in, c_out, k, stride, padding = case
  keys = jax.random.split(jax.random.PRNGKey(sum(case[:6])), 3)
  x = jax.random.normal(keys[0], (n, size, size, c_in))
  w = jax.random.normal(keys[1], (k, k, c_in, c_out)) / np.sqrt(k * k * c_in)
  kwargs = dict(window_strides=(stride, stride), padding=padding, dimension_numbers=NHWC)
  dy = jax.random.normal(keys[2], lax.conv_general_dilated(x, w, **kwargs).shape)
  y_ref, dx_ref, dw_ref = _value_and_grads(lax.conv_general_dilated, x, w, dy, **kwargs)
  # 2 images per weight-gradient block at 8x8, so the batches above are split into 1 to 5 blocks.
  with kd_conv.conv_backward(mode), unittest.mock.patch.object(kd_conv, "_BLOCK_POSITIONS", 128):
    y, dx, dw = jax.jit(lambda x, w, dy: _value_and_grads(kd_conv.conv_general_dilated, x, w, dy, **kwargs))(
        x, w, dy)
  assert y.shape == y_ref.shape and dx.shape == x.shape and dw.shape == w.shape
  assert _rel_err(y, y_ref) < RTOL
  assert _rel_err(dx, dx_ref) < RTOL
  assert _rel_err(dw, dw_ref) < RTOL


def test_auto_is_the_blocked_backward_on_cpu_and_xla_mode_is_lax_itself():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 8))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 8, 16))
  kwargs = dict(window_strides=(2, 2), padding=((1, 1), (1, 1)), dimension_numbers=NHWC)

  def compiled_grad(mode):
    with kd_conv.conv_backward(mode):
      loss = lambda x, w: jnp.sum(kd_conv.conv_general_dilated(x, w, **kwargs) ** 2)
      return jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()

  count = lambda text: text.count(" convolution(")
  auto, blocked = compiled_grad("auto"), compiled_grad("blocked")
  auto_matmul, matmul, xla = compiled_grad(kd_conv.AUTO_MATMUL), compiled_grad("matmul"), compiled_grad("xla")
  # blocked: the forward, the 4 output phases of the stride-2 input gradient, one weight-gradient block
  assert count(auto) == count(blocked) == 6
  assert count(auto_matmul) == count(matmul) == 1  # only the forward is a convolution
  assert count(xla) == 3                           # XLA's forward, input gradient and weight gradient
  with kd_conv.conv_backward("xla"):
    got = jax.grad(lambda w: jnp.sum(kd_conv.conv_general_dilated(x, w, **kwargs) ** 2))(w)
  want = jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(x, w, **kwargs) ** 2))(w)
  np.testing.assert_array_equal(got, want)


def test_weight_gradient_blocks_follow_the_image_size():
  assert kd_conv._block_rows(64, 32, 32) == 16   # 16384 positions: 4 blocks
  assert kd_conv._block_rows(64, 16, 16) == 64   # the whole batch is one block
  assert kd_conv._block_rows(128, 32, 32) == 16
  assert kd_conv._block_rows(64, 112, 112) == 4  # one image would be 12544 positions; at most 16 blocks
  assert kd_conv._block_rows(1, 224, 224) == 1
  assert kd_conv._block_rows(10, 32, 32) == 10 and kd_conv._block_rows(17, 32, 32) == 9


@pytest.mark.parametrize("dtype, n", [(jnp.float32, 16), (jnp.bfloat16, 16), (jnp.float32, 130)])
def test_batch_minor_is_the_transpose_bit_for_bit(dtype, n):
  # Finite values of every magnitude, subnormals included; only -0 may come out as +0. 130 images: chunks
  # of 64, 64 and 2 identity columns, concatenated.
  x = jax.random.normal(jax.random.PRNGKey(0), (n, 4, 3, 8), jnp.float32)
  x = x * jnp.exp2(jax.random.randint(jax.random.PRNGKey(1), x.shape, -140, 120)).astype(jnp.float32)
  x = x.astype(dtype)
  got = jax.jit(kd_conv._batch_minor)(x)
  assert got.dtype == x.dtype
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(jnp.transpose(x, (1, 2, 3, 0)), np.float32))


def test_auto_keeps_xla_convolutions_when_lowered_for_gpu_and_tpu():
  # Lowering for another platform needs no such device (jax.export); this is what a GPU/TPU run compiles.
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 8))
  kwargs = dict(window_strides=(2, 2), padding=((1, 1), (1, 1)), dimension_numbers=NHWC)
  # blocked on CPU: one weight-gradient block, whose input is made batch-minor by one identity product
  for mode, on_cpu in (("auto", (6, 1)), (kd_conv.AUTO_MATMUL, (1, 10))):
    with kd_conv.conv_backward(mode):
      grad = jax.jit(jax.grad(lambda x, w: jnp.sum(kd_conv.conv_general_dilated(x, w, **kwargs) ** 2), (0, 1)))
      for platform, (convolutions, dots) in (("cuda", (3, 0)), ("tpu", (3, 0)), ("cpu", on_cpu)):
        text = jax.export.export(grad, platforms=[platform])(x, w).mlir_module()
        assert text.count("stablehlo.convolution") == convolutions, (mode, platform)
        assert text.count("stablehlo.dot_general") == dots, (mode, platform)


@pytest.mark.parametrize("kwargs, c_out", [
    (dict(feature_group_count=32), 64),   # more groups than _MAX_SPLIT_GROUPS, not depthwise (2 filters each)
    (dict(rhs_dilation=(2, 2)), 32),
    (dict(lhs_dilation=(2, 1)), 32),
])
def test_unsupported_cases_fall_back_to_lax_exactly(kwargs, c_out):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 32))
  c_in = 32 // kwargs.get("feature_group_count", 1)
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, c_in, c_out))
  args = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), dimension_numbers=NHWC, **kwargs)
  loss = lambda f: (lambda x, w: jnp.sum(jnp.sin(f(x, w, **args))))
  with kd_conv.conv_backward("matmul"):
    got = jax.grad(loss(kd_conv.conv_general_dilated), argnums=(0, 1))(x, w)
  want = jax.grad(loss(lax.conv_general_dilated), argnums=(0, 1))(x, w)
  for g, r in zip(got, want):
    np.testing.assert_array_equal(g, r)


GROUPED = [  # (batch, size, c_in, c_out, groups, kernel, stride, padding)
    (4, 8, 6, 6, 6, 3, 1, ((1, 1), (1, 1))),     # depthwise, as in MobileNetV2 and ShuffleNet
    (3, 9, 5, 5, 5, 3, 2, ((1, 1), (1, 1))),     # depthwise, stride 2, odd size
    (3, 10, 5, 5, 5, 5, 3, ((2, 1), (0, 2))),    # depthwise, stride 3, asymmetric padding
    (2, 9, 4, 4, 4, 2, 2, ((0, 3), (3, 0))),     # depthwise, padding wider than the kernel
    (2, 7, 4, 4, 4, 3, 2, "VALID"),
    (2, 8, 12, 6, 3, 1, 1, "VALID"),             # ShuffleNetV1's grouped 1x1 convolutions
    (2, 9, 8, 16, 4, 3, 2, ((1, 1), (1, 1))),    # grouped 3x3, stride 2
]


@pytest.mark.parametrize("mode", ["auto", "matmul"])
@pytest.mark.parametrize("case", GROUPED, ids=[f"c{c[2]}-{c[3]}g{c[4]}k{c[5]}st{c[6]}" for c in GROUPED])
def test_grouped_and_depthwise_convolutions_match_lax(case, mode):
  n, size, c_in, c_out, groups, k, stride, padding = case
  keys = jax.random.split(jax.random.PRNGKey(sum(case[:7])), 3)
  x = jax.random.normal(keys[0], (n, size, size, c_in))
  w = jax.random.normal(keys[1], (k, k, c_in // groups, c_out)) / k
  kwargs = dict(window_strides=(stride, stride), padding=padding, dimension_numbers=NHWC,
                feature_group_count=groups)
  dy = jax.random.normal(keys[2], lax.conv_general_dilated(x, w, **kwargs).shape)
  y_ref, dx_ref, dw_ref = _value_and_grads(lax.conv_general_dilated, x, w, dy, **kwargs)
  with kd_conv.conv_backward(mode):
    y, dx, dw = jax.jit(lambda x, w, dy: _value_and_grads(kd_conv.conv_general_dilated, x, w, dy, **kwargs))(
        x, w, dy)
  assert y.shape == y_ref.shape and dx.shape == x.shape and dw.shape == w.shape
  for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
    assert _rel_err(got, want) < RTOL


def test_depthwise_convolutions_leave_xla_grouped_path_on_cpu_only():
  x, w = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 1, 16))
  kwargs = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), dimension_numbers=NHWC, feature_group_count=16)
  with kd_conv.conv_backward("auto"):
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(kd_conv.conv_general_dilated(x, w, **kwargs) ** 2), (0, 1)))
    for platform, convolutions in (("cuda", 3), ("tpu", 3), ("cpu", 0)):
      text = jax.export.export(grad, platforms=[platform])(x, w).mlir_module()
      assert text.count("stablehlo.convolution") == convolutions, platform


def test_depthwise_weight_gradient_is_as_accurate_as_float64_allows():
  # 8·32·32 = 8192 products per filter tap: the two-level sum keeps float32 close to the exact value.
  keys = jax.random.split(jax.random.PRNGKey(5), 2)
  x = jax.random.normal(keys[0], (8, 32, 32, 8))
  dy = jax.random.normal(keys[1], (8, 32, 32, 8))
  kwargs = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), dimension_numbers=NHWC, feature_group_count=8)
  with kd_conv.conv_backward("auto"):
    _, vjp = jax.vjp(lambda w: kd_conv.conv_general_dilated(x, w, **kwargs), jnp.zeros((3, 3, 1, 8)))
    (dw,) = vjp(dy)
  x64 = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  exact = np.stack([np.einsum("nhwc,nhwc->c", x64[:, i:i + 32, j:j + 32], np.asarray(dy, np.float64))
                    for i in range(3) for j in range(3)]).reshape(3, 3, 1, 8)
  assert _rel_err(dw, exact) < 2e-6


@pytest.mark.parametrize("mode, groups", [("matmul", 1), ("blocked", 1), ("auto", 32)])
def test_bfloat16_gradients_accumulate_in_float32(mode, groups):
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(keys[0], (8, 16, 16, 32)).astype(jnp.bfloat16)
  w = (jax.random.normal(keys[1], (3, 3, 32 // groups, 32)) / 17.0).astype(jnp.bfloat16)
  kwargs = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), dimension_numbers=NHWC,
                feature_group_count=groups)
  dy = jax.random.normal(keys[2], (8, 16, 16, 32)).astype(jnp.bfloat16)
  # blocked: one image per block, so dw is a sum of 8 blocks, which must not be rounded to bf16 one by one
  with kd_conv.conv_backward(mode), unittest.mock.patch.object(kd_conv, "_BLOCK_POSITIONS", 256):
    y, dx, dw = _value_and_grads(kd_conv.conv_general_dilated, x, w, dy, **kwargs)
  assert y.dtype == dx.dtype == dw.dtype == jnp.bfloat16
  # Exact reference: the same bf16 values, float32 arithmetic. dw sums 8·16·16 = 2048 products per entry;
  # accumulating them in bf16 would be off by far more than one final bf16 rounding (2^-8 relative).
  _, _, dw_ref = _value_and_grads(lax.conv_general_dilated, x.astype(jnp.float32), w.astype(jnp.float32),
                                  dy.astype(jnp.float32), **kwargs)
  assert _rel_err(dw.astype(jnp.float32), dw_ref) < 2 ** -8


@pytest.mark.parametrize("name, mode", [("resnet8", "matmul"), ("resnet8", "blocked")])
def test_full_model_gradient_matches_and_parameters_are_unchanged(name, mode):
  # resnet8: every conv kind of the CIFAR ResNets (3x3 stride 1 and 2, 1x1 stride-2 projections), BN, fc.
  # (Depthwise and grouped convolutions are checked one by one above; a shufflenetv1 gradient compiled with
  # XLA's grouped convolutions alone takes 20 s, and matched within 3e-5 of the scale below.)
  ref_vars, (ref_loss, ref_grads) = model_grads(name, "xla", 16)[:2]
  got_vars, (loss, grads) = model_grads(name, mode, 16)[:2]
  # Same parameter names, shapes and initial values: checkpoints and exported teachers keep loading.
  assert jax.tree.structure(ref_vars) == jax.tree.structure(got_vars)
  jax.tree.map(np.testing.assert_array_equal, ref_vars, got_vars)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  # Errors relative to each leaf's scale, floored at 1e-3 of the largest gradient: a BatchNorm bias that
  # feeds another BatchNorm has a gradient that is 0 up to rounding (1e-8 here), whose relative error is
  # noise. Through BatchNorm and many layers float32 reassociation grows: merely reversing the batch order
  # under XLA's own convolutions moves shufflenetv1's gradients by 3e-5 of their scale (mobilenetv2_half's
  # by 1.5e-4); resnet8's stay within 1e-6.
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(ref_grads))
  errors = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                        / max(float(np.max(np.abs(b))), 1e-3 * scale), grads, ref_grads)
  assert max(jax.tree.leaves(errors)) < 1e-4, errors


def test_mode_switch_validation_and_restore():
  assert kd_conv.get_conv_backward() == "auto"
  with kd_conv.conv_backward("xla"):
    assert kd_conv.get_conv_backward() == "xla"
    with pytest.raises(KDJaxError, match="conv_backward must be .auto., .xla., .matmul. or .blocked."):
      kd_conv.set_conv_backward("cudnn")
  assert kd_conv.get_conv_backward() == "auto"
  config = base_config()
  assert config.conv_backward == "auto"
  config.conv_backward = "fast"
  with pytest.raises(KDJaxError, match="conv_backward"):
    validate(config)


def test_bench_has_a_conv_option():
  path = os.path.join(os.path.dirname(__file__), "..", "tools", "bench.py")
  spec = importlib.util.spec_from_file_location("bench_for_conv_test", path)
  bench = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = bench  # dataclasses look their module up while the file executes
  spec.loader.exec_module(bench)
  assert bench.parse_args([]).conv == "auto"
  assert bench.parse_args(["--conv", "xla"]).conv == "xla"
  with pytest.raises(SystemExit):
    bench.parse_args(["--conv", "cudnn"])


def test_cpu_conv_kernels_options_and_what_auto_resolves_to():
  option = "xla_cpu_experimental_ynn_fusion_type"
  assert kd_conv.compiler_options("xla", "cpu") == {
      option: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
  assert kd_conv.compiler_options("ynnpack", "cpu") is None  # XLA's defaults
  assert kd_conv.compiler_options("xla", "gpu") is None and kd_conv.compiler_options("xla", "tpu") is None
  assert kd_conv.resolve_conv_backward("auto", "xla") == "auto"  # the blocked backward on CPU
  assert kd_conv.resolve_conv_backward("auto", "ynnpack") == kd_conv.AUTO_MATMUL
  assert kd_conv.resolve_conv_backward("matmul", "xla") == "matmul"
  assert kd_conv.resolve_conv_backward("blocked", "ynnpack") == "blocked"
  with unittest.mock.patch.object(kd_conv, "_cpu_option_supported", lambda key, value: False):
    with pytest.warns(RuntimeWarning, match="does not accept the XLA option"):  # a jaxlib without it
      assert kd_conv.resolve_conv_backward("auto", "xla") == kd_conv.AUTO_MATMUL
  with pytest.raises(KDJaxError, match="cpu_conv_kernels must be .auto., .xla., .ynnpack. or .onednn.; got"):
    kd_conv.compiler_options("mkl", "cpu")
  config = base_config()
  assert config.cpu_conv_kernels == "auto"  # oneDNN where it passes its self-check, XLA's kernels otherwise
  config.cpu_conv_kernels = "mkl"
  with pytest.raises(KDJaxError, match="cpu_conv_kernels must be 'auto', 'xla', 'ynnpack' or 'onednn'"):
    validate(config)


def _ynn_fusion_ops(hlo: str) -> dict:
  """How many convolution and reduce instructions the YNNPACK fusions of a compiled HLO module contain."""
  import re
  called = set(re.findall(r'calls=(%[\w.-]+)[^\n]*"__ynn_fusion"', hlo))
  counts = {"convolution": 0, "reduce": 0}
  for block in hlo.split("\n\n"):
    header = block.strip().splitlines()[0] if block.strip() else ""
    if header.split(" ")[0] in called:
      for op in counts:
        counts[op] += len(re.findall(rf" {op}\(", block))
  return counts


def test_xla_kernels_take_convolutions_from_ynnpack_with_the_same_values():
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 32))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 32, 32)) * 0.1

  def loss(x_, w_):  # a convolution, then a reduction over it, as BatchNorm has
    y = lax.conv_general_dilated(x_, w_, (1, 1), "SAME", dimension_numbers=NHWC)
    return jnp.mean(jnp.square(y - jnp.mean(y, axis=(0, 1, 2))))

  def compiled(options):
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), compiler_options=options).lower(x, w).compile()

  default, ours = compiled(None), compiled(kd_conv.compiler_options("xla", "cpu"))
  # XLA's defaults put convolutions into YNNPACK fusions; with the options none is, while the reductions
  # still are.
  assert _ynn_fusion_ops(default.as_text())["convolution"] >= 3  # forward, input and weight gradients
  ours_ops = _ynn_fusion_ops(ours.as_text())
  assert ours_ops["convolution"] == 0 and ours_ops["reduce"] >= 1
  assert ours.as_text().count("convolution(") >= 3
  (v0, g0), (v1, g1) = default(x, w), ours(x, w)
  assert _rel_err(v1, v0) < 1e-5
  for a, b in zip(g1, g0):
    assert _rel_err(a, b) < 1e-5


@pytest.mark.parametrize("name", ["resnet8", "vgg8"])
def test_eval_forward_keeps_the_last_stage_convolutions_out_of_ynnpack(name):
  """The pools' reductions must not pull the eval-mode network's convolutions into a YNNPACK fusion
  (`kd_conv.ynnpack_fusion_barrier` in global_avg_pool and VGG's max_pool_2x2): without it the global pool
  took in the last stage's convolutions and VGG's max pools those before and after them."""
  model = models.create_model(name, 10)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(1), x[:1], train=False)

  def forward(v, images):
    return model.apply(v, images, train=False).logits

  hlo = jax.jit(forward).lower(variables, x).compile(kd_conv.compiler_options("xla", "cpu")).as_text()
  assert _ynn_fusion_ops(hlo)["convolution"] == 0
  assert hlo.count("convolution(") >= 5


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 2 ** -8)])
def test_eval_global_avg_pool_is_the_mean_and_its_gradient(dtype, tol):
  from kd_jax.models.resnet_cifar import global_avg_pool
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 5, 6)).astype(dtype)  # odd H and W, H·W = 35
  pooled = jax.jit(global_avg_pool, static_argnums=1)(x, False)
  assert pooled.dtype == dtype and pooled.shape == (3, 6)
  expected = np.asarray(x, np.float64).mean(axis=(1, 2))
  assert _rel_err(pooled.astype(jnp.float32), expected) < tol
  weights = jax.random.normal(jax.random.PRNGKey(1), (3, 6))
  grad = jax.jit(jax.grad(lambda x_: jnp.sum(global_avg_pool(x_, False).astype(jnp.float32) * weights)))(x)
  np.testing.assert_allclose(np.asarray(grad, np.float32),
                             np.broadcast_to(np.asarray(weights)[:, None, None, :] / 35, x.shape),
                             rtol=tol, atol=tol * float(jnp.abs(weights).max()) / 35)


@pytest.mark.parametrize("dtype, bits", [(jnp.float32, np.uint32), (jnp.bfloat16, np.uint16)])
def test_ynnpack_fusion_barrier_is_the_identity_bit_for_bit(dtype, bits):
  tiny = float(jnp.finfo(dtype).tiny)
  x = jnp.array([0.0, -0.0, 1.5, -2.75, tiny, tiny / 4, -tiny / 8, float(jnp.finfo(dtype).max), np.inf, -np.inf,
                 np.nan], dtype)
  y = jax.jit(kd_conv.ynnpack_fusion_barrier)(x)
  np.testing.assert_array_equal(np.asarray(y).view(bits), np.asarray(x).view(bits))
  g = jax.grad(lambda v: jnp.sum(kd_conv.ynnpack_fusion_barrier(v).astype(jnp.float32) * 3.0))(x[:4])
  np.testing.assert_array_equal(np.asarray(g, np.float32), 3.0)
  ints = jnp.arange(4)
  assert kd_conv.ynnpack_fusion_barrier(ints) is ints
  for platform, count in (("cpu", 1), ("cuda", 0), ("tpu", 0)):
    text = jax.export.export(jax.jit(kd_conv.ynnpack_fusion_barrier), platforms=[platform])(x).mlir_module()
    assert text.count("stablehlo.reduce_precision") == count, platform


def test_a_distillers_reduction_over_teacher_features_takes_no_teacher_convolution():
  """AT reduces the teacher's last stage, whose only user it is when the teacher's logits are unused: the
  reduction took the stage's convolutions into YNNPACK until `Teachers` put the barrier on its outputs."""
  from kd_jax.train.teachers import Teachers
  model = models.create_model("resnet8", 10)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(1), x[:1], train=False)
  teachers = Teachers((model,), (1.0,), (False,))

  def attention(v, images):
    return jnp.mean(jnp.square(teachers((v,), images).stages[-1]), axis=-1)

  hlo = jax.jit(attention).lower(variables, x).compile(kd_conv.compiler_options("xla", "cpu")).as_text()
  assert _ynn_fusion_ops(hlo)["convolution"] == 0
  assert hlo.count("convolution(") >= 5


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 5, 4)])
def test_vgg_eval_max_pool_equals_the_training_max_pool(shape):
  import flax.linen as nn
  from kd_jax.models.vgg import max_pool_2x2
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  expected = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
  np.testing.assert_array_equal(jax.jit(max_pool_2x2, static_argnums=1)(x, False), expected)
  np.testing.assert_array_equal(max_pool_2x2(x, True), expected)


def test_a_training_run_restores_the_callers_conv_backward(tmp_path):
  from kd_jax.train import loop
  config = base_config()
  config.data.name, config.student.model, config.loss = "digits", "cnn_tiny", {"ce": {"weight": 1.0}}
  config.batch_size, config.epochs, config.max_steps, config.progress_bar = 32, 1, 2, False
  traced = []
  real = kd_conv.conv_general_dilated

  def spy(*args, **kwargs):  # the mode the call used: the one it was given, else the module's
    traced.append(kwargs.get("mode") or kd_conv.get_conv_backward())
    return real(*args, **kwargs)

  with kd_conv.conv_backward("matmul"):
    with unittest.mock.patch.object(kd_conv, "conv_general_dilated", spy):
      loop.train_and_evaluate(config, str(tmp_path))
    assert kd_conv.get_conv_backward() == "matmul"  # the run's mode did not leak out
  # config: 'auto' with the default kernels ('auto': oneDNN where it passes its self-check, else the blocked
  # backward with XLA's kernels)
  assert traced and set(traced) == {kd_conv.resolve_conv_backward("auto", "auto")}
