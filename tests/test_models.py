"""Tests for the model zoo: the output contract, BatchNorm state, feature taps, parameter counts, registry."""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax.errors import KDJaxError
from kd_jax.models import MODELS, ModelOutput, create_model, model_names, param_count

import helpers

NUM_CLASSES = 10
BATCH = 2
# Shape arguments for the generic constructors: small, and reusing the layer shapes of named models so
# eager dispatch hits the compilation cache.
GENERIC_KWARGS = {
    "resnet": dict(depth=8),
    "wrn": dict(depth=10, widen_factor=1),
    "mlp": dict(hidden_sizes=(32,)),
    "cnn": dict(widths=(8, 16), convs_per_stage=2),
}
# The CIFAR ResNets and WRNs and the small family; the rest of the zoo (VGG, MobileNetV2, ShuffleNets,
# ResNet-50) is checked, compiled, in test_models_zoo.py.
CORE = [n for n in model_names() if n.startswith(("resnet", "wrn", "cnn", "mlp")) and n != "resnet50"]
RESNETS = [n for n in CORE if n.startswith("resnet")]
WRNS = [n for n in model_names() if n.startswith("wrn")]
CNNS = [n for n in model_names() if n.startswith("cnn")]
MLPS = [n for n in model_names() if n.startswith("mlp")]
# Models whose stages end in a ReLU, so relu(preact_stages[i]) == stages[i].
RELU_STAGE_MODELS = RESNETS + CNNS + MLPS


def make(name: str, num_classes: int = NUM_CLASSES, **kwargs) -> nn.Module:
  return create_model(name, num_classes, **{**GENERIC_KWARGS.get(name, {}), **kwargs})


def abstract_init(model: nn.Module, shape):
  """Variable shapes without computing anything (init is traced, not run)."""
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def numpy_variables(abstract, seed: int = 0):
  """`helpers.numpy_variables` as jax arrays (the checks below run jax ops on them)."""
  return jax.tree.map(jnp.asarray, helpers.numpy_variables(abstract, seed))


@functools.lru_cache(maxsize=None)
def run(name: str):
  """Variables, then one train-mode and one eval-mode forward on a [2, 8, 8, 3] input (cached per model,
  so every model is set up and run once for the whole file)."""
  model = make(name)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(BATCH, 8, 8, 3)), jnp.float32)
  variables = numpy_variables(abstract_init(model, x.shape))
  train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  eval_out = model.apply(variables, x, train=False)
  return model, x, variables, train_out, updates, eval_out


@pytest.mark.parametrize("name", ["resnet8", "mlp_tiny"])
def test_init_statistics(name):
  """The real `model.init`: BN starts at identity, the head bias at zero, conv kernels are Kaiming-normal
  with fan_out (std sqrt(2 / (9 * C_out))) as in the PyTorch references."""
  model = make(name)
  x = jnp.ones((BATCH, 8, 8, 3))
  variables = model.init(jax.random.key(0, impl="rbg"), x, train=False)  # rbg: compiles faster than threefry
  chex.assert_trees_all_equal_shapes_and_dtypes(variables, abstract_init(model, x.shape))
  chex.assert_tree_all_finite(variables)
  np.testing.assert_array_equal(variables["params"]["fc"]["bias"], 0.0)
  if name == "resnet8":
    block = variables["params"]["layer3_0"]
    np.testing.assert_array_equal(block["bn2"]["scale"], 1.0)
    np.testing.assert_array_equal(block["bn2"]["bias"], 0.0)
    np.testing.assert_array_equal(variables["batch_stats"]["layer3_0"]["bn2"]["var"], 1.0)
    kernel = block["conv2"]["kernel"]  # [3, 3, 64, 64]
    np.testing.assert_allclose(np.std(kernel), np.sqrt(2.0 / (9 * 64)), rtol=0.05)
  out = model.apply(variables, x, train=False)
  chex.assert_tree_all_finite(out)


def test_registry_covers_generic_kwargs():
  assert model_names() == sorted(MODELS)
  assert set(GENERIC_KWARGS) <= set(MODELS)
  expected = {"resnet8", "resnet14", "resnet20", "resnet26", "resnet32", "resnet44", "resnet56", "resnet110",
              "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "mlp_tiny",
              "mlp_small", "cnn_tiny", "cnn_small", "cnn_large"}
  assert expected <= set(MODELS)


