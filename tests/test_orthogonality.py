"""The orthogonality study (Park, Yoo, Kwak, arXiv:2009.04120): `compression_report` against hand counts, the
quick digits study end to end (a pruned row, whose counts are checked by hand), an int4 model's bytes by
hand, the table for every row, the docs block, bad arguments, and every CIFAR-100 row's config."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import export_random_mlp_teacher

import kd_jax
from kd_jax import models as kd_models
from kd_jax.compression import magnitude_masks
from kd_jax.compression.model import COMPRESSION, CompressedModel, Pruning, inner_variables
from kd_jax.compression.pruning import prunable_paths
from kd_jax.compression.quantize import QuantConfig
from kd_jax.compression.report import compression_report
from kd_jax.config import load_config_file
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")


def _module(name):
  sys.path.insert(0, EXPERIMENTS)
  try:
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXPERIMENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(EXPERIMENTS)
  return module


@pytest.fixture(scope="module")
def study():
  return _module("orthogonality")


class Linear(nn.Module):
  """One bias-free Dense layer on the flattened input: FLOPs are 2·B·in·out, parameters in·out."""

  features: int = 5

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    y = nn.Dense(self.features, use_bias=False, name="fc")(x)
    return ModelOutput(prediction=y, stages=(), preact_stages=(), embedding=x)


def test_report_counts_a_dense_layer_by_hand():
  model, x = Linear(), jnp.ones((4, 3, 4, 1))
  variables = model.init(jax.random.key(0), x)
  report = compression_report(model, variables, x, repeats=2)
  macs = 4 * 12 * 5
  assert report["flops"] == report["flops_sparse"] == 2 * macs
  assert report["layers"] == {"fc/kernel": {"size": 60, "nonzero": 60, "flops": 2 * macs}}
  assert (report["params"], report["nonzero"], report["bytes"], report["weight_bits"]) == (60, 60, 240, 32)
  assert report["batch"] == 4 and report["inference_ms"] > 0


def test_report_of_a_pruned_int4_model_counts_masks_bits_and_skipped_flops():
  model = CompressedModel(Linear(), Pruning(0.5), QuantConfig(4, 4, first_last_bits=None))
  x = jax.random.normal(jax.random.key(1), (4, 3, 4, 1))
  variables = model.init(jax.random.key(0), x)
  stats = dict(variables["batch_stats"])
  params = inner_variables(variables)["params"]
  stats[COMPRESSION] = {**stats[COMPRESSION], "masks": magnitude_masks(params, 0.5)}
  variables = {**variables, "batch_stats": stats}
  report = compression_report(model, variables, x, repeats=1)
  assert (report["params"], report["nonzero"], report["sparsity"]) == (60, 30, 0.5)
  assert report["bytes"] == math.ceil(60 * 4 / 8) + 4 * 5  # packed 4-bit kernel + a float32 scale per column
  assert report["weight_bits"] == 4
  assert report["flops"] == 2 * 4 * 12 * 5 and report["flops_sparse"] == report["flops"] / 2


def test_report_refuses_bad_input():
  model, x = Linear(), jnp.ones((2, 12))
  variables = model.init(jax.random.key(0), x)
  with pytest.raises(KDJaxError, match="repeats"):
    compression_report(model, variables, x, repeats=0)
  with pytest.raises(KDJaxError, match="variables"):
    compression_report(model, variables["params"], x)


def _flat(params):
  return {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(leaf)
          for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def _hand_bytes(params, bits, first_last):
  """Kernels packed at their widths plus a float32 scale per output channel; everything else float32."""
  total = 0
  for name, leaf in _flat(params).items():
    if name.endswith("/kernel"):
      width = 8 if name.rsplit("/", 1)[0] in first_last else bits
      total += -(-leaf.size * width // 8) + 4 * leaf.shape[-1]
    else:
      total += 4 * leaf.size
  return total


def test_quick_study_runs_end_to_end_and_its_counts_match_hand_counts(tmp_path, study):
  # One row (CE and KD) against an untrained exported teacher: each quick run still compiles its own
  # programs (most of a run's time on 2 cores); every row's table line is checked on made-up results below.
  teacher = export_random_mlp_teacher(str(tmp_path / "teacher"))
  workdir = str(tmp_path / "study")
  argv = ["--quick", "--seeds", "0", "--rows", "prune80", "--teacher-workdir", teacher, "--workdir", workdir]
  # The command itself, on one CPU device (the suite forces eight, which only adds sharding work here).
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", ""))
  done = subprocess.run([sys.executable, os.path.join(EXPERIMENTS, "orthogonality.py"), *argv], env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  text = open(os.path.join(workdir, "results.md")).read()
  lines = text.splitlines()
  assert lines[0] == study.TABLE_HEAD and "--quick smoke test" in text
  assert [line.split("|")[1].strip() for line in lines[2:4]] == ["teacher (CE)", "magnitude pruning 80%"]
  assert lines[2].startswith("| teacher (CE) | mlp_tiny | — |")
  run = os.path.join(workdir, "seed0", "prune80_kd")
  model, variables = kd_jax.load_model(run)
  assert isinstance(model, CompressedModel) and not model.quantized
  report = json.load(open(os.path.join(run, study.REPORT_FILE)))
  # Quick mode prunes one-shot at step 0, so every prunable kernel keeps exactly size - round(0.8·size).
  flat = _flat(inner_variables(variables)["params"])
  prunable = prunable_paths(inner_variables(variables)["params"], exclude=("^conv1/", "^fc/"))
  assert len(prunable) == 8  # resnet8's six block convs and two projection shortcuts
  kept = sum(flat[p].size - round(0.8 * flat[p].size) for p in prunable)
  assert all(int(np.count_nonzero(flat[p])) == flat[p].size - round(0.8 * flat[p].size) for p in prunable)
  dense = sum(leaf.size for name, leaf in flat.items() if name not in prunable)
  assert report["params"] == sum(leaf.size for leaf in flat.values()) == 77754
  assert report["nonzero"] == kept + dense
  assert abs(kept / sum(flat[p].size for p in prunable) - 0.2) < 1e-3
  share = 100 * report["nonzero"] / report["params"]
  assert f"| {report['params']:,} | {report['nonzero']:,} ({share:.0f}%) |" in lines[3]
  assert 0 < report["flops_sparse"] < 0.4 * report["flops"] and report["bytes"] == 4 * report["params"]
  # Finished runs are reused: a second call trains nothing and writes the same table.
  before = os.path.getmtime(os.path.join(run, "results.json"))
  assert study.main(argv) == 0
  assert os.path.getmtime(os.path.join(run, "results.json")) == before
  assert open(os.path.join(workdir, "results.md")).read().splitlines()[:4] == lines[:4]


class ThreeLayers(nn.Module):
  """conv (first layer) → conv → dense (classifier): QAT keeps the first and last at `first_last_bits`."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(4, (3, 3), use_bias=False, name="first")(x))
    x = nn.relu(nn.Conv(6, (3, 3), strides=2, name="middle")(x))
    x = jnp.mean(x, axis=(1, 2))
    y = nn.Dense(3, name="fc")(x)
    return ModelOutput(prediction=y, stages=(), preact_stages=(), embedding=x)


