"""ImageNet models (torchvision's ResNets, mdistiller's MobileNetV1) and `kd_jax.load_model`."""

import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kd_jax
from kd_jax import data as kd_data
from kd_jax.errors import KDJaxError
from kd_jax.models import create_model, param_count
from kd_jax.models.mobilenetv1 import mdistiller_key
from kd_jax.models.resnet_imagenet import max_pool_3x3, torchvision_key
from kd_jax.train import checkpoint as ckpt
from kd_jax.train.loop import train_and_evaluate

from helpers import numpy_variables, small_config

# torchvision's counts for 1000 classes (`sum(p.numel() for p in torchvision.models.resnet18().parameters())`,
# as its model documentation lists them); MobileNetV1 is mdistiller's, 4.23M as the paper's Table 8 prints.
TORCHVISION_COUNTS = {"imagenet_resnet18": 11_689_512, "imagenet_resnet34": 21_797_672,
                      "imagenet_resnet50": 25_557_032, "imagenet_resnet101": 44_549_160,
                      "imagenet_mobilenetv1": 4_231_976}


def abstract(name, num_classes=1000, size=64):
  """(model, variable shapes, output shapes) of `name` on a [2, size, size, 3] input, traced, not run."""
  model = create_model(name, num_classes)
  x = jnp.zeros((2, size, size, 3))
  out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=False))
  return model, variables, out


def flat(tree):
  return {tuple(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_param_counts_equal_torchvision(name):
  assert param_count(abstract(name)[1]["params"]) == TORCHVISION_COUNTS[name]


def test_docs_rows_are_the_tools():
  """docs/models.md has tools/param_counts.py's rows for these models verbatim: the CIFAR-100 count and,
  in the notes, the 1000-class count, which equals the reference's."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location("param_counts", os.path.join(root, "tools", "param_counts.py"))
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  docs = open(os.path.join(root, "docs", "models.md")).read().splitlines()
  assert set(tool.IMAGENET_REFERENCE) == set(TORCHVISION_COUNTS)
  embedding = {"imagenet_resnet18": 512, "imagenet_resnet34": 512, "imagenet_resnet50": 2048,
               "imagenet_resnet101": 2048, "imagenet_mobilenetv1": 1024}
  for name, count in TORCHVISION_COUNTS.items():
    cifar100 = count - 900 * (embedding[name] + 1)  # 900 fewer classifier rows and biases
    assert tool.markdown_row(name, cifar100, None, count) in docs


@pytest.mark.parametrize("name, channels", [("imagenet_resnet18", (64, 128, 256, 512)),
                                            ("imagenet_resnet50", (256, 512, 1024, 2048)),
                                            ("imagenet_mobilenetv1", (128, 256, 512, 1024))])
def test_stage_shapes_at_strides_4_8_16_32(name, channels):
  _, _, out = abstract(name, num_classes=7, size=64)
  assert [s.shape for s in out.stages] == [(2, 64 // r, 64 // r, c) for r, c in zip((4, 8, 16, 32), channels)]
  assert [s.shape for s in out.preact_stages] == [s.shape for s in out.stages]
  assert out.stem.shape[:3] == (2, 32, 32)
  assert out.embedding.shape == (2, channels[-1])
  assert out.prediction.shape == (2, 7)


def torchvision_resnet18_state(num_classes=1000):
  """torchvision's ResNet-18 `state_dict()` shapes (without `num_batches_tracked`), written out from its
  layout: conv1 7x7, bn1, layer{1..4} of two BasicBlocks (conv1, bn1, conv2, bn2), a downsample (1x1 conv,
  BN) in the first block of layers 2-4, fc."""
  state = {"conv1.weight": (64, 3, 7, 7)}

  def bn(prefix, c):
    state.update({f"{prefix}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")})

  bn("bn1", 64)
  inplanes = 64
  for i, planes in enumerate((64, 128, 256, 512), start=1):
    for j in range(2):
      block = f"layer{i}.{j}"
      state[f"{block}.conv1.weight"] = (planes, inplanes if j == 0 else planes, 3, 3)
      bn(f"{block}.bn1", planes)
      state[f"{block}.conv2.weight"] = (planes, planes, 3, 3)
      bn(f"{block}.bn2", planes)
      if j == 0 and i > 1:
        state[f"{block}.downsample.0.weight"] = (planes, inplanes, 1, 1)
        bn(f"{block}.downsample.1", planes)
    inplanes = planes
  state.update({"fc.weight": (num_classes, 512), "fc.bias": (num_classes,)})
  return state


def torch_shape(shape):
  """A Flax leaf's shape in PyTorch's layout: HWIO kernels as OIHW, [in, out] dense kernels as [out, in]."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def test_resnet18_variables_map_one_to_one_onto_torchvision_state_dict():
  _, variables, _ = abstract("imagenet_resnet18")
  mapped = {torchvision_key(path): torch_shape(leaf.shape) for path, leaf in flat(variables).items()}
  assert len(mapped) == len(flat(variables))  # no two variables map onto one key
  assert mapped == torchvision_resnet18_state()
  assert torchvision_key(("params", "layer4_0", "downsample_conv", "kernel")) == "layer4.0.downsample.0.weight"
  with pytest.raises(KDJaxError, match="No PyTorch counterpart"):
    torchvision_key(("params", "fc", "embedding"))


def test_mobilenetv1_variables_map_onto_mdistiller_state_dict():
  _, variables, _ = abstract("imagenet_mobilenetv1")
  expected = {"model.0.0.weight": (32, 3, 3, 3)}
  expected.update({f"model.0.1.{p}": (32,) for p in ("weight", "bias", "running_mean", "running_var")})
  inp = 32
  for i, out in enumerate((64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024), start=1):
    expected[f"model.{i}.0.weight"] = (inp, 1, 3, 3)  # depthwise: groups = channels
    expected[f"model.{i}.3.weight"] = (out, inp, 1, 1)
    for layer, c in (("1", inp), ("4", out)):
      expected.update({f"model.{i}.{layer}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")})
    inp = out
  expected.update({"fc.weight": (1000, 1024), "fc.bias": (1000,)})
  assert {mdistiller_key(path): torch_shape(leaf.shape) for path, leaf in flat(variables).items()} == expected


def test_mobilenetv1_width_multiplier():
  half = create_model("imagenet_mobilenetv1", 10, width_mult=0.5)
  out = jax.eval_shape(lambda: half.init_with_output(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))[0])
  assert [s.shape[-1] for s in out.stages] == [64, 128, 256, 512]
  with pytest.raises(KDJaxError, match="width_mult"):
    create_model("imagenet_mobilenetv1", 10, width_mult=0.01)