@pytest.mark.parametrize("name", CORE)
def test_output_contract(name):
  model, _, variables, train_out, _, eval_out = run(name)
  fc = variables["params"]["fc"]
  for out in (train_out, eval_out):
    assert isinstance(out, ModelOutput)
    chex.assert_shape(out.logits, (BATCH, NUM_CLASSES))
    chex.assert_type(out.logits, jnp.float32)
    chex.assert_tree_all_finite(out)
    assert isinstance(out.stages, tuple) and isinstance(out.preact_stages, tuple)
    assert len(out.stages) == len(out.preact_stages) > 0
    for stage, preact in zip(out.stages, out.preact_stages):
      assert stage.shape == preact.shape
      assert stage.shape[0] == BATCH
    chex.assert_rank(out.embedding, 2)
    assert out.embedding.shape == (BATCH, fc["kernel"].shape[0])
    # The embedding is really what the classifier reads.
    np.testing.assert_allclose(out.logits, out.embedding @ fc["kernel"] + fc["bias"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in CORE if n not in MLPS])
def test_train_mode_updates_batch_stats_and_eval_mode_does_not(name):
  model, x, variables, _, updates, _ = run(name)
  old, new = variables["batch_stats"], updates["batch_stats"]
  chex.assert_trees_all_equal_shapes(old, new)
  # Every BatchNorm's running variance moved (0.9 * 1 + 0.1 * batch variance).
  var_paths = [(p, v) for p, v in jax.tree_util.tree_leaves_with_path(new) if p[-1].key == "var"]
  assert var_paths
  old_by_path = dict(jax.tree_util.tree_leaves_with_path(old))
  for path, value in var_paths:
    assert not np.allclose(value, old_by_path[path]), jax.tree_util.keystr(path)
  # Eval mode reads the running statistics and writes nothing.
  _, eval_updates = model.apply(variables, x, train=False, mutable=["batch_stats"])
  chex.assert_trees_all_equal(eval_updates["batch_stats"], old)


@pytest.mark.parametrize("name", MLPS)
def test_mlp_has_no_batch_stats(name):
  _, _, variables, _, updates, _ = run(name)
  assert "batch_stats" not in variables
  assert not updates


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "cnn_tiny", "mlp_tiny"])
def test_eval_is_deterministic(name):
  model, x, variables, _, _, eval_out = run(name)
  chex.assert_trees_all_equal(model.apply(variables, x, train=False), eval_out)


@pytest.mark.parametrize("name", RELU_STAGE_MODELS)
def test_stage_is_relu_of_preact(name):
  _, _, _, train_out, _, eval_out = run(name)
  for out in (train_out, eval_out):
    for stage, preact in zip(out.stages, out.preact_stages):
      chex.assert_trees_all_equal(nn.relu(preact), stage)
      assert np.any(preact < 0), "the pre-activation should have negative entries"


