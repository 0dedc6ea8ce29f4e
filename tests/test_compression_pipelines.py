"""Compression in longer runs: AB initialisation, gradual pruning and QAT as one three-phase run; filter
pruning with the smaller network exported; every network of an online scheme compressed."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import export_random_mlp_teacher, export_random_teacher, small_config
from test_compression_runs import PRUNE, QAT, _config, _kernels

import kd_jax
from kd_jax import data as kd_data
from kd_jax.compression import polynomial_sparsity
from kd_jax.compression.model import CompressedModel
from kd_jax.compression.pruning import prunable_paths
from kd_jax.config import load_config_file
from kd_jax.train.loop import train_and_evaluate


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  return export_random_mlp_teacher(str(tmp_path_factory.mktemp("teacher") / "run"))


def test_ab_initialisation_then_gradual_pruning_then_qat_in_one_run(tmp_path_factory, digits):
  config = load_config_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments",
                                         "digits_ab_prune_qat.py"))
  teacher = export_random_teacher(str(tmp_path_factory.mktemp("teacher") / "run"), "cnn_small")
  config.teacher.workdir, config.teacher.model = teacher, "cnn_small"
  # One epoch per phase, batch 128: pruning over the `prune` phase, QAT from the `qat` phase's start.
  config.phases = tuple(dict(p, epochs=1) for p in config.phases)
  config.epochs, config.batch_size, config.progress_bar = 3, 128, False
  config.compression.prune_begin_epoch, config.compression.prune_end_epoch = 1, 2
  config.compression.quant_begin_epoch = 2
  config.compression.prune_every_steps = 2
  workdir = str(tmp_path_factory.mktemp("ab_prune_qat"))
  result = train_and_evaluate(config, workdir, dataset=digits)
  model, variables = kd_jax.load_model(workdir)
  assert model.quantized and model.pruning is not None
  params = _kernels(variables["params"])
  for path in prunable_paths(variables["params"], exclude=config.compression.prune_exclude):
    assert int(np.sum(params[path] == 0)) == int(round(0.8 * params[path].size)), path
  assert np.all(params["stage1_conv0/kernel"] != 0)
  test = digits.test.get(np.arange(len(digits.test)))
  logits = model.apply(variables, jnp.asarray(test["image"]), train=False).prediction
  assert float(np.mean(np.argmax(logits, -1) == test["label"])) == pytest.approx(
      result["networks"][0]["test"]["accuracy"], abs=1e-6)


def test_filter_pruning_trains_on_the_schedule_and_exports_the_smaller_resnet(tmp_path, digits, teacher):
  config = _config(teacher, **{**PRUNE, "student.model": "resnet8", "compression.prune_structure": "filters",
                               "compression.prune_exclude": ()})
  result = train_and_evaluate(config, str(tmp_path / "run"), dataset=digits)
  model, variables, info = kd_jax.load_model(str(tmp_path / "run"), with_info=True)
  target = float(polynomial_sparsity(6, initial=0.1, final=0.6, begin_step=0,
                                     num_updates=kd_data.steps_per_epoch(len(digits.train), 32) // 2, update_every=2))
  full = kd_jax.models.create_model("resnet8", 10)
  widths = [int(v["conv1"]["kernel"].shape[-1]) for k, v in sorted(jax.eval_shape(
      full.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"].items()) if k.startswith("layer")]
  assert tuple(info["inner_widths"]) == tuple(w - int(round(target * w)) for w in widths)
  assert not isinstance(model, CompressedModel)  # nothing is masked any more: a plain, smaller resnet8
  test = digits.test.get(np.arange(len(digits.test)))
  logits = model.apply(variables, jnp.asarray(test["image"]), train=False).prediction
  accuracy = float(np.mean(np.argmax(logits, -1) == test["label"]))
  assert accuracy == pytest.approx(result["networks"][0]["test"]["accuracy"], abs=1.5 / len(digits.test))


# 'adversarial' only (its step updates each network twice: against the discriminators, then on its loss);
# 'mutual' calls the same CompressedModel.after_update after its single update.
@pytest.mark.parametrize("scheme", ["adversarial"])
def test_every_network_of_an_online_scheme_is_compressed(tmp_path, digits, scheme):
  config = small_config(**{"scheme": scheme, "peers": ("cnn_tiny",), "max_steps": 3,
                           "loss": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 3.0}},
                           **{**PRUNE, **QAT, "compression.prune_every_steps": 1}})
  train_and_evaluate(config, str(tmp_path / "run"), dataset=digits)
  for network in ("", "networks/peer1"):
    model, variables = kd_jax.load_model(str(tmp_path / "run" / network))
    assert model.quantized
    params = _kernels(variables["params"])
    target = float(polynomial_sparsity(2, initial=0.1, final=0.6, begin_step=0,
                                       num_updates=kd_data.steps_per_epoch(len(digits.train), 32),
                                       update_every=1))
    for path in prunable_paths(variables["params"], exclude=("^fc/",)):
      assert int(np.sum(params[path] == 0)) == int(round(target * params[path].size)), (network, path)
