"""The CIFAR KD model zoo beyond the ResNets/WRNs: VGG8/11/13, MobileNetV2, ShuffleNet V1/V2, ResNet-50.

Three kinds of checks, cheapest first:
  - shapes and parameter counts of every new model on 32x32 inputs, from `jax.eval_shape` (traced, not
    compiled). The counts are compared exactly with an independent re-count of RepDistiller's PyTorch
    definitions (the `_repdistiller_*` functions below, written from reading its `models/*.py`) and within
    1% with the counts the CIFAR-100 KD tables print;
  - a few kernel shapes that pin down grouping and the reference's quirks;
  - one compiled forward function per architecture (five, batch 2, 8x8 inputs) that runs train and eval
    mode, called twice: with ordinary variables (contract, feature taps, BatchNorm state) and with "probe"
    variables that zero or fix one layer, which makes the wiring visible (residual adds, concatenation
    order, channel shuffle, ReLU placement).
vgg8, vgg11 and mobilenetv2 (width 1) share their code with vgg13 and mobilenetv2_half and differ only in
configuration, which the shape and count checks cover; test_models.py also runs every registered model.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax.errors import KDJaxError
from kd_jax.models import MODELS, ModelOutput, create_model, model_names, param_count
from kd_jax.models.shufflenet import channel_shuffle

from helpers import numpy_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW_MODELS = ("vgg8", "vgg11", "vgg13", "mobilenetv2", "mobilenetv2_half", "shufflenetv1", "shufflenetv2",
              "resnet50")
BATCH = 2
_VGG_STAGES = [(16, 16, 128), (8, 8, 256), (4, 4, 512), (4, 4, 512)]
# name -> (stage shapes [H, W, C] on 32x32 inputs, embedding width)
SHAPES_32 = {
    "vgg8": (_VGG_STAGES, 512),
    "vgg11": (_VGG_STAGES, 512),
    "vgg13": (_VGG_STAGES, 512),
    "mobilenetv2": ([(16, 16, 24), (8, 8, 32), (4, 4, 96), (2, 2, 320)], 1280),
    "mobilenetv2_half": ([(16, 16, 12), (8, 8, 16), (4, 4, 48), (2, 2, 160)], 1280),
    "shufflenetv1": ([(16, 16, 240), (8, 8, 480), (4, 4, 960)], 960),
    "shufflenetv2": ([(16, 16, 116), (8, 8, 232), (4, 4, 464)], 1024),
    "resnet50": ([(32, 32, 256), (16, 16, 512), (8, 8, 1024), (4, 4, 2048)], 2048),
}
# CIFAR-100 counts (millions) the KD tables print for RepDistiller's models (vgg8 is 3,965,028, printed
# truncated as 3.96M).
REPORTED_MILLIONS = {"vgg8": 3.96, "vgg13": 9.46, "mobilenetv2_half": 0.81, "shufflenetv1": 0.95,
                     "shufflenetv2": 1.36, "resnet50": 23.71}


# ----------------------------------------------------------------------------------------------------------
# An independent count of RepDistiller's definitions (PyTorch layer by layer, biases where it has them).
# ----------------------------------------------------------------------------------------------------------

def _conv(c_in, c_out, k, groups=1, bias=False):
  return k * k * (c_in // groups) * c_out + (c_out if bias else 0)


def _bn(c):
  return 2 * c


def _linear(d, n):
  return d * n + n


def _repdistiller_vgg(cfg, n):
  total, c_in = 0, 3
  for block in cfg:
    for v in block:
      total += _conv(c_in, v, 3, bias=True) + _bn(v)  # nn.Conv2d's default bias=True is kept
      c_in = v
  return total + _linear(512, n)


def _repdistiller_mobilenetv2(t, w, n):
  setting = [(1, 16, 1), (t, 24, 2), (t, 32, 3), (t, 64, 4), (t, 96, 3), (t, 160, 3), (t, 320, 1)]
  c_in = int(32 * w)
  total = _conv(3, c_in, 3) + _bn(c_in)
  for ratio, c, blocks in setting:
    c_out = int(c * w)
    for _ in range(blocks):
      h = c_in * ratio
      total += (_conv(c_in, h, 1) + _bn(h) + _conv(h, h, 3, groups=h) + _bn(h) + _conv(h, c_out, 1)
                + _bn(c_out))
      c_in = c_out
  last = int(1280 * w) if w > 1 else 1280
  return total + _conv(c_in, last, 1) + _bn(last) + _linear(last, n)


def _repdistiller_shufflev1(n):
  total, c_in = _conv(3, 24, 1) + _bn(24), 24
  for out, blocks in zip((240, 480, 960), (4, 8, 4)):
    for i in range(blocks):
      branch = out - c_in if i == 0 else out
      mid, g = branch // 4, (1 if c_in == 24 else 3)
      total += (_conv(c_in, mid, 1, groups=g) + _bn(mid) + _conv(mid, mid, 3, groups=mid) + _bn(mid)
                + _conv(mid, branch, 1, groups=3) + _bn(branch))
      c_in = out
  return total + _linear(960, n)


def _repdistiller_shufflev2(n):
  total, c_in = _conv(3, 24, 1) + _bn(24), 24
  for out, blocks in zip((116, 232, 464), (3, 7, 3)):
    mid = out // 2
    total += (_conv(c_in, c_in, 3, groups=c_in) + _bn(c_in) + _conv(c_in, mid, 1) + _bn(mid)
              + _conv(c_in, mid, 1) + _bn(mid) + _conv(mid, mid, 3, groups=mid) + _bn(mid)
              + _conv(mid, mid, 1) + _bn(mid))
    total += blocks * (2 * (_conv(mid, mid, 1) + _bn(mid)) + _conv(mid, mid, 3, groups=mid) + _bn(mid))
    c_in = out
  return total + _conv(464, 1024, 1) + _bn(1024) + _linear(1024, n)


def _repdistiller_resnet50(n):
  total, c_in = _conv(3, 64, 3) + _bn(64), 64
  for planes, blocks, stride in zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2)):
    for i in range(blocks):
      total += (_conv(c_in, planes, 1) + _bn(planes) + _conv(planes, planes, 3) + _bn(planes)
                + _conv(planes, 4 * planes, 1) + _bn(4 * planes))
      if (stride if i == 0 else 1) != 1 or c_in != 4 * planes:
        total += _conv(c_in, 4 * planes, 1) + _bn(4 * planes)
      c_in = 4 * planes
  return total + _linear(2048, n)


REPDISTILLER_COUNT = {
    "vgg8": lambda n: _repdistiller_vgg([[64], [128], [256], [512], [512]], n),
    "vgg11": lambda n: _repdistiller_vgg([[64], [128], [256, 256], [512, 512], [512, 512]], n),
    "vgg13": lambda n: _repdistiller_vgg([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], n),
    "mobilenetv2": lambda n: _repdistiller_mobilenetv2(6, 1.0, n),
    "mobilenetv2_half": lambda n: _repdistiller_mobilenetv2(6, 0.5, n),
    "shufflenetv1": _repdistiller_shufflev1,
    "shufflenetv2": _repdistiller_shufflev2,
    "resnet50": _repdistiller_resnet50,
}


# ----------------------------------------------------------------------------------------------------------
# Abstract (traced only) models on 32x32 inputs.
# ----------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def abstract(name: str, num_classes: int = 100, size: int = 32):
  """(ModelOutput, variables) as shapes, from one trace of `init_with_output`."""
  model = create_model(name, num_classes)
  x = np.zeros((BATCH, size, size, 3), np.float32)
  return jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=False))


def test_registered():
  assert set(NEW_MODELS) <= set(model_names())
  assert model_names() == sorted(MODELS)


@pytest.mark.parametrize("name", NEW_MODELS)
def test_output_structure_on_32x32(name):
  out, variables = abstract(name)
  stage_shapes, embedding_dim = SHAPES_32[name]
  assert isinstance(out, ModelOutput)
  assert out.logits.shape == (BATCH, 100)
  assert [s.shape for s in out.stages] == [(BATCH, *s) for s in stage_shapes]
  assert [s.shape for s in out.preact_stages] == [s.shape for s in out.stages]
  assert out.embedding.shape == (BATCH, embedding_dim)
  assert variables["params"]["fc"]["kernel"].shape == (embedding_dim, 100)
  assert set(variables) == {"params", "batch_stats"}


@pytest.mark.parametrize("name", NEW_MODELS)
def test_param_count_matches_repdistiller(name):
  count = param_count(abstract(name)[1]["params"])
  assert count == REPDISTILLER_COUNT[name](100)
  if name in REPORTED_MILLIONS:
    assert abs(count / 1e6 - REPORTED_MILLIONS[name]) <= 0.01 * REPORTED_MILLIONS[name], count


def test_param_count_scales_with_classes_through_the_head_only():
  ten = param_count(abstract("vgg8", 10)[1]["params"])
  assert ten == REPDISTILLER_COUNT["vgg8"](10) == param_count(abstract("vgg8")[1]["params"]) - 90 * 513


def test_vgg_pools_before_the_last_block_only_on_64x64():
  """RepDistiller's rule: on 32x32 blocks 3 and 4 share 4x4; on 64x64 (Tiny-ImageNet) a fourth pool runs."""
  out, _ = abstract("vgg8", 100, 64)
  assert [s.shape[1:3] for s in out.stages] == [(32, 32), (16, 16), (8, 8), (4, 4)]


