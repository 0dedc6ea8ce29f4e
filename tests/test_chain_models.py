"""The models of the teacher-assistant chains: TAKD's plain CNNs (plane2..plane10, `plain_cnn`) and the WRN
kernel variants of Pacemaker KD (`kernel` = '2x3', '3x1_1x3', '1x3').

Shapes and parameter counts come from `jax.eval_shape` (traced, not compiled) and are compared with
counts worked out here, independently of the models' code: from the books' layer strings (spelled out
again below) for the plain CNNs, and from the 3x3 network's kernel shapes for the WRN variants. Two small
compiled forward passes check the plain CNN's feature taps and the 1x1 pool-skip rule on digits-sized
inputs; single convolutions check the variants' receptive fields and their CPU backward passes.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax.backends import Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models import MODELS, ModelOutput, PlainCNN, create_model, param_count
from kd_jax.models.plain_cnn import PLANE_CIFAR10_BOOK, PLANE_CIFAR100_BOOK
from kd_jax.models.wrn import WRN_KERNELS, kernel_conv

from helpers import numpy_variables

BATCH = 2
DEPTHS = ("2", "4", "6", "8", "10")
# The reference's books (`plain_cnn_cifar.py`), written out again from the TAKD code.
BOOKS = {
    10: {
        "2": "Conv16 MaxPool Conv16 MaxPool FC10",
        "4": "Conv16 Conv16 MaxPool Conv32 Conv32 MaxPool FC10",
        "6": "Conv16 Conv16 MaxPool Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool FC10",
        "8": "Conv16 Conv16 MaxPool Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128 MaxPool FC64 FC10",
        "10": ("Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128 MaxPool Conv256 Conv256 Conv256 "
               "Conv256 MaxPool FC128 FC10"),
    },
    100: {
        "2": "Conv32 MaxPool Conv32 MaxPool FC100",
        "4": "Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool FC100",
        "6": "Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128 FC100",
        "8": ("Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128 MaxPool Conv256 Conv256 MaxPool FC64 "
              "FC100"),
        "10": ("Conv32 Conv32 MaxPool Conv64 Conv64 MaxPool Conv128 Conv128 MaxPool Conv256 Conv256 Conv256 "
               "Conv256 MaxPool FC512 FC100"),
    },
}
# The counts docs/models.md prints (32x32x3 inputs).
PLANE_COUNTS = {
    10: {"2": 13_082, "4": 37_338, "6": 82_778, "8": 327_962, "10": 2_487_850},
    100: {"2": 215_172, "4": 475_652, "6": 1_107_204, "8": 1_246_276, "10": 2_931_460},
}
WRN_COUNTS_100 = {"wrn_40_4": 8_972_340, "wrn_40_4_2x3": 6_007_716, "wrn_40_4_3x1_1x3": 6_140_436,
                  "wrn_40_4_1x3": 3_043_092, "wrn_16_2": 703_284, "wrn_16_2_2x3": 477_348,
                  "wrn_16_2_3x1_1x3": 510_228, "wrn_16_2_1x3": 251_412}
VARIANTS = ("2x3", "3x1_1x3", "1x3")
NEW_NAMES = ("plane2", "plane4", "plane6", "plane8", "plane10", "wrn_40_4", "wrn_40_4_2x3", "wrn_40_4_3x1_1x3",
             "wrn_40_4_1x3", "wrn_16_2_2x3", "wrn_16_2_3x1_1x3", "wrn_16_2_1x3")


def reference_plane(spec: str, num_classes: int, size: int = 32, channels: int = 3):
  """(parameter count, [(H, W, C) of each group's output], embedding width) of a book entry, layer by layer:
  conv 9·cin·cout + cout (bias) + 2·cout (BN scale and bias); FC in·out + out; the last FC has num_classes
  outputs; a MaxPool halves H and W unless the map is already below 2 (kd_jax's small-input rule)."""
  layers = spec.split()
  n_fc = sum(layer.startswith("FC") for layer in layers)
  total, h, w, c, width, groups, open_group = 0, size, size, channels, None, [], False
  for layer in layers:
    if layer.startswith("Conv"):
      out = int(layer[4:])
      total += 9 * c * out + out + 2 * out
      c, open_group = out, True
    elif layer == "MaxPool":
      if h >= 2 and w >= 2:
        h, w = h // 2, w // 2
      groups.append((h, w, c))
      open_group = False
    else:
      if open_group:
        groups.append((h, w, c))
        open_group = False
      n_fc -= 1
      d_in = h * w * c if width is None else width
      d_out = num_classes if n_fc == 0 else int(layer[2:])
      total += d_in * d_out + d_out
      if n_fc:
        width = d_out
      else:
        embedding = d_in
  return total, groups, embedding


@functools.lru_cache(maxsize=None)
def abstract(name: str, num_classes: int, shape=(BATCH, 32, 32, 3), **kwargs):
  """(ModelOutput, variables) as shapes, from one trace of `init_with_output`."""
  model = create_model(name, num_classes, **kwargs)
  return jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros(shape), train=False))


def test_new_models_are_registered_and_build():
  for name in NEW_NAMES:
    assert name in MODELS
    assert isinstance(create_model(name, 10), nn.Module)
  assert isinstance(create_model("plain_cnn", 10, layers=("Conv8", "MaxPool", "FC10")), PlainCNN)
  assert create_model("wrn", 10, depth=16, widen_factor=2, kernel="1x3").kernel == "1x3"
  assert create_model("wrn_16_2", 10).kernel == "3x3"


# ----------------------------------------------------------------------------------------------------------
# Plain CNNs.
# ----------------------------------------------------------------------------------------------------------

def test_books_are_the_references():
  assert {d: " ".join(spec) for d, spec in PLANE_CIFAR10_BOOK.items()} == BOOKS[10]
  assert {d: " ".join(spec) for d, spec in PLANE_CIFAR100_BOOK.items()} == BOOKS[100]


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("depth", DEPTHS)
def test_plane_param_count_and_outputs_on_32x32(depth, num_classes):
  out, variables = abstract(f"plane{depth}", num_classes)
  expected, groups, embedding = reference_plane(BOOKS[num_classes][depth], num_classes)
  assert param_count(variables["params"]) == expected == PLANE_COUNTS[num_classes][depth]
  assert isinstance(out, ModelOutput)
  assert out.logits.shape == (BATCH, num_classes)
  assert [s.shape for s in out.stages] == [(BATCH, *g) for g in groups]
  assert [s.shape for s in out.preact_stages] == [s.shape for s in out.stages]
  assert out.embedding.shape == (BATCH, embedding)
  assert variables["params"]["fc"]["kernel"].shape == (embedding, num_classes)
  assert set(variables) == {"params", "batch_stats"}


def test_book_switch_on_num_classes():
  """The CIFAR-10 book for exactly 10 classes, the CIFAR-100 book otherwise; the last FC is num_classes."""
  for n, first, book in ((10, 16, 10), (100, 32, 100), (20, 32, 100), (2, 32, 100)):
    model = create_model("plane2", n)
    assert model.layers == tuple(BOOKS[book]["2"].split()[:-1]) + (f"FC{n}",)
    params = abstract("plane2", n)[1]["params"]
    assert params["conv0"]["kernel"].shape == (3, 3, 3, first)
    assert params["conv0"]["bias"].shape == (first,)
    assert params["fc"]["kernel"].shape[-1] == n
  params = abstract("plane10", 100)[1]["params"]
  assert params["fc_hidden0"]["kernel"].shape == (2 * 2 * 256, 512) and "fc_hidden1" not in params


def test_plain_cnn_generic_replaces_the_last_fc_size():
  model = create_model("plain_cnn", 7, layers=["Conv8", "MaxPool", "Conv8", "FC16", "FC10"])
  assert model.layers == ("Conv8", "MaxPool", "Conv8", "FC16", "FC7")
  out, variables = abstract("plain_cnn", 7, (BATCH, 8, 8), layers=("Conv8", "MaxPool", "Conv8", "FC16", "FC10"))
  expected, groups, _ = reference_plane("Conv8 MaxPool Conv8 FC16 FC7", 7, size=8, channels=1)
  assert param_count(variables["params"]) == expected
  assert [s.shape[1:] for s in out.stages] == groups == [(4, 4, 8), (4, 4, 8)]
  assert out.embedding.shape == (BATCH, 16)


@pytest.mark.parametrize("layers,match", [
    (("Conv", "FC10"), "layer 0"),
    (("conv16", "FC10"), "layer 0"),
    (("Conv16", "FC0"), "layer 1"),
    (("Conv16", "Pool", "FC10"), "layer 1"),
    (("Conv16", "MaxPool2", "FC10"), "layer 1"),
    (("Conv16", 16, "FC10"), "layer 1"),
    (("FC10",), "no Conv"),
    (("Conv16", "MaxPool"), "no FC"),
    (("Conv16", "FC10", "Conv16", "FC10"), "after an FC"),
    (("MaxPool", "Conv16", "FC10"), "MaxPool does not follow"),
    (("Conv16", "MaxPool", "MaxPool", "FC10"), "MaxPool does not follow"),
    ("Conv16 FC10", "string"),
])
def test_malformed_spec(layers, match):
  with pytest.raises(KDJaxError, match=match):
    create_model("plain_cnn", 10, layers=layers)


def test_module_checks_the_classifier_size_and_input_rank():
  model = PlainCNN(num_classes=10, layers=("Conv8", "FC100"))
  with pytest.raises(KDJaxError, match="num_classes"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
  with pytest.raises(KDJaxError, match="NHWC"):
    jax.eval_shape(lambda: create_model("plane2", 10).init(jax.random.key(0), jnp.zeros((1, 64))))


@functools.lru_cache(maxsize=None)
def plane_forward(name: str, num_classes: int, shape):
  """Variables and (train output, BN updates, eval output) of one compiled call on random inputs."""
  model = create_model(name, num_classes)
  x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  variables = numpy_variables(abstract(name, num_classes, shape)[1])

  @jax.jit
  def run(v, x):
    train_out, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
    return train_out, updates, model.apply(v, x, train=False)

  return model, x, variables, jax.device_get(run(variables, x))


@pytest.mark.parametrize("name,num_classes,shape,sizes", [
    ("plane10", 10, (BATCH, 8, 8, 1), [4, 2, 1, 1]),  # the last pool meets a 1x1 map and is skipped
    ("plane6", 100, (BATCH, 8, 8, 3), [4, 2, 2]),  # the CIFAR-100 plane6 has no pool after its last group
])
def test_plane_forward_on_digits_sized_inputs(name, num_classes, shape, sizes):
  model, x, variables, (train_out, updates, eval_out) = plane_forward(name, num_classes, shape)
  _, groups, embedding = reference_plane(" ".join(model.layers), num_classes, shape[1], shape[-1])
  assert [g[0] for g in groups] == sizes
  fc = variables["params"]["fc"]
  for out in (train_out, eval_out):
    assert out.logits.shape == (BATCH, num_classes) and np.all(np.isfinite(out.logits))
    assert [s.shape for s in out.stages] == [(BATCH, *g) for g in groups]
    assert [s.shape[1:3] for s in out.stages] == [(s, s) for s in sizes]
    for stage, preact in zip(out.stages, out.preact_stages):
      np.testing.assert_array_equal(np.maximum(preact, 0), stage)
      assert np.any(preact < 0)
    assert out.embedding.shape == (BATCH, embedding)
    scale = np.abs(out.logits).max()
    np.testing.assert_allclose(out.logits, out.embedding @ fc["kernel"] + fc["bias"], atol=2e-5 * scale)
    assert np.all(out.embedding >= 0)
  if num_classes == 10:  # one hidden FC: the embedding is its ReLU output
    hidden = variables["params"]["fc_hidden0"]
    flat = eval_out.stages[-1].reshape(BATCH, -1)
    np.testing.assert_allclose(eval_out.embedding, np.maximum(flat @ hidden["kernel"] + hidden["bias"], 0),
                               rtol=1e-4, atol=1e-4)
  else:  # no hidden FC: the embedding is the flattened (NHWC) last group
    np.testing.assert_array_equal(eval_out.embedding, eval_out.stages[-1].reshape(BATCH, -1))
  assert not np.allclose(train_out.logits, eval_out.logits)
  moved = [not np.allclose(new, old) for new, old in zip(jax.tree.leaves(updates["batch_stats"]),
                                                         jax.tree.leaves(variables["batch_stats"]))]
  assert moved and all(moved)
  if shape[-1] == 1:  # a [B, H, W] input is one channel
    again = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x[..., 0])
    np.testing.assert_allclose(again.logits, eval_out.logits, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# WRN kernel variants.
# ----------------------------------------------------------------------------------------------------------

def _kernel_leaves(params):
  return [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "kernel"]


def expected_variant_count(params_3x3, kernel: str) -> int:
  """The 3x3 network's count with every (3, 3, cin, cout) kernel replaced by the variant's kernel(s)."""
  total = param_count(params_3x3)
  for shape in _kernel_leaves(params_3x3):
    if len(shape) == 4 and shape[:2] == (3, 3):
      cin, cout = shape[2:]
      replaced = {"2x3": 6 * cin * cout, "1x3": 3 * cin * cout, "3x1_1x3": 3 * cin * cout + 3 * cout * cout}
      total += replaced[kernel] - 9 * cin * cout
  return total


@pytest.mark.parametrize("size", [8, 32])
@pytest.mark.parametrize("kernel", VARIANTS)
def test_wrn_variant_shapes_and_count(kernel, size):
  shape = (BATCH, size, size, 3)
  ref_out, ref_vars = abstract("wrn_16_2", 10, shape)
  out, variables = abstract(f"wrn_16_2_{kernel}", 10, shape)
  assert jax.tree.map(lambda a: a.shape, out) == jax.tree.map(lambda a: a.shape, ref_out)
  assert [s.shape[1:3] for s in out.stages] == [(size, size), (size // 2, size // 2), (size // 4, size // 4)]
  assert param_count(variables["params"]) == expected_variant_count(ref_vars["params"], kernel)
  # Only the 3x3 kernels change: BN, shortcut and classifier shapes are the 3x3 network's.
  assert ref_vars["batch_stats"] == variables["batch_stats"]
  assert variables["params"]["block2_layer0"]["conv_shortcut"]["kernel"].shape == (1, 1, 32, 64)


@pytest.mark.parametrize("name", ["wrn_40_4", "wrn_40_4_2x3", "wrn_40_4_3x1_1x3", "wrn_40_4_1x3",
                                  "wrn_16_2", "wrn_16_2_2x3", "wrn_16_2_3x1_1x3", "wrn_16_2_1x3"])
def test_wrn_counts_on_cifar100(name):
  count = param_count(abstract(name, 100, (1, 32, 32, 3))[1]["params"])
  assert count == WRN_COUNTS_100[name]
  if name.count("_") > 2:  # a variant: the count its kernels imply from the 3x3 network's
    base, kernel = name[:8], name[9:]
    assert count == expected_variant_count(abstract(base, 100, (1, 32, 32, 3))[1]["params"], kernel)


def test_wrn_3x3_tree_is_unchanged_and_the_variants_trees():
  params = abstract("wrn_16_2", 10, (1, 8, 8, 3))[1]["params"]
  assert set(params) == {"conv1", "block1_layer0", "block1_layer1", "block2_layer0", "block2_layer1",
                         "block3_layer0", "block3_layer1", "bn1", "fc"}
  assert set(params["block1_layer0"]) == {"bn1", "conv1", "bn2", "conv2", "conv_shortcut"}
  assert set(params["block1_layer1"]) == {"bn1", "conv1", "bn2", "conv2"}
  assert set(params["conv1"]) == {"kernel"} and params["conv1"]["kernel"].shape == (3, 3, 3, 16)
  assert params["block3_layer1"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
  generic = abstract("wrn", 10, (1, 8, 8, 3), depth=16, widen_factor=2, kernel="3x3")[1]["params"]
  assert jax.tree.map(lambda a: a.shape, generic) == jax.tree.map(lambda a: a.shape, params)
  factorised = {"conv_3x1": {"kernel": (3, 1, 3, 16)}, "conv_1x3": {"kernel": (1, 3, 16, 16)}}
  for kernel, conv1 in (("2x3", {"kernel": (2, 3, 3, 16)}), ("1x3", {"kernel": (1, 3, 3, 16)}),
                        ("3x1_1x3", factorised)):
    variant = abstract(f"wrn_16_2_{kernel}", 10, (1, 8, 8, 3))[1]["params"]
    assert set(variant) == set(params)
    assert jax.tree.map(lambda a: a.shape, variant["conv1"]) == conv1
    assert set(variant["block1_layer0"]) == set(params["block1_layer0"])


def test_unknown_kernel():
  for build in (lambda: create_model("wrn", 10, depth=16, widen_factor=2, kernel="5x5"),
                lambda: kernel_conv("3x2", 8, 1, jnp.float32, jnp.float32, "c", kernels=Kernels()),
                lambda: jax.eval_shape(lambda: create_model("wrn_16_1", 10).clone(kernel="1x1").init(
                    jax.random.key(0), jnp.zeros((1, 8, 8, 3))))):
    with pytest.raises(KDJaxError, match="'3x3', '2x3', '3x1_1x3' or '1x3'"):
      build()


def _single_conv(kernel: str, stride: int, mode: str = "auto"):
  conv = kernel_conv(kernel, 4, stride, jnp.float32, jnp.float32, "conv1", kernels=Kernels(mode))
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
  variables = numpy_variables(jax.eval_shape(lambda: conv.init(jax.random.key(0), jnp.zeros(x.shape))), 3)
  return conv, x, variables


@pytest.mark.parametrize("kernel", WRN_KERNELS)
def test_receptive_field(kernel):
  """Perturbing input row (column) 2 changes exactly the output rows (columns) the kernel's height (width)
  reaches: a 1x3 conv mixes along the width only."""
  conv, x, variables = _single_conv(kernel, 1)
  apply = jax.jit(conv.apply)
  y = np.asarray(apply(variables, x))
  assert y.shape == (2, 6, 6, 4)
  rows = {"3x3": {1, 2, 3}, "2x3": {1, 2}, "3x1_1x3": {1, 2, 3}, "1x3": {2}}[kernel]
  for axis, expected in ((1, rows), (2, {1, 2, 3})):
    bumped = x.copy()
    if axis == 1:
      bumped[:, 2] += 1.0
    else:
      bumped[:, :, 2] += 1.0
    diff = np.abs(np.asarray(apply(variables, bumped)) - y)
    changed = set(np.nonzero(diff.max(axis=tuple(a for a in range(4) if a != axis)) > 1e-5)[0].tolist())
    assert changed == expected, (axis, changed)
  # At stride 2 every variant keeps the 3x3 conv's output size.
  conv2, _, v2 = _single_conv(kernel, 2)
  assert conv2.apply(v2, x).shape == (2, 3, 3, 4)


@pytest.mark.parametrize("kernel", VARIANTS)
def test_cpu_backward_modes_agree_with_xla(kernel):
  """The CPU convolution modes (custom backward passes) handle the non-square kernels and the factorised
  conv's (s, 1) / (1, s) strides: gradients equal XLA's own."""
  grads = {}
  for mode in ("xla", "blocked", "matmul"):
    conv, x, variables = _single_conv(kernel, 2, mode)
    loss = lambda v, x: jnp.sum(jnp.sin(conv.apply(v, x)))
    grads[mode] = jax.device_get(jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x))
  for mode in ("blocked", "matmul"):
    for got, want in zip(jax.tree.leaves(grads[mode]), jax.tree.leaves(grads["xla"])):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
