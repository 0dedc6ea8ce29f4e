"""Tests for the super-resolution models (kd_jax/models/super_resolution.py): EDSR, RCAN, the pixel shuffle.

Only tiny instances run (`sr_tiny`, `edsr_2x16`, a 3-group `rcan_custom`, on 2x5x6 inputs, each compiled
once and re-run with altered variables); the big models are counted with `jax.eval_shape`, against sums
written out layer by layer from the reference code (`conv` below: k*k*C_in*C_out weights + C_out biases).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax.errors import KDJaxError
from kd_jax.models import EDSR, MODELS, RCAN, ModelOutput, create_model, param_count
from kd_jax.models.super_resolution import (DIV2K_RGB_MEAN, channel_mean, pixel_shuffle, rcan_custom,
                                            space_to_depth)

SR_MODELS = ("edsr", "edsr_baseline", "edsr_8x32", "edsr_2x16", "sr_tiny", "edsr_custom", "rcan", "rcan_small",
             "rcan_custom")
BATCH, H, W = 2, 5, 6  # odd, unequal sides: a transposed H/W would show


# ----------------------------------------------------------------------------------------------------------
# Pixel shuffle.
# ----------------------------------------------------------------------------------------------------------

def test_pixel_shuffle_matches_pytorch_order_by_hand():
  # [1, 2, 2, 4] -> [1, 4, 4, 1]: PyTorch's nn.PixelShuffle(2) sends channel i*2 + j of pixel (h, w) to
  # (2h + i, 2w + j). x[0, h, w, k] = 4*(2h + w) + k.
  x = jnp.arange(16.0).reshape(1, 2, 2, 4)
  expected = np.array([[0, 1, 4, 5],
                       [2, 3, 6, 7],
                       [8, 9, 12, 13],
                       [10, 11, 14, 15]], np.float32)
  np.testing.assert_array_equal(pixel_shuffle(x, 2)[0, :, :, 0], expected)
  # Two output channels: channel c*4 + i*2 + j, so the output channel is the slowest index (C, i, j).
  y = pixel_shuffle(jnp.arange(8.0).reshape(1, 1, 1, 8), 2)
  np.testing.assert_array_equal(y[0, :, :, 0], [[0, 1], [2, 3]])
  np.testing.assert_array_equal(y[0, :, :, 1], [[4, 5], [6, 7]])


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_and_space_to_depth_are_inverses(r):
  rng = np.random.default_rng(0)
  low = rng.normal(size=(2, 3, 4, 2 * r * r)).astype(np.float32)
  high = rng.normal(size=(2, 3 * r, 4 * r, 2)).astype(np.float32)
  assert pixel_shuffle(low, r).shape == (2, 3 * r, 4 * r, 2)
  np.testing.assert_array_equal(space_to_depth(pixel_shuffle(low, r), r), low)
  np.testing.assert_array_equal(pixel_shuffle(space_to_depth(high, r), r), high)
  # Every element moves, none is copied or lost.
  np.testing.assert_array_equal(np.sort(np.ravel(pixel_shuffle(low, r))), np.sort(np.ravel(low)))


def test_pixel_shuffle_errors():
  with pytest.raises(KDJaxError, match="multiple of r\\*r"):
    pixel_shuffle(jnp.zeros((1, 2, 2, 6)), 2)
  with pytest.raises(KDJaxError, match="divisible"):
    space_to_depth(jnp.zeros((1, 5, 4, 1)), 2)
  with pytest.raises(KDJaxError, match="NHWC"):
    pixel_shuffle(jnp.zeros((2, 2, 4)), 2)


# ----------------------------------------------------------------------------------------------------------
# Registry, scales and parameter counts (traced, not run).
# ----------------------------------------------------------------------------------------------------------

def abstract_variables(model, channels: int = 3):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, channels)), train=False))


@functools.lru_cache(maxsize=None)
def traced(name: str, scale: int):
  """(output, variables) shapes of registered model `name` on a [1, 12, 10, 3] input: one trace shared by
  the count and shape tests (tracing RCAN's 200 blocks takes seconds)."""
  model = create_model(name, scale=scale)
  return jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 12, 10, 3))))


def count(name: str, scale: int, **kwargs) -> int:
  if not kwargs:
    return param_count(traced(name, scale)[1]["params"])
  return param_count(abstract_variables(create_model(name, scale=scale, **kwargs))["params"])


def conv(c_in: int, c_out: int, k: int = 3) -> int:
  """A PyTorch nn.Conv2d with its default bias=True."""
  return k * k * c_in * c_out + c_out


def upsampler(f: int, scale: int) -> int:
  """EDSR's common.Upsampler: log2(scale) convs F -> 4F for powers of two, one conv F -> 9F for 3."""
  return 2 * conv(f, 4 * f) if scale == 4 else conv(f, scale * scale * f)