def test_stem_max_pool_pads_with_minus_infinity():
  # All values negative: a zero padding (or "SAME" pooling of zeros) would put 0 on the border.
  x = -1.0 - jnp.arange(16.0).reshape(1, 4, 4, 1)
  pooled = np.asarray(max_pool_3x3(x, train=True))[0, ..., 0]
  np.testing.assert_array_equal(pooled, [[-1.0, -2.0], [-5.0, -6.0]])
  np.testing.assert_array_equal(np.asarray(max_pool_3x3(x, train=False)), np.asarray(max_pool_3x3(x, train=True)))


def test_resnet18_train_forward_jits_at_tiny_resolution():
  model, abstract_variables, _ = abstract("imagenet_resnet18", num_classes=10, size=32)
  variables = numpy_variables(abstract_variables)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  out, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  assert out.prediction.shape == (2, 10) and np.all(np.isfinite(out.prediction))
  assert [s.shape[1] for s in out.stages] == [8, 4, 2, 1]
  for stage, preact in zip(out.stages, out.preact_stages):
    np.testing.assert_array_equal(np.asarray(stage), np.maximum(np.asarray(preact), 0))
  # Training mode normalises with the batch's statistics and moves the running ones.
  before = variables["batch_stats"]["layer1_0"]["bn1"]["mean"]
  assert not np.allclose(updates["batch_stats"]["layer1_0"]["bn1"]["mean"], before)


# ----------------------------------------------------------------------------------------------------------
# kd_jax.load_model.
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits):
  workdir = str(tmp_path_factory.mktemp("run"))
  results = train_and_evaluate(small_config(max_steps=2), workdir, dataset=digits)
  return workdir, results


def test_load_model_reproduces_the_runs_test_accuracy(finished_run, digits):
  workdir, results = finished_run
  model, variables = kd_jax.load_model(workdir)
  batch = digits.test.get(np.arange(len(digits.test)))
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False).prediction)(variables, batch["image"])
  logits, labels = np.asarray(logits, np.float64), batch["label"]
  # The run's evaluation divides float32 sums, so its figures carry float32 rounding.
  assert np.sum(np.argmax(logits, -1) == labels) == round(results["test_accuracy"] * len(labels))
  nll = -np.mean(jax.nn.log_softmax(logits)[np.arange(len(labels)), labels])
  assert nll == pytest.approx(results["test_nll"], rel=1e-5)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["test_nll"] == results["test_nll"]
  # The same variables as the export read directly into the run's model.
  direct = ckpt.load_exported_model(workdir, create_model("cnn_tiny", 10), batch["image"][:1])
  jax.tree.map(np.testing.assert_array_equal, variables, direct)


def test_load_model_with_info(finished_run, tmp_path):
  workdir, _ = finished_run
  model, _, info = kd_jax.load_model(workdir, with_info=True)
  assert (info["model"], info["dataset"], info["num_classes"], info["dtype"]) == ("cnn_tiny", "digits", 10, "float32")
  assert info["config"]["student"]["model"] == "cnn_tiny" and model.num_classes == 10
  # The model is rebuilt in the dtype the run computed in (its config.json's compute_dtype).
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  with open(os.path.join(copy, "config.json"), "w") as f:
    json.dump(dict(info["config"], compute_dtype="bfloat16"), f)
  assert kd_jax.load_model(copy)[0].dtype == jnp.bfloat16


def test_load_model_errors(tmp_path, finished_run):
  with pytest.raises(KDJaxError, match="does not exist"):
    kd_jax.load_model(str(tmp_path / "missing"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(KDJaxError, match="not a kd_jax run directory"):
    kd_jax.load_model(str(empty))
  unfinished = tmp_path / "unfinished"
  (unfinished / "checkpoints").mkdir(parents=True)
  (unfinished / "config.json").write_text(open(os.path.join(finished_run[0], "config.json")).read())
  with pytest.raises(KDJaxError, match="has not finished"):
    kd_jax.load_model(str(unfinished))
  (unfinished / "model.json").write_text(json.dumps({"model": "cnn_tiny", "num_classes": 10}))
  with pytest.raises(KDJaxError, match="no exported variables"):
    kd_jax.load_model(str(unfinished))
  (unfinished / "model.json").write_text("{")
  with pytest.raises(KDJaxError, match="not valid JSON"):
    kd_jax.load_model(str(unfinished))