def test_kernel_shapes_pin_down_grouping_and_reference_details():
  def params(name):
    return abstract(name)[1]["params"]

  vgg = params("vgg13")
  assert vgg["block1_conv1"]["kernel"].shape == (3, 3, 128, 128)
  assert vgg["block4_conv1"]["bias"].shape == (512,)  # conv bias kept before BN, as in the reference
  mb = params("mobilenetv2_half")
  assert mb["conv1"]["kernel"].shape == (3, 3, 3, 16)
  assert mb["blocks0_0"]["conv1"]["kernel"].shape == (1, 1, 16, 16)  # ratio 1, yet a 1x1 expansion conv
  assert mb["blocks1_0"]["conv2"]["kernel"].shape == (3, 3, 1, 48)  # depthwise, T = 6 on 8 channels
  assert mb["conv2"]["kernel"].shape == (1, 1, 160, 1280)  # head stays 1280 for width <= 1
  v1 = params("shufflenetv1")
  assert v1["layer1_0"]["conv1"]["kernel"].shape == (1, 1, 24, 54)  # first unit: ungrouped
  assert v1["layer1_0"]["conv2"]["kernel"].shape == (3, 3, 1, 54)
  assert v1["layer1_0"]["conv3"]["kernel"].shape == (1, 1, 18, 216)  # 3 groups, 240 - 24 channels out
  assert v1["layer2_0"]["conv1"]["kernel"].shape == (1, 1, 80, 60)  # grouped from then on
  assert len([k for k in v1 if k.startswith("layer2_")]) == 8
  v2 = params("shufflenetv2")
  down = v2["layer1_0"]
  assert [down[f"conv{i}"]["kernel"].shape for i in range(1, 6)] == [
      (3, 3, 1, 24), (1, 1, 24, 58), (1, 1, 24, 58), (3, 3, 1, 58), (1, 1, 58, 58)]
  assert v2["layer1_3"]["conv1"]["kernel"].shape == (1, 1, 58, 58)
  assert "layer1_4" not in v2 and "layer2_7" in v2 and "layer3_3" in v2
  assert v2["conv2"]["kernel"].shape == (1, 1, 464, 1024)
  r50 = params("resnet50")
  assert r50["conv1"]["kernel"].shape == (3, 3, 3, 64)  # CIFAR stem, not 7x7
  assert r50["layer1_0"]["downsample_conv"]["kernel"].shape == (1, 1, 64, 256)
  assert "downsample_conv" not in r50["layer1_1"]
  assert r50["layer3_0"]["conv2"]["kernel"].shape == (3, 3, 256, 256)
  assert len([k for k in r50 if k.startswith("layer3_")]) == 6