def reference_edsr(scale: int, blocks: int, f: int, colors: int = 3) -> int:
  """edsr.py: head, `blocks` ResBlocks of two convs, the body's last conv, upsampler, tail conv (MeanShift
  is frozen and has no trainable parameters)."""
  return conv(colors, f) + blocks * 2 * conv(f, f) + conv(f, f) + upsampler(f, scale) + conv(f, colors)


def reference_rcan(scale: int, groups: int, blocks: int, f: int, reduction: int = 16, colors: int = 3) -> int:
  """rcan.py: an RCAB is two 3x3 convs and CALayer's two 1x1 convs; a group adds one conv."""
  rcab = 2 * conv(f, f) + conv(f, f // reduction, 1) + conv(f // reduction, f, 1)
  group = blocks * rcab + conv(f, f)
  return conv(colors, f) + groups * group + conv(f, f) + upsampler(f, scale) + conv(f, colors)


def test_reference_sums_written_out():
  """The numbers the formulas give, with the arithmetic spelled out for EDSR-baseline x4:
  head 3*3*3*64 + 64 = 1,792; a block 2 * (3*3*64*64 + 64) = 73,856, times 16 = 1,181,696; body conv
  36,928; upsampler 2 * (3*3*64*256 + 256) = 295,424; tail 3*3*64*3 + 3 = 1,731; total 1,517,571 (the
  paper's 1.5M). At x2 the upsampler is one 147,712 conv: 1,369,859. RCAN x4: an RCAB is
  73,856 + (64*4 + 4) + (4*64 + 64) = 74,436, a group 20 * 74,436 + 36,928 = 1,525,648; total
  1,792 + 10 * 1,525,648 + 36,928 + 295,424 + 1,731 = 15,592,355 (the paper's "about 16M")."""
  assert reference_edsr(4, 16, 64) == 1_792 + 16 * 73_856 + 36_928 + 295_424 + 1_731 == 1_517_571
  assert reference_edsr(2, 16, 64) == 1_792 + 16 * 73_856 + 36_928 + 147_712 + 1_731 == 1_369_859
  assert reference_rcan(4, 10, 20, 64) == 1_792 + 10 * (20 * 74_436 + 36_928) + 36_928 + 295_424 + 1_731
  assert reference_rcan(4, 10, 20, 64) == 15_592_355
  assert reference_edsr(4, 32, 256) == 43_089_923  # the paper's 43M


@pytest.mark.parametrize("name,scale,expected", [
    ("edsr_baseline", 4, 1_517_571),
    ("edsr_baseline", 2, 1_369_859),
    ("edsr_baseline", 3, reference_edsr(3, 16, 64)),
    ("edsr", 4, 43_089_923),
    ("rcan", 4, 15_592_355),
    ("rcan_small", 4, reference_rcan(4, 10, 6, 64)),
    ("edsr_8x32", 3, reference_edsr(3, 8, 32)),
    ("sr_tiny", 2, reference_edsr(2, 1, 8)),
])
def test_param_counts_equal_the_reference_sums(name, scale, expected):
  assert count(name, scale) == expected


def test_param_counts_of_the_generic_constructors_and_other_channel_counts():
  assert count("edsr_custom", 4, num_blocks=3, features=24) == reference_edsr(4, 3, 24)
  assert count("rcan_custom", 3, num_groups=2, num_blocks=3, features=32, reduction=8) == reference_rcan(
      3, 2, 3, 32, 8)
  grey = create_model("edsr_2x16", scale=2)
  assert param_count(abstract_variables(grey, channels=1)["params"]) == reference_edsr(2, 2, 16, colors=1)


def test_param_counts_tool_and_docs_table():
  """docs/models.md holds tools/param_counts.py's super-resolution table: every SR model, and for the cheap
  ones the tool's rows (with the counts traced here) verbatim."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location("param_counts", os.path.join(root, "tools", "param_counts.py"))
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  docs = open(os.path.join(root, "docs", "models.md")).read()
  header = tool.sr_markdown([]).splitlines()[0]
  assert header in docs, "docs/models.md lost the super-resolution table printed by tools/param_counts.py"
  table = docs.split(header)[1].strip().split("\n\n")[0].splitlines()[1:]
  assert [row.split("|")[1].strip().strip("`") for row in table] == [n for n in MODELS if n in SR_MODELS]
  assert [n for n in MODELS if tool.is_super_resolution(n)] == [n for n in MODELS if n in SR_MODELS]
  for name in ("sr_tiny", "edsr_2x16"):
    assert tool.sr_markdown_row(name, [count(name, s) for s in tool.SR_SCALES]) in table


def test_registry():
  assert set(SR_MODELS) <= set(MODELS)
  model = create_model("edsr_baseline", scale=4)
  assert isinstance(model, EDSR)
  assert (model.scale, model.num_blocks, model.features, model.res_scale) == (4, 16, 64, 1.0)
  big = create_model("edsr", scale=2)
  assert (big.num_blocks, big.features, big.res_scale) == (32, 256, 0.1)
  small = create_model("rcan_small", scale=4, dtype="bfloat16")
  assert isinstance(small, RCAN) and small.dtype == jnp.bfloat16
  assert (small.num_groups, small.num_blocks, small.features, small.reduction) == (10, 6, 64, 16)
  with pytest.raises(KDJaxError, match="does not classify"):
    create_model("edsr_baseline", 10)
  with pytest.raises(KDJaxError, match="needs scale"):
    create_model("rcan")


@pytest.mark.parametrize("name", ["edsr_baseline", "rcan_small", "edsr_custom", "sr_tiny"])
@pytest.mark.parametrize("scale", [1, 5, 8, 2.0])
def test_unsupported_scale_raises(name, scale):
  with pytest.raises(KDJaxError, match="2, 3 or 4"):
    create_model(name, scale=scale)


def test_unsupported_scale_of_a_directly_built_module_raises_at_init():
  with pytest.raises(KDJaxError, match="2, 3 or 4"):
    abstract_variables(EDSR(scale=8, num_blocks=1, features=8))


def test_bad_shapes_raise():
  with pytest.raises(KDJaxError, match="reduction"):
    create_model("rcan_custom", scale=2, features=8, reduction=16)  # 8 // 16 = 0 attention channels
  with pytest.raises(KDJaxError, match="num_blocks"):
    create_model("edsr_custom", scale=2, num_blocks=0)
  with pytest.raises(KDJaxError, match="NHWC"):
    create_model("sr_tiny", scale=2).init(jax.random.key(0), jnp.zeros((1, 8, 8)))


def test_bfloat16_compute_keeps_float32_params():
  model = create_model("edsr_2x16", scale=2, dtype="bfloat16")
  variables = abstract_variables(model)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((BATCH, H, W, 3))), variables)
  assert out.prediction.dtype == jnp.bfloat16 and all(s.dtype == jnp.bfloat16 for s in out.stages)


@pytest.mark.parametrize("name", ["edsr", "rcan"])
def test_big_models_shapes(name):
  out, _ = traced(name, 4)
  width = 256 if name == "edsr" else 64
  assert out.prediction.shape == (1, 48, 40, 3)
  assert len(out.stages) == (32 if name == "edsr" else 10)
  assert all(s.shape == (1, 12, 10, width) for s in out.stages)
  assert out.embedding.shape == (1, width)


# ----------------------------------------------------------------------------------------------------------
# Forward passes of tiny models (each compiled once; variables are an argument, so altered copies reuse it).
# ----------------------------------------------------------------------------------------------------------

TINY_RCAN = dict(num_groups=3, num_blocks=2, features=16, reduction=4)


def build(name: str, scale: int, **kwargs):
  if name == "tiny_rcan":
    return rcan_custom(scale, **TINY_RCAN, **kwargs)
  return create_model(name, scale=scale, **kwargs)


def numpy_variables(abstract, seed: int = 0):
  """U(+-1/sqrt(fan_in)) weights and biases drawn with numpy (the init's distribution, without compiling an
  RNG kernel per shape; test_init_is_pytorchs_default runs the real init)."""
  rng = np.random.default_rng(seed)

  def fill(tree):
    if "kernel" in tree:  # a conv: its bias shares the kernel's fan_in
      bound = 1.0 / math.sqrt(np.prod(tree["kernel"].shape[:-1]))
      return {k: rng.uniform(-bound, bound, size=v.shape).astype(v.dtype) for k, v in tree.items()}
    return {k: fill(v) for k, v in tree.items()}

  return fill(abstract)


@functools.lru_cache(maxsize=None)
def forward(name: str, scale: int, channels: int):
  """(model, input, variables, jitted apply of the variables)."""
  model = build(name, scale)
  x = np.random.default_rng(1).random((BATCH, H, W, channels)).astype(np.float32)
  variables = numpy_variables(abstract_variables(model, channels))
  return model, x, variables, jax.jit(lambda v: model.apply(v, x, train=False))


def _set(variables, path, value_fn):
  def replace(p, leaf):
    return value_fn(leaf) if tuple(k.key for k in p) == path else leaf

  return jax.tree_util.tree_map_with_path(replace, variables)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes(scale, channels):
  _, _, variables, run = forward("sr_tiny", scale, channels)
  out = run(variables)
  assert isinstance(out, ModelOutput)
  chex.assert_shape(out.prediction, (BATCH, H * scale, W * scale, channels))
  chex.assert_tree_all_finite(out)
  assert len(out.stages) == 1 and out.stages[0].shape == (BATCH, H, W, 8)
  assert out.embedding.shape == (BATCH, 8)


@pytest.mark.parametrize("name,scale,num_stages,width", [
    ("edsr_2x16", 4, 2, 16), ("sr_tiny", 2, 1, 8), ("tiny_rcan", 3, 3, 16)])
def test_stages_and_embedding(name, scale, num_stages, width):
  _, _, variables, run = forward(name, scale, 3)
  out = run(variables)
  chex.assert_shape(out.prediction, (BATCH, H * scale, W * scale, 3))
  assert len(out.stages) == num_stages
  assert all(s.shape == (BATCH, H, W, width) for s in out.stages)
  chex.assert_trees_all_equal(out.preact_stages, out.stages)  # no unit ends in an activation
  assert out.embedding.shape == (BATCH, width)
  # Each unit changes its input (none is accidentally skipped).
  for a, b in zip(out.stages, out.stages[1:]):
    assert not np.allclose(a, b)


@pytest.mark.parametrize("name,unit", [("edsr_2x16", ("block1", "conv2")), ("tiny_rcan", ("group1", "conv"))])
def test_residual_unit_is_identity_when_its_last_conv_is_zero(name, unit):
  _, _, variables, run = forward(name, 2, 3)
  probe = variables
  for leaf in ("kernel", "bias"):
    probe = _set(probe, ("params", *unit, leaf), np.zeros_like)
  out = run(probe)
  np.testing.assert_allclose(out.stages[1], out.stages[0], rtol=0, atol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_mean_shift_is_added_back(channels):
  """With the tail conv zeroed the prediction is the mean alone: DIV2K's RGB mean, or for one channel the
  mean of its three values."""
  _, _, variables, run = forward("sr_tiny", 2, channels)
  probe = variables
  for leaf in ("kernel", "bias"):
    probe = _set(probe, ("params", "tail", leaf), np.zeros_like)
  prediction = np.asarray(run(probe).prediction)
  expected = DIV2K_RGB_MEAN if channels == 3 else (np.mean(DIV2K_RGB_MEAN),)
  np.testing.assert_allclose(channel_mean(channels), expected, rtol=1e-7)
  np.testing.assert_allclose(prediction, np.broadcast_to(np.float32(expected), prediction.shape), rtol=1e-6)


def test_mean_shift_is_subtracted_at_the_input():
  """A constant image equal to the mean enters the head as zeros, so the head conv gives its bias alone."""
  model, _, variables, _ = forward("sr_tiny", 2, 3)
  x = np.broadcast_to(np.float32(DIV2K_RGB_MEAN), (1, H, W, 3))
  captured = jax.jit(lambda v: model.apply(v, x, capture_intermediates=lambda m, _: m.name == "head",
                                           mutable=["intermediates"]))(variables)[1]
  head = np.asarray(captured["intermediates"]["head"]["__call__"][0])
  np.testing.assert_allclose(head, np.broadcast_to(variables["params"]["head"]["bias"], head.shape), atol=1e-6)


def test_rgb_range_is_a_bias_rescaling_for_edsr():
  """EDSR is positively homogeneous in its input and biases together, so computing on [0, 255] pixels
  (`rgb_range` 255, the references' arithmetic) with every bias times 255 gives the same image."""
  _, x, variables, run = forward("sr_tiny", 2, 3)
  wide = EDSR(scale=2, num_blocks=1, features=8, rgb_range=255.0)
  scaled = jax.tree_util.tree_map_with_path(lambda p, v: v * 255.0 if p[-1].key == "bias" else v, variables)
  wide_prediction = jax.jit(lambda v: wide.apply(v, x).prediction)(scaled)
  np.testing.assert_allclose(wide_prediction, run(variables).prediction, rtol=1e-4, atol=1e-5)


def test_init_is_pytorchs_default():
  """Weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = k*k*C_in, as PyTorch's nn.Conv2d
  default (kaiming_uniform with a = sqrt(5)) that the references keep."""
  model = create_model("edsr_2x16", scale=2)
  variables = model.init(jax.random.key(0, impl="rbg"), jnp.zeros((1, 4, 4, 3)))
  chex.assert_trees_all_equal_shapes_and_dtypes(variables, abstract_variables(model))
  for module in jax.tree.leaves(variables["params"], is_leaf=lambda d: isinstance(d, dict) and "kernel" in d):
    kernel, bias = np.asarray(module["kernel"]), np.asarray(module["bias"])
    bound = 1.0 / math.sqrt(np.prod(kernel.shape[:-1]))
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    assert np.abs(bias).max() > 0  # not zero-initialised
  kernel = np.asarray(variables["params"]["upsampler"]["conv0"]["kernel"])  # [3, 3, 16, 64]
  np.testing.assert_allclose(kernel.std(), 1.0 / math.sqrt(3 * 9 * 16), rtol=0.05)  # U(-b, b) has std b/sqrt(3)
