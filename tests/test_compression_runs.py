"""Compressed students in real runs: gradual pruning and quantisation-aware training with a distiller,
exact sparsity on the schedule, exports that load back with the same accuracy and integer weights,
bit-identical resume with masks and quantiser state, 8 devices equal 1, and the errors."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import export_random_mlp_teacher, small_config

import kd_jax
from kd_jax import data as kd_data
from kd_jax.compression import export_int_weights, dequantize_weights, polynomial_sparsity, quantized_apply
from kd_jax.compression.model import COMPRESSION, CompressedModel, inner_variables
from kd_jax.compression.pruning import prunable_paths
from kd_jax.config import validate
from kd_jax.errors import KDJaxError
from kd_jax.train import run as kd_run
from kd_jax.train import sharding
from kd_jax.train.loop import train_and_evaluate

PRUNE = {"compression.sparsity": 0.6, "compression.initial_sparsity": 0.1, "compression.prune_begin_epoch": 0,
         "compression.prune_end_epoch": 1, "compression.prune_every_steps": 2,
         "compression.prune_exclude": ("^fc/",)}
QAT = {"compression.weight_bits": 4, "compression.activation_bits": 4}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  return export_random_mlp_teacher(str(tmp_path_factory.mktemp("teacher") / "run"))


def _config(teacher, **overrides):
  return small_config(**{"teacher.workdir": teacher, "loss": {"ce": {"weight": 0.1},
                                                              "kd": {"weight": 0.9, "temperature": 4.0}},
                         "max_steps": 7, **overrides})


def _kernels(params):
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf) for path, leaf in flat}


def test_gradual_pruning_and_qat_under_kd_reach_the_schedule_and_the_export_loads_back(tmp_path, digits, teacher):
  """Gradual pruning and int4 QAT together under KD: the schedule's exact sparsity, the export's accuracy,
  and integer weights that reproduce the fake-quantised outputs."""
  result = train_and_evaluate(_config(teacher, **PRUNE, **QAT), str(tmp_path / "run"), dataset=digits)
  assert np.isfinite(result["networks"][0]["test"]["nll"])
  model, variables = kd_jax.load_model(str(tmp_path / "run"))
  assert isinstance(model, CompressedModel) and model.quantized and model.quant.weight_bits == 4
  steps_per_epoch = kd_data.steps_per_epoch(len(digits.train), 32)
  # Steps 0..6 ran; masks were updated at steps 0, 2, 4, 6 (every 2), so the last target is s_6.
  target = float(polynomial_sparsity(6, initial=0.1, final=0.6, begin_step=0, num_updates=steps_per_epoch // 2,
                                     update_every=2))
  assert 0.1 < target < 0.6
  params = _kernels(variables["params"])
  masks = _kernels(variables["batch_stats"][COMPRESSION]["masks"])
  prunable = prunable_paths(variables["params"], exclude=("^fc/",))
  assert prunable and "fc/kernel" not in prunable
  for path in prunable:
    kernel = params[path]
    assert int(np.sum(kernel == 0)) == int(round(target * kernel.size)), path  # exact count, weights at zero
    np.testing.assert_array_equal(kernel != 0, masks[path])
  assert np.all(params["fc/kernel"] != 0)
  # The exported model evaluates as the run did.
  test = digits.test.get(np.arange(len(digits.test)))
  logits = model.apply(variables, jnp.asarray(test["image"]), train=False).prediction
  accuracy = float(np.mean(np.argmax(logits, -1) == test["label"]))
  assert accuracy == pytest.approx(result["networks"][0]["test"]["accuracy"], abs=1e-6)
  observers = variables["batch_stats"][COMPRESSION]["observers"]
  assert observers and all(bool(o["initialized"]) for o in observers.values())
  images = jnp.asarray(digits.test.get(np.arange(64))["image"])
  inner = inner_variables(variables)
  qstate = model._qstate(inner, images, observers)
  exported = export_int_weights(inner["params"], {"weights": {}, "activations": {}}, model.quant, qstate=qstate)
  first = exported[qstate.first]
  assert first["q"].dtype == np.int8 and first["bits"] == 8
  middle = [p for p in qstate.layers if p not in (qstate.first, qstate.last)]
  assert middle and all(len(np.unique(exported[p]["q"])) <= 16 for p in middle)  # 4 bits
  dequantized = dict(inner, params=dequantize_weights(exported, inner["params"]))
  from_integers, _, _ = quantized_apply(model.model, dequantized, images, qstate, {"weights": {}, "activations": {}},
                                        model.quant, train=False, quantize_weights=False)
  np.testing.assert_allclose(from_integers.prediction, model.apply(variables, images, train=False).prediction,
                             rtol=1e-6, atol=1e-6)


def test_resume_with_masks_and_observers_is_bit_identical(tmp_path, digits, teacher):
  compress = {**PRUNE, **QAT}
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(_config(teacher, **compress, max_steps=10), straight, dataset=digits)
  train_and_evaluate(_config(teacher, **compress, max_steps=5, checkpoint_every_epochs=1), resumed, dataset=digits)
  train_and_evaluate(_config(teacher, **compress, max_steps=10), resumed, dataset=digits)
  a, b = (kd_jax.load_model(d)[1] for d in (straight, resumed))
  chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))


def test_eight_devices_match_one(digits, teacher):
  config = _config(teacher, **{**PRUNE, **QAT, "compression.prune_every_steps": 1})

  def steps_on(devices):
    mesh = sharding.make_mesh(devices)
    run = kd_run.build_run(config, digits, mesh=mesh)
    state = kd_run.init_state(run)
    step = kd_run.make_step(run, state, 0)
    for i in range(3):
      state, _ = step(state, sharding.shard_batch(kd_data.train_batch(digits.train, 32, seed=0, step=i), mesh),
                      run.teacher_variables)
    return jax.device_get(state)

  one, eight = steps_on(jax.devices()[:1]), steps_on(jax.devices())
  chex.assert_trees_all_close(eight.params, one.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(eight.batch_stats, one.batch_stats, rtol=1e-5, atol=1e-6)


def test_bad_compression_settings_are_refused(tmp_path, digits, teacher):
  with pytest.raises(KDJaxError, match="both set"):
    validate(_config(teacher, **{"compression.weight_bits": 4}))
  with pytest.raises(KDJaxError, match="sparsity"):
    validate(_config(teacher, **{"compression.sparsity": 1.0}))
  phased = _config(teacher, **QAT, **{"compression.quant_begin_epoch": 1, "epochs": 2})
  with pytest.raises(KDJaxError, match="start of a phase"):
    kd_run.build_run(phased, digits, mesh=sharding.make_mesh(jax.devices()[:1]))
