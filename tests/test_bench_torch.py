"""tools/bench_torch.py: the PyTorch peer of tools/bench.py. An eager run is cheap and checked end to end; a
--compile run is not (TorchInductor compiles the three programs in about 3 minutes on the 2-core CPU machine),
so only its argument handling and the compiled report's fields are checked, with torch.compile stubbed."""

import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench_torch.py")


def _tool():
  spec = importlib.util.spec_from_file_location("bench_torch", PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_eager_run_reports_times_and_flops_and_checks_imagenet_parameter_counts():
  tool = _tool()
  report = tool.run(tool.parse_args(["--teacher", "resnet8", "--student", "resnet8", "--batch", "2", "--steps", "1",
                                     "--warmup", "0"]))
  assert report["compiled"] is False and report["distill_step_s"] > 0
  assert report["distill_step_flops"] > report["student_step_flops"] > report["teacher_forward_flops"] > 0
  assert report["peak_tflops"] is None and report["distill_step_mfu"] is None  # a CPU has no table entry
  for name in ("imagenet_resnet18", "imagenet_resnet34", "imagenet_resnet50"):
    assert tool.param_count(tool.make_model(name, 1000)) == tool.KD_JAX_PARAMS[name]


def test_compile_flags_and_the_compiled_report(monkeypatch):
  tool = _tool()
  args = tool.parse_args(["--compile", "--compile-mode", "max-autotune", "--peak-tflops", "100"])
  assert args.compile and args.compile_mode == "max-autotune" and args.peak_tflops == 100.0
  with pytest.raises(SystemExit):
    tool.parse_args(["--compile-mode", "fastest"])
  compiled = []
  monkeypatch.setattr(tool.torch, "compile", lambda fn, mode: compiled.append(mode) or fn)
  report = tool.run(tool.parse_args(["--teacher", "resnet8", "--student", "resnet8", "--batch", "2", "--steps", "1",
                                     "--warmup", "0", "--compile", "--peak-tflops", "100"]))
  assert compiled == ["default"] * 3 and report["framework"] == "pytorch compile (inductor)"
  for name in ("student_step", "teacher_forward", "distill_step"):
    assert report[name + "_compile_s"] >= 0 and report[name + "_mfu"] == pytest.approx(report[name + "_tflops"] / 100)


def test_peak_table_is_read_from_bench_py():
  tool = _tool()
  assert tool.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.5
  assert tool.peak_tflops("NVIDIA H100 80GB HBM3", "float32") == 494.5
  assert tool.peak_tflops("cpu", "float32") is None