def test_report_of_an_int4_model_counts_its_bytes_by_hand():
  """What load_model gives for a QAT run: 4-bit kernels, the first layer and the classifier at 8 bits."""
  model = CompressedModel(ThreeLayers(), None, QuantConfig(4, 4, first_last_bits=8))
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  report = compression_report(model, variables, x, repeats=1)
  # first: 36 weights at 8 bits + 4 scales; middle: 216 at 4 bits + 6 scales and 6 float32 biases;
  # fc: 18 at 8 bits + 3 scales and 3 float32 biases.
  assert report["bytes"] == _hand_bytes(inner_variables(variables)["params"], 4, ("first", "fc")) == (
      36 + 4 * 4) + (108 + 4 * 6 + 4 * 6) + (18 + 4 * 3 + 4 * 3)
  assert report["weight_bits"] == 4 and report["params"] == 36 + 216 + 6 + 18 + 3
  # Per layer, 2·MACs without the taps that fall on padding (XLA's count). 'SAME' 3x3 on 8x8: 2 + 6·3 + 2 = 22
  # valid taps per axis at stride 1 (8 outputs); at stride 2 (outputs 0..3, padding (0, 1)) 3+3+3+2 = 11.
  assert report["layers"] == {"first/kernel": {"size": 36, "nonzero": 36, "flops": 2 * 2 * 22 * 22 * 1 * 4},
                              "middle/kernel": {"size": 216, "nonzero": 216, "flops": 2 * 2 * 11 * 11 * 4 * 6},
                              "fc/kernel": {"size": 18, "nonzero": 18, "flops": 2 * 2 * 6 * 3}}
  assert report["flops"] == report["flops_sparse"] > sum(layer["flops"] for layer in report["layers"].values())