def test_channel_shuffle_matches_the_nchw_reference_order():
  x = jnp.arange(6.0).reshape(1, 1, 1, 6)
  # [N, g, C/g] -> [N, C/g, g]: channel g*(C/g) + j goes to j*g + g.
  np.testing.assert_array_equal(channel_shuffle(x, 3)[0, 0, 0], [0, 2, 4, 1, 3, 5])
  np.testing.assert_array_equal(channel_shuffle(x, 2)[0, 0, 0], [0, 3, 1, 4, 2, 5])
  np.testing.assert_array_equal(channel_shuffle(x, 1), x)
  with pytest.raises(KDJaxError, match="groups"):
    channel_shuffle(x, 4)


def test_mobilenetv2_options_and_errors():
  model = create_model("mobilenetv2", 100, width_mult=0.75, expand_ratio=4)
  assert (model.width_mult, model.expand_ratio) == (0.75, 4)
  half = create_model("mobilenetv2_half", 100)
  assert (half.width_mult, half.expand_ratio) == (0.5, 6)
  with pytest.raises(KDJaxError, match="width_mult"):
    create_model("mobilenetv2", 100, width_mult=0.0)
  with pytest.raises(KDJaxError, match="expand_ratio"):
    create_model("mobilenetv2", 100, expand_ratio=0)
  with pytest.raises(KDJaxError, match="unknown keyword"):
    create_model("vgg13", 100, width_mult=2)


