"""tools/bench.py: its JSON report on a tiny pair (schema, finite times, no recompilation) and its errors."""

import importlib.util
import json
import math
import os
import sys

import pytest

from kd_jax.distillers import distiller_names

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
TINY = ["--teacher", "cnn_tiny", "--student", "mlp_tiny", "--batch", "16", "--image-size", "8", "--channels", "1",
        "--num-classes", "10", "--train-examples", "256", "--steps", "2"]


def _load():
  spec = importlib.util.spec_from_file_location("bench", os.path.join(TOOLS, "bench.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def bench():
  return _load()


def _positive(x):
  return isinstance(x, float) and math.isfinite(x) and x > 0


def test_json_report_on_a_tiny_pair(bench, capsys):
  assert bench.main(TINY + ["--distillers", "kd,fitnet", "--json"]) == 0
  out, err = capsys.readouterr()
  report = json.loads(out)  # stdout is exactly one JSON object; the table and progress go to stderr
  assert "| distiller |" in err
  for key in ("device", "devices", "platform", "teacher", "student", "batch", "dtype", "jax_version",
              "peak_tflops_per_device", "baselines", "results"):
    assert key in report
  assert (report["teacher"], report["student"], report["batch"], report["dtype"]) == ("cnn_tiny", "mlp_tiny", 16,
                                                                                        "float32")
  assert report["devices"] >= 1 and report["peak_tflops_per_device"] is None  # CPU: unknown unless given
  assert [r["distiller"] for r in report["results"]] == ["kd", "fitnet"]
  baseline = report["baselines"]["student_ce"]
  assert baseline["recompiles"] == 0 and baseline["donated_fraction"] == 1.0

  kd = report["results"][0]
  assert kd["status"] == "ok" and kd["reason"] is None
  # --cpu-conv-kernels defaults to the library's 'auto'; the report says what it ran.
  assert report["cpu_conv_kernels_asked"] == "auto" and report["cpu_conv_kernels"] in ("onednn", "xla")
  onednn = report["cpu_conv_kernels"] == "onednn"
  for key in ("student_step_s", "teacher_forward_s", "distill_step_s", "compile_s", "peak_rss_mb", "overhead",
              "distill_images_per_s") + (() if onednn else ("flops_per_step",)):
    assert _positive(kd[key]), key
  assert kd["recompiles"] == 0
  assert kd["donated_fraction"] == 1.0  # every leaf of the input state was donated to the step
  assert len(kd["distill_times_s"]) == 2
  assert kd["overhead"] == pytest.approx(kd["distill_step_s"] / (kd["student_step_s"] + kd["teacher_forward_s"]))
  assert kd["distill_images_per_s"] == pytest.approx(16 / kd["distill_step_s"])
  if onednn:  # XLA's cost analysis counts oneDNN's custom calls as zero FLOPs: no figure rather than a wrong one
    assert kd["flops_per_step"] is None and kd["flops_source"].startswith("none")
  else:
    assert kd["achieved_tflops"] == pytest.approx(kd["flops_per_step"] / kd["distill_step_s"] / 1e12)
    assert kd["flops_source"] == "compiled"  # CPU: the optimised program's cost analysis

  fitnet = report["results"][1]  # an MLP student has no spatial stage to regress onto the CNN's: skipped, not fatal
  if fitnet["status"] == "ok":
    assert fitnet["recompiles"] == 0 and _positive(fitnet["distill_step_s"])
  else:
    assert fitnet["status"] == "skipped" and "fitnet" in fitnet["reason"]
    assert fitnet["distill_step_s"] is None


def test_super_resolution_pair_json_report(bench, capsys):
  """--task super_resolution: (a) is the student with `supervised` (L1) alone, (c) `supervised + distiller`,
  on LR patches of --image-size and HR patches --scale times larger."""
  argv = ["--task", "super_resolution", "--teacher", "sr_tiny", "--student", "edsr_2x16", "--image-size", "8",
          "--batch", "8", "--train-examples", "64", "--steps", "1", "--distillers", "sr_output,fitnet",
          "--cpu-conv-kernels", "xla", "--json"]  # XLA's kernels, so its cost analysis gives FLOPs
  assert bench.main(argv) == 0
  out, err = capsys.readouterr()
  report = json.loads(out)
  assert "| distiller |" in err and "super-resolution ×2" in err
  assert (report["task"], report["scale"], report["supervised_term"]) == ("super_resolution", 2, "supervised")
  assert (report["teacher"], report["student"], report["batch"], report["image_shape"]) == ("sr_tiny", "edsr_2x16",
                                                                                            8, [8, 8, 3])
  assert report["weights"] == {"supervised": 1.0, "distiller": 1.0} and report["crop_pad"] == 0
  baseline = report["baselines"]["student_supervised"]
  assert _positive(baseline["median_s"]) and baseline["recompiles"] == 0 and baseline["donated_fraction"] == 1.0
  assert _positive(report["baselines"]["teacher_forward/single"]["median_s"])
  assert [r["distiller"] for r in report["results"]] == ["sr_output", "fitnet"]
  for row in report["results"]:  # fitnet with the SR defaults: a conv regressor on the last blocks
    assert row["status"] == "ok", row["reason"]
    for key in ("student_step_s", "teacher_forward_s", "distill_step_s", "compile_s", "overhead", "flops_per_step"):
      assert _positive(row[key]), (row["distiller"], key)
    assert row["recompiles"] == 0 and row["donated_fraction"] == 1.0
  assert bench.main(argv[:-1] + ["--crop-pad", "4"]) == 2  # an SR batch is already the patch
  assert "--crop-pad" in capsys.readouterr().err


def test_profile_traces_every_measured_program(bench, tmp_path, capsys):
  assert bench.main(TINY + ["--distillers", "kd", "--profile", str(tmp_path), "--json"]) == 0
  json.loads(capsys.readouterr().out)  # the report is unchanged: stdout still holds one JSON object
  for program in ("student_ce", "teacher_forward_single", "kd"):
    traces = [f for _, _, files in os.walk(tmp_path / program) for f in files if f.endswith(".xplane.pb")]
    assert traces, program


def test_unknown_distiller_lists_the_registered_ones(bench, capsys):
  assert bench.main(TINY + ["--distillers", "kd,no_such_kd"]) == 2
  out, err = capsys.readouterr()
  assert out == ""
  assert "no_such_kd" in err and "Registered distillers" in err
  for name in distiller_names():
    assert name in err


def test_bfloat16_runs_the_mixed_precision_step_and_unknown_dtypes_are_refused(bench, capsys):
  assert bench.main(TINY + ["--distillers", "kd", "--dtype", "bfloat16", "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["dtype"] == "bfloat16" and report["results"][0]["recompiles"] == 0
  assert bench.main(TINY + ["--distillers", "kd", "--dtype", "float16"]) == 2
  assert "is not one of float32, bfloat16" in capsys.readouterr().err


def test_flop_estimate_counts_convolutions_on_every_backend(bench, monkeypatch):
  """GPUs run convolutions as cuDNN custom calls that the compiled program's cost analysis counts as zero;
  there the estimate comes from the lowered program. Both must give a convolution's 2·N·H·W·Cin·Cout·k²."""
  import jax
  import jax.numpy as jnp

  x, w = jnp.ones((4, 16, 16, 8)), jnp.ones((3, 3, 8, 32))
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                           dimension_numbers=("NHWC", "HWIO", "NHWC")))
  # cost() scales the per-device program by the device count (the bench's steps run SPMD on all of them);
  # XLA does not count the taps that fall on SAME padding, hence the tolerance.
  expected = 2 * 4 * 16 * 16 * 8 * 32 * 9 * jax.device_count()
  compiled = bench.cost(conv, x, w)
  assert compiled["flops_source"] == "compiled"
  assert compiled["flops"] == pytest.approx(expected, rel=0.1)
  forced = bench.cost(conv, x, w, source="lowered")  # --flops-source lowered: a GPU's figure, computed here
  assert forced["flops_source"] == "lowered" and forced["flops"] == pytest.approx(expected, rel=0.1)
  monkeypatch.setattr(bench.jax, "default_backend", lambda: "gpu")
  lowered = bench.cost(conv, x, w)
  assert lowered["flops_source"] == "lowered"
  assert lowered["flops"] == pytest.approx(expected, rel=0.1)


def test_peak_flops_table_and_override(bench):
  assert bench.device_peak_tflops("float32", 12.5) == (12.5, "--peak-tflops")
  assert bench.device_peak_tflops("float32", None, kind="cpu")[0] is None
  assert bench.device_peak_tflops("float32", None, kind="NVIDIA H200")[0] == 494.5  # dense TF32
  assert bench.device_peak_tflops("float32", None, kind="NVIDIA H200", precision="highest")[0] == 67.0
  assert bench.device_peak_tflops("bfloat16", None, kind="NVIDIA H100 PCIe")[0] == 756.5
  assert bench.device_peak_tflops("float32", None, kind="NVIDIA H100 80GB HBM3")[0] == 494.5


def _load_tool(name):
  if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)  # the tool imports bench.py as a sibling module
  spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_conv_backward_modes_interleaved_on_a_tiny_pair(capsys):
  tool = _load_tool("bench_conv_backward")
  argv = ["--student", "cnn_tiny", "--teacher", "cnn_tiny", "--batch", "8", "--image-size", "8",
          "--num-classes", "10", "--rounds", "2", "--loss", "kd", "--modes", "xla,auto,matmul,xla", "--json"]
  assert tool.main(argv) == 0
  report = json.loads(capsys.readouterr().out)
  rows = report["modes"]
  assert [r["mode"] for r in rows] == ["xla", "auto", "matmul", "xla"]
  assert [r["resolved"] for r in rows] == ["xla", "auto", "matmul", "xla"]  # XLA's CPU kernels: auto stays auto
  assert rows[0]["ratio"] == 1.0
  for row in rows:
    assert len(row["times_s"]) == 2 and all(_positive(t) for t in row["times_s"])
    assert row["min_s"] <= row["median_s"]
    assert row["first_loss"] == pytest.approx(rows[0]["first_loss"], rel=1e-5)  # the same step, every mode
  assert tool.main(["--modes", "xla,cudnn"]) == 2
  assert "conv_backward must be" in capsys.readouterr().err
