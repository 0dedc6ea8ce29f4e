"""The scripts in tools/ that produce the documented tables: their summaries, on made-up runs."""

import importlib.util
import json
import os

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_study_seeds_summary_mean_and_sample_std():
  tool = _load("study_seeds")
  row = lambda run, acc: {"run": run, "model": "m", "test_accuracy": acc, "val_accuracy": acc, "wall_time_s": 1.0}
  table = tool.summarize({0: [row("kd", 0.97)], 1: [row("kd", 0.98)], 2: [row("kd", 0.99)]})
  assert "| kd | m | 98.00 ± 1.00 |" in table  # sample std (ddof=1) of 97, 98, 99
  assert "97.00, 98.00, 99.00" in table


def test_logit_methods_summary_reports_divergence_and_calibration():
  tool = _load("logit_methods")
  cal = {k: 0.5 for k in ("temperature", "ece_before", "ece_after", "ece_over_before", "ece_under_before",
                          "ace_before", "ace_after", "nll_before", "nll_after")}
  per_seed = {}
  for seed, acc in ((0, 0.9), (1, 0.8)):
    runs = {name: {"model": "t", "test_accuracy": 0.99} for name in ("teacher", "teacher_b")}
    for method in tool.METHODS:
      runs[method] = {"test_accuracy": acc, "loss_text": "1·ce"}
    runs["KD, calibrated teacher"]["teacher_calibration"] = [cal]
    runs["R2KD"] = {"test_accuracy": None if seed == 1 else 0.5, "loss_text": "x"}
    per_seed[seed] = runs
  table = tool.summarize(per_seed)
  assert "| KD | 1·ce | 85.00 ± 7.07 | +0.00 |" in table
  assert "| R2KD | x | diverged (non-finite loss) on seed(s) 1 |" in table
  assert "| 0.500 | 0.5000 | 0.5000 |" in table


def test_feature_methods_summary_compares_each_method_with_ce_of_its_own_student(monkeypatch):
  monkeypatch.syspath_prepend(TOOLS)  # the tool imports its sibling logit_methods
  tool = _load("feature_methods")
  per_seed = {}
  for seed, acc in ((0, 0.90), (1, 0.92)):
    runs = {name: {"model": model, "test_accuracy": 0.99} for name, (model, _) in tool.TEACHERS.items()}
    for method in tool.METHODS:
      student = "mlp_small" if "mlp_small" in method or "RKD" in method else "cnn_small"
      runs[method] = {"test_accuracy": acc, "loss_text": "1·ce", "student": student}
    runs["CE (mlp_small)"]["test_accuracy"] = 0.80
    runs["CRD"]["test_accuracy"] = None if seed == 1 else 0.5
    per_seed[seed] = runs
  table = tool.summarize(per_seed)
  assert "| AT | cnn_small | 1·ce | 91.00 ± 1.41 | +0.00 |" in table
  assert "| RKD | mlp_small | 1·ce | 91.00 ± 1.41 | +11.00 |" in table  # against CE of mlp_small (80.00)
  assert "| CRD | cnn_small | 1·ce | diverged (non-finite loss) on seed(s) 1 |" in table
  assert "| teacher_resnet20 | resnet20 | ce | 99.00 ± 0.00 |" in table


def test_bench_steps_per_call_times_both_programs_on_the_same_steps(capsys):
  tool = _load("bench_steps_per_call")
  assert tool.main(["--students", "mlp_tiny", "--losses", "ce", "--k", "2", "--rounds", "1", "--calls", "1",
                    "--json"]) == 0
  import json
  (row,) = json.loads(capsys.readouterr().out)["results"]
  assert row["one_step_ms"] > 0 and row["scan_ms_per_step"] > 0 and row["k"] == 2
  assert row["max_param_diff"] < 1e-5  # k single calls and one scan of k trained the same model


def test_bench_steps_per_call_loop_mode_times_whole_runs_from_their_logged_step_times(capsys):
  tool = _load("bench_steps_per_call")
  assert tool.main(["--loop", "--students", "mlp_tiny", "--losses", "ce", "--k", "4", "--rounds", "1",
                    "--epochs", "2", "--json"]) == 0
  import json
  report = json.loads(capsys.readouterr().out)
  (row,) = report["results"]
  assert report["mode"] == "loop" and row["k"] == 4
  assert row["loop_one_step_ms"] > 0 and row["loop_k_ms_per_step"] > 0
  assert row["speedup"] == pytest.approx(row["loop_one_step_ms"] / row["loop_k_ms_per_step"])