def test_bfloat16_compute_keeps_float32_params():
  model = create_model("shufflenetv1", 10, dtype="bfloat16")
  x = np.zeros((BATCH, 32, 32, 3), np.float32)
  out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=False))
  assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
  assert out.logits.dtype == jnp.bfloat16 and all(s.dtype == jnp.bfloat16 for s in out.preact_stages)


# ----------------------------------------------------------------------------------------------------------
# Compiled forward passes: one per architecture.
# ----------------------------------------------------------------------------------------------------------

FORWARD_SIZE = 8  # the smallest VGG's three pools allow; unoptimised code runs slower on larger maps
NUM_CLASSES = 100  # as in `abstract`, whose variable shapes are reused
# Modules whose outputs the probe checks read (paths from the root).
CAPTURE = {
    "vgg13": [("block0_bn0",), ("block0_conv1",)],
    "mobilenetv2_half": [("blocks0_0",), ("blocks1_0",), ("blocks1_1",), ("blocks2_0",)],
    "shufflenetv1": [("bn1",), ("layer1_0",), ("layer1_1",), ("layer2_0",), ("layer2_1",)],
    "shufflenetv2": [("layer1_0",), ("layer1_2",), ("layer1_3",)],
    "resnet50": [("layer1_0",), ("layer1_1",)],
}
FORWARD_MODELS = list(CAPTURE)


def _set(variables, path, value_fn):
  """A copy of `variables` with the leaf at `path` (e.g. ("params", "layer1_1", "bn3", "scale")) replaced."""
  def replace(p, leaf):
    return value_fn(leaf) if tuple(k.key for k in p) == path else leaf

  return jax.tree_util.tree_map_with_path(replace, variables)


def _zero_bn(variables, *module_path):
  """Zero a BN's scale and bias: in eval mode it then outputs exactly 0."""
  for leaf in ("scale", "bias"):
    variables = _set(variables, ("params", *module_path, leaf), np.zeros_like)
  return variables


@functools.lru_cache(maxsize=None)
def forward(name: str):
  """A compiled function of the variables: (train output, train updates, eval output, eval state with the
  captured module outputs), plus the model, input and ordinary variables.

  Compiled with XLA's optimisations off: compiling, not running, dominates on a CPU, and this halves it."""
  model = create_model(name, NUM_CLASSES)
  shape = (BATCH, FORWARD_SIZE, FORWARD_SIZE, 3)
  x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  variables = numpy_variables(abstract(name)[1])  # variable shapes do not depend on the input size
  paths = set(CAPTURE[name])

  def run(v):
    train_out, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
    eval_out, state = model.apply(v, x, train=False, mutable=["batch_stats", "intermediates"],
                                  capture_intermediates=lambda mdl, method: mdl.path in paths)
    return train_out, updates, eval_out, state

  lowered = jax.jit(run).lower(variables)
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    compiled = lowered.compile()
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)
  return model, x, variables, lambda v: jax.device_get(compiled(v))


@functools.lru_cache(maxsize=None)
def ordinary(name: str):
  _, _, variables, run = forward(name)
  return variables, run(variables)


def captured(state, module: str) -> np.ndarray:
  """A module's captured output (the first element when a block returns (out, preact))."""
  value = state["intermediates"][module]["__call__"][0]
  return value[0] if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", FORWARD_MODELS)