@pytest.mark.parametrize("name", RESNETS + CNNS)
def test_conv_embedding_is_pooled_last_stage(name):
  _, _, _, _, _, out = run(name)
  np.testing.assert_allclose(out.embedding, out.stages[-1].mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", WRNS)
def test_wrn_preact_is_next_batchnorm_of_stage(name):
  """WRN taps: preact_stages[i] = BN(stages[i]) with the BN that follows (the next stage's first block's
  bn1, or the final bn1), before its ReLU; the embedding is the pooled relu of the last one."""
  _, _, variables, _, _, out = run(name)
  params, stats = variables["params"], variables["batch_stats"]
  next_bns = ["block2_layer0", "block3_layer0", None]
  for stage, preact, owner in zip(out.stages, out.preact_stages, next_bns):
    p, s = (params["bn1"], stats["bn1"]) if owner is None else (params[owner]["bn1"], stats[owner]["bn1"])
    expected = (stage - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(preact, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.embedding, nn.relu(out.preact_stages[-1]).mean(axis=(1, 2)), rtol=1e-6,
                             atol=1e-6)


@pytest.mark.parametrize("name", RESNETS + WRNS)
def test_stage_sizes_on_32x32(name):
  model = make(name, 100)
  x = jax.ShapeDtypeStruct((BATCH, 32, 32, 3), jnp.float32)
  variables = abstract_init(model, x.shape)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert [s.shape[1:3] for s in out.stages] == [(32, 32), (16, 16), (8, 8)]
  assert [s.shape[1:3] for s in out.preact_stages] == [(32, 32), (16, 16), (8, 8)]
  channels = [s.shape[-1] for s in out.stages]
  if name.endswith("x4") or "x4_" in name:
    assert channels == [64, 128, 256]
  elif name.startswith("wrn"):
    k = model.widen_factor
    assert channels == [16 * k, 32 * k, 64 * k]
  else:
    assert channels == [16, 32, 64]
  assert out.embedding.shape == (BATCH, channels[-1])
  assert out.logits.shape == (BATCH, 100)


@pytest.mark.parametrize("name", CNNS)
def test_cnn_stage_sizes_on_8x8(name):
  _, _, _, _, _, out = run(name)
  assert [s.shape[1:3] for s in out.stages] == [(8, 8), (4, 4), (2, 2)][:len(out.stages)]


@pytest.mark.parametrize("name,expected_millions", [
    ("resnet8x4", 1.23), ("resnet32x4", 7.43), ("resnet20", 0.28), ("resnet56", 0.86), ("resnet110", 1.74),
    ("wrn_40_2", 2.26), ("wrn_16_2", 0.70), ("wrn_40_1", 0.57),
])
def test_param_counts_match_repdistiller(name, expected_millions):
  """CIFAR-100 parameter counts reported by RepDistiller (Tian et al. 2020)."""
  count = param_count(abstract_init(create_model(name, 100), (1, 32, 32, 3))["params"])
  assert abs(count / 1e6 - expected_millions) <= 0.03 * expected_millions, count


def test_small_models_sizes():
  counts = {n: param_count(abstract_init(create_model(n, 10), (1, 8, 8, 1))["params"])
            for n in ["cnn_tiny", "cnn_small", "cnn_large", "mlp_tiny", "mlp_small"]}
  assert counts["cnn_tiny"] < 10_000 and counts["mlp_tiny"] < 10_000
  assert counts["cnn_large"] > 5 * counts["cnn_small"]
  assert 100_000 < counts["cnn_large"] < 1_000_000
  assert counts["mlp_small"] > 5 * counts["mlp_tiny"]


def test_param_count_on_arrays_and_shapes():
  _, _, variables, _, _, _ = run("cnn_tiny")
  expected = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(variables["params"]))
  assert param_count(variables["params"]) == expected
  assert param_count(abstract_init(make("cnn_tiny"), (1, 8, 8, 3))["params"]) == expected
  # conv 3x3: 3*8 + 8*16 + 16*32 in-out pairs; BN scale+bias on 8+16+32 channels; fc 32*10 + 10.
  assert expected == 9 * (3 * 8 + 8 * 16 + 16 * 32) + 2 * (8 + 16 + 32) + 32 * 10 + 10
  assert param_count({}) == 0


def test_mlp_flattens_any_input():
  model, x, variables, _, _, eval_out = run("mlp_tiny")
  flat = model.apply(variables, x.reshape(BATCH, -1), train=False)
  chex.assert_trees_all_close(flat, eval_out)
  assert eval_out.stages[0].shape == (BATCH, 32)


def test_cnn_accepts_single_channel_8x8_and_3d_inputs():
  model = make("cnn_tiny")
  x = jnp.ones((BATCH, 8, 8))
  variables = numpy_variables(abstract_init(model, (BATCH, 8, 8, 1)))
  chex.assert_trees_all_close(model.apply(variables, x), model.apply(variables, x[..., None]))


def test_bfloat16_compute_keeps_float32_params():
  model = create_model("resnet8", NUM_CLASSES, dtype="bfloat16")
  variables = abstract_init(model, (BATCH, 32, 32, 3))
  assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((BATCH, 32, 32, 3)), train=False), variables)
  assert out.logits.dtype == jnp.bfloat16
  assert all(s.dtype == jnp.bfloat16 for s in out.stages)


def test_unknown_model_name_lists_registered_names():
  with pytest.raises(KDJaxError) as info:
    create_model("resnet9000", 10)
  message = str(info.value)
  assert "resnet9000" in message
  assert ", ".join(sorted(MODELS)) in message


def test_bad_kwargs_and_values():
  with pytest.raises(KDJaxError, match=r"widht.*dtype, param_dtype"):
    create_model("resnet20", 10, widht=2)
  with pytest.raises(KDJaxError, match=r"depth.*widen_factor"):
    create_model("wrn", 10, depth=16)
  with pytest.raises(KDJaxError, match="6n\\+2"):
    create_model("resnet", 10, depth=21)
  with pytest.raises(KDJaxError, match="6n\\+4"):
    create_model("wrn", 10, depth=16 + 1, widen_factor=1)
  with pytest.raises(KDJaxError, match="num_classes"):
    create_model("cnn_tiny", 0)
  with pytest.raises(KDJaxError, match="dtype"):
    create_model("cnn_tiny", 10, dtype="float99")
  with pytest.raises(KDJaxError, match="hidden_sizes"):
    create_model("mlp", 10, hidden_sizes=(8, 0))
  with pytest.raises(KDJaxError, match="NHWC"):
    make("cnn_tiny").init(jax.random.key(0), jnp.zeros((BATCH, 64)))