def test_fsdp_memory_reports_less_per_device_than_replicated(capsys):
  tool = _load("fsdp_memory")  # the test process already has the 8 devices the tool asks for
  assert tool.main(["--student", "cnn_tiny", "--teacher", "cnn_small", "--devices", "8", "--num-classes", "10",
                    "--image-size", "8", "--min-size", "64"]) == 0
  rows = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:4]]
          for line in capsys.readouterr().out.splitlines() if line.startswith("| replicated") or line.startswith("| fsdp")}
  assert rows["fsdp"][0] < rows["replicated"][0] / 2 and rows["fsdp"][1] < rows["replicated"][1] / 2


def test_xla_cpu_numerics_library_options_are_as_accurate_as_xla_defaults():
  import re
  import subprocess
  import sys
  # A subprocess: the tool turns on jax_enable_x64, which must not leak into this test process.
  out = subprocess.run([sys.executable, os.path.join(TOOLS, "xla_cpu_numerics.py"), "--model", "resnet8",
                        "--batch", "8", "--worst", "1", "--library"],
                       capture_output=True, text=True, timeout=600, check=True).stdout
  activations = [float(e) for e in re.findall(r"activations: \S+ ([0-9.e+-]+)", out)]
  gradients = [float(e) for e in re.findall(r"gradient: +\S+ ([0-9.e+-]+)", out)]
  assert "kd_jax (xla_cpu_experimental_ynn_fusion_type=" in out
  assert len(activations) == len(gradients) == 2  # XLA's defaults, then the library's options
  # Float32 rounding (measured 8e-7 for both). Train-mode BatchNorm with XLA's own reductions (the option
  # without LIBRARY_FUSION_TYPE_REDUCE) measured 5e-6; a float32 "reference" would give exactly 0.
  assert all(0 < e < 2e-6 for e in activations), out
  # No ReLU takes the other branch for this seed, so the gradients are within rounding too (1.6e-6, 1.8e-6).
  assert all(0 < e < 1e-5 for e in gradients), out


def test_cpu_kernels_times_a_matmul_and_both_xla_convolution_settings(capsys):
  tool = _load("cpu_kernels")
  assert tool.main(["--matmul", "64", "--conv", "2x8x16", "--calls", "1", "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  impls = {(r["op"], r["impl"]) for r in report["rows"]}
  assert {("matmul 64x64", "jnp.dot (XLA)"), ("matmul 64x64", "numpy @"),
          ("conv3x3 2x8x8x16", "XLA, cpu_conv_kernels=xla"),
          ("conv3x3 2x8x8x16", "XLA, cpu_conv_kernels=ynnpack")} <= impls
  for r in report["rows"]:
    assert r["wall_s"] > 0 and r["gflops"] == pytest.approx(
        (2 * 64 ** 3 if r["op"].startswith("matmul") else 2 * 2 * 8 * 8 * 16 * 16 * 9) / r["wall_s"] / 1e9)
    if r["impl"].startswith("XLA, "):
      assert r["relative_difference_between_xla_settings"] < 1e-5  # float32 reassociation only
    if r["impl"].startswith("oneDNN "):  # where kd_jax's oneDNN convolutions can be built
      assert r["relative_difference_to_xla"] < 1e-5
  with pytest.raises(SystemExit):
    tool.main(["--conv", "64x32"])


def test_online_methods_summary_gives_every_network_a_row_and_compares_the_small_ones_with_ce(monkeypatch):
  monkeypatch.syspath_prepend(TOOLS)  # the tool imports its sibling logit_methods
  tool = _load("online_methods")
  per_seed = {}
  for seed, acc in ((0, 0.90), (1, 0.92)):
    runs = {"teacher": {"model": "cnn_large", "test_accuracy": 0.99}}
    for method in tool.METHODS:
      runs[method] = {"test_accuracy": acc, "loss_text": "1·ce", "student": "cnn_small"}
    runs["CE"]["test_accuracy"] = 0.80
    networks = [("student", "cnn_small", acc), ("peer1", "cnn_large", 0.95)]
    runs["DML, K = 2"]["networks"] = [{"network": n, "model": m, "test": {"accuracy": a}} for n, m, a in networks]
    runs["AFD, K = 2"] = {"test_accuracy": None, "loss_text": "x", "student": "cnn_small"}
    per_seed[seed] = runs
  table = tool.summarize(per_seed)
  assert "| DML, K = 2 | student | cnn_small | 1·ce | 91.00 ± 1.41 | +11.00 |" in table
  assert "|  | peer1 | cnn_large | 1·ce | 95.00 ± 0.00 |  |" in table
  assert "| AFD, K = 2 | student | cnn_small | x | did not finish" in table
  assert "| teacher | | cnn_large | ce | 99.00 ± 0.00 |" in table