def test_forward_contract_and_feature_taps(name):
  variables, (train_out, _, eval_out, _) = ordinary(name)
  fc = variables["params"]["fc"]
  for out in (train_out, eval_out):
    chex.assert_shape(out.logits, (BATCH, NUM_CLASSES))
    chex.assert_tree_all_finite(out)
    scale = np.abs(out.logits).max()  # float32 matmul in a different order: compare at the logits' scale
    np.testing.assert_allclose(out.logits, out.embedding @ fc["kernel"] + fc["bias"], atol=2e-5 * scale)
    assert np.all(out.embedding >= 0)
    for stage, preact in zip(out.stages, out.preact_stages):
      if name.startswith("mobilenetv2"):
        np.testing.assert_array_equal(preact, stage)  # linear bottleneck: no final ReLU
      else:
        np.testing.assert_array_equal(np.maximum(preact, 0), stage)
        assert np.any(preact < 0)
    if name in ("vgg13", "shufflenetv1", "resnet50"):
      np.testing.assert_allclose(out.embedding, out.stages[-1].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  assert not np.allclose(train_out.logits, eval_out.logits)


@pytest.mark.parametrize("name", FORWARD_MODELS)
def test_train_mode_updates_every_batch_norm_and_eval_mode_none(name):
  variables, (_, updates, _, eval_state) = ordinary(name)
  old, new = variables["batch_stats"], updates["batch_stats"]
  chex.assert_trees_all_equal_shapes(old, new)
  old_by_path = dict(jax.tree_util.tree_leaves_with_path(old))
  moved = [not np.allclose(v, old_by_path[p]) for p, v in jax.tree_util.tree_leaves_with_path(new)]
  assert moved and all(moved)  # every running mean and var (momentum 0.9 towards the batch statistics)
  chex.assert_trees_all_equal(eval_state["batch_stats"], old)


def test_vgg_preact_is_the_blocks_last_batch_norm():
  """In train mode a BN output has, per channel, the BN bias as mean and scale^2 as (biased) variance."""
  variables, (train_out, *_) = ordinary("vgg13")
  for i, preact in enumerate(train_out.preact_stages):
    bn = variables["params"][f"block{i + 1}_bn1"]
    flat = np.asarray(preact).reshape(-1, preact.shape[-1])
    np.testing.assert_allclose(flat.mean(0), bn["bias"], atol=1e-4)
    if flat.shape[0] > 2:  # a 1x1 map over a batch of 2 leaves too few samples for the variance
      np.testing.assert_allclose(flat.var(0), np.asarray(bn["scale"]) ** 2, rtol=0.05, atol=1e-3)


def test_vgg_relu_between_convs_of_a_block():
  """With the second conv of block 0 set to the identity, its output is relu(first BN)."""
  model, x, variables, run = forward("vgg13")
  identity = np.zeros((3, 3, 64, 64), np.float32)
  identity[1, 1] = np.eye(64)
  probe = _set(variables, ("params", "block0_conv1", "kernel"), lambda _: identity)
  probe = _set(probe, ("params", "block0_conv1", "bias"), np.zeros_like)
  state = run(probe)[3]
  np.testing.assert_allclose(captured(state, "block0_conv1"), np.maximum(captured(state, "block0_bn0"), 0),
                             atol=1e-6)


def test_mobilenetv2_residual_only_for_stride_1_and_equal_widths():
  _, _, variables, run = forward("mobilenetv2_half")
  probe = variables
  for block in ("blocks0_0", "blocks1_1", "blocks2_0"):
    probe = _zero_bn(probe, block, "bn3")
  state = run(probe)[3]
  # A zeroed projection leaves only the shortcut: the input where there is one, zero where there is none
  # (blocks0_0 changes 16 -> 8 channels, blocks2_0 has stride 2).
  np.testing.assert_array_equal(captured(state, "blocks0_0"), 0.0)
  np.testing.assert_array_equal(captured(state, "blocks2_0"), 0.0)
  np.testing.assert_allclose(captured(state, "blocks1_1"), captured(state, "blocks1_0"), atol=1e-6)
  assert np.any(captured(state, "blocks1_0") != 0)


def test_shufflenetv1_shortcuts():
  _, _, variables, run = forward("shufflenetv1")
  probe = _zero_bn(_zero_bn(variables, "layer1_0", "bn3"), "layer1_1", "bn3")
  state = run(probe)[3]
  stem = np.maximum(captured(state, "bn1"), 0)  # [B, 8, 8, 24]
  first = captured(state, "layer1_0")  # [B, 4, 4, 240]: branch (216, zeroed) then the pooled input (24)
  np.testing.assert_array_equal(first[..., :216], 0.0)
  # 3x3/2 average pool with one pixel of zero padding that counts in the mean (PyTorch's default).
  padded = np.pad(stem, ((0, 0), (1, 1), (1, 1), (0, 0)))
  pooled = np.zeros((BATCH, 4, 4, 24), np.float32)
  for i in range(4):
    for j in range(4):
      pooled[:, i, j] = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum((1, 2)) / 9
  np.testing.assert_allclose(first[..., 216:], pooled, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(captured(state, "layer1_1"), first, atol=1e-6)  # stride 1: identity shortcut


def test_shufflenetv1_channel_shuffle_mixes_the_groups():
  """Keep only group 0 of layer2_1's first grouped conv (120 = 3 x 40 outputs). Without the shuffle, only
  the last conv's group 0 (branch channels 0..159) could see the input; with it, every group does."""
  _, _, variables, run = forward("shufflenetv1")

  def keep_group_0(kernel):  # [1, 1, 160, 120]
    kernel = kernel.copy()
    kernel[..., 40:] = 0.0
    return kernel

  state = run(_set(variables, ("params", "layer2_1", "conv1", "kernel"), keep_group_0))[3]
  x_in = captured(state, "layer2_0")
  branch = state["intermediates"]["layer2_1"]["__call__"][0][1] - x_in  # preact = branch + input
  # Input-independent channels still vary over positions (zero padding), so compare the two images.
  differs = np.abs(branch[0] - branch[1]).reshape(-1, 3, 160).max(axis=0)  # [group, channel]
  assert np.all(differs.max(axis=1) > 1e-3), "a group of the last grouped conv does not see the input"


def test_shufflenetv2_split_concat_and_shuffle():
  _, _, variables, run = forward("shufflenetv2")
  probe = _zero_bn(_zero_bn(variables, "layer1_3", "bn3"), "layer1_0", "bn2")
  for v, zeroed in ((variables, False), (probe, True)):
    state = run(v)[3]
    x_in = captured(state, "layer1_2")  # [B, 4, 4, 116]
    out, preact = state["intermediates"]["layer1_3"]["__call__"][0]
    # Shuffling [kept half, branch] with 2 groups interleaves them: even channels are the kept half.
    np.testing.assert_array_equal(out[..., 0::2], x_in[..., :58])
    np.testing.assert_array_equal(preact[..., 0::2], x_in[..., :58])
    if zeroed:
      np.testing.assert_array_equal(out[..., 1::2], 0.0)
      # The downsampling unit shuffles [left, right] the same way: a zeroed left branch empties the evens.
      down = captured(state, "layer1_0")
      np.testing.assert_array_equal(down[..., 0::2], 0.0)
      assert np.any(down[..., 1::2] > 0)
    else:
      assert np.any(preact[..., 1::2] < 0) and np.all(out[..., 1::2] >= 0)


def test_resnet50_identity_shortcut():
  _, _, variables, run = forward("resnet50")
  state = run(_zero_bn(variables, "layer1_1", "bn3"))[3]
  np.testing.assert_allclose(captured(state, "layer1_1"), captured(state, "layer1_0"), atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# tools/param_counts.py and docs/models.md.
# ----------------------------------------------------------------------------------------------------------

def _tool():
  path = os.path.join(ROOT, "tools", "param_counts.py")
  spec = importlib.util.spec_from_file_location("param_counts", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_param_counts_tool_and_docs_table():
  tool = _tool()
  docs = open(os.path.join(ROOT, "docs", "models.md")).read()
  header = tool.markdown([]).splitlines()[0]
  assert header in docs, "docs/models.md lost the table printed by tools/param_counts.py"
  table = docs.split(header)[1].strip().split("\n\n")[0].splitlines()[1:]
  assert [row.split("|")[1].strip().strip("`") for row in table] == list(MODELS)
  # The tool's rows for the new models (with the counts traced above) are in the docs verbatim.
  for name in NEW_MODELS:
    row = tool.markdown_row(name, param_count(abstract(name)[1]["params"]))
    assert row in table, row
  # And the tool counts what the tests count.
  assert tool.count("vgg8") == param_count(abstract("vgg8")[1]["params"])