def _fake_run(accuracy, params=1000, nonzero=1000):
  report = {"params": params, "nonzero": nonzero, "bytes": 4 * params, "batch": 64, "flops": 64e6,
            "flops_sparse": 64e6 * nonzero / params, "inference_ms": 1.5}
  return {"accuracy": accuracy, "model": "resnet8", "report": report}


def test_the_table_has_every_row_with_mean_std_and_the_per_seed_gain(study):
  rows = list(study.ROWS)
  accuracy = lambda seed, loss: 0.95 + 0.01 * seed + (0.01 if loss == "kd" else 0)
  per_seed = {s: {"teacher": _fake_run(0.99), **{f"{r}_{loss}": _fake_run(accuracy(s, loss))
                                                 for r in rows for loss in ("ce", "kd")}} for s in (0, 1)}
  per_seed[1]["prune90_kd"] = _fake_run(0.90, nonzero=100)
  lines = study.study_table(per_seed, rows).splitlines()
  assert len(lines) == 3 + len(rows)
  assert [line.split("|")[1].strip() for line in lines[3:]] == [study.ROWS[r].label for r in rows]
  assert lines[3] == ("| baseline | resnet8 | 95.50 ± 0.71 | 96.50 ± 0.71 | +1.00 ± 0.00 | 1,000 | 1,000 (100%) | "
                      "4,000 | 1.00 M | 1.00 M | 1.50 |")
  # KD − CE per seed: +1 (seed 0) and 90 − 96 = −6 (seed 1); costs from the first seed's KD run.
  prune90 = lines[3 + rows.index("prune90")]
  assert "| -2.50 ± 4.95 | 1,000 | 1,000 (100%) |" in prune90


def test_update_docs_creates_the_section_then_replaces_the_block(tmp_path, study):
  doc = tmp_path / "methods.md"
  doc.write_text("# Methods\n\ntext\n")
  study.update_docs(str(doc), "| first |")
  text = doc.read_text()
  assert text.startswith("# Methods\n\ntext\n\n## Orthogonality")
  assert "<!-- orthogonality:begin -->\n| first |\n<!-- orthogonality:end -->" in text
  study.update_docs(str(doc), "| second |")
  assert doc.read_text() == text.replace("| first |", "| second |")


@pytest.mark.parametrize("argv, message", [
    (["--rows", "prune70"], "Unknown row"),
    (["--seeds", "0", "0"], "distinct"),
    (["--quick", "--update-docs"], "smoke tests"),
    (["--rows", "baseline", "--teacher-workdir", "/nonexistent/teacher"], "does not exist"),
])
def test_bad_arguments_exit_with_code_2(tmp_path, study, capsys, argv, message):
  assert study.main(argv + ["--workdir", str(tmp_path / "w")]) == 2
  assert message in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "w")


CIFAR = os.path.join(EXPERIMENTS, "cifar100_orthogonality.py")


def test_every_cifar100_row_loads_and_validates():
  configs = _module("orthogonality_configs")
  for row, spec in configs.ROWS.items():
    for loss in configs.LOSSES:
      c = load_config_file(f"{CIFAR}:{row}_{loss}")  # validates
      assert c.data.name == "cifar100" and c.epochs == 240
      assert c.student.model == ("resnet8x4_dw_sep" if spec.conv else "resnet8x4")
      assert c.teacher.model == ("resnet32x4" if loss == "kd" else "")
      assert c.loss.to_dict() == configs.LOSSES[loss]
      assert c.compression.sparsity == spec.sparsity and c.compression.weight_bits == spec.bits
      if spec.sparsity:
        assert (c.compression.prune_begin_epoch, c.compression.prune_end_epoch) == (48, 168)
  wrn = load_config_file(f"{CIFAR}:dw_sep_kd@wrn40_2_wrn16_2")
  assert (wrn.teacher.model, wrn.student.model) == ("wrn_40_2", "wrn_16_2_dw_sep")
  # The cheap students build and are smaller than the standard ones.
  x = jnp.zeros((1, 32, 32, 3))
  for cheap, standard in (("resnet8x4_dw_sep", "resnet8x4"), ("wrn_16_2_dw_sep", "wrn_16_2")):
    count = lambda name: kd_models.param_count(
        jax.eval_shape(lambda: kd_models.create_model(name, 100).init(jax.random.key(0), x))["params"])
    assert count(cheap) < count(standard) / 3
  for bad in ("prune70_kd", "baseline_mse", "baseline_kd@res56_res20"):
    with pytest.raises(KDJaxError):
      load_config_file(f"{CIFAR}:{bad}")
