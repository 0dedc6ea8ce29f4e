"""tools/bench_rounds.py, tools/conv_shapes.py and tools/bench_memory.py: their pure parts and one tiny run each."""

import collections
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax import lax

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _tool(name):
  if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)  # bench_memory imports bench.py as a sibling module
  spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


def _fake_bench(tmp_path, name, kd, student, teacher, nested):
  """A script that prints a bench.py-shaped (nested) or bench_torch.py-shaped report and holds ~60 MiB."""
  row = {"distill_step_s": kd, "student_step_s": student, "teacher_forward_s": teacher}
  report = {"results": [dict(row, distiller="kd")]} if nested else dict(row, framework="pytorch eager")
  path = tmp_path / f"{name}.py"
  path.write_text("import json\nheld = bytearray(60 * 2**20)\n"
                  f"print('a line that is not JSON')\nprint(json.dumps({report!r}))\n")
  return f"{sys.executable} {path}"


def test_rounds_alternate_and_ratios_are_throughputs(tmp_path):
  jax_cmd = _fake_bench(tmp_path, "jax", kd=2.0, student=1.0, teacher=1.5, nested=True)
  torch_cmd = _fake_bench(tmp_path, "torch", kd=1.0, student=0.5, teacher=0.5, nested=False)
  # As a script: a child's ru_maxrss starts from its launcher's resident set, and pytest's process is large.
  result = subprocess.run([sys.executable, os.path.join(TOOLS, "bench_rounds.py"), "--rounds", "2", "--run",
                           f"jax={jax_cmd}", "--run", f"torch={torch_cmd}", "--reference", "torch", "--json"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  out, err = result.stdout, result.stderr
  report = json.loads(out)
  assert report["reference"] == "torch" and len(report["rounds"]) == 2
  first = report["rounds"][0]
  assert first["jax"]["steps"] == {"distill_step_s": 2.0, "student_step_s": 1.0, "teacher_forward_s": 1.5}
  assert first["torch"]["steps"]["distill_step_s"] == 1.0
  rss = [r[name]["peak_rss_mb"] for r in report["rounds"] for name in ("jax", "torch")]
  assert all(60 <= x < 400 for x in rss), rss
  # Throughput against the reference: jax's KD step takes twice torch's, so 0.50; the student step 0.50, the
  # teacher 0.33.
  assert "| jax | KD step | 2.000 | 0.50 | 0.50 0.50 |" in err
  assert "| jax | teacher forward | 1.500 | 0.33 |" in err
  assert "| torch | KD step | 1.000 | 1.00 | 1.00 1.00 |" in err


def test_rounds_errors(tmp_path):
  tool = _tool("bench_rounds")
  for argv in (["--run", "no-equals-sign"], ["--run", "a=x", "--run", "a=y"], ["--run", "a=x", "--rounds", "0"],
               ["--run", "a=x", "--reference", "b"]):
    with pytest.raises(SystemExit) as exit_info:
      tool.parse_args(argv)
    assert exit_info.value.code == 2
  with pytest.raises(RuntimeError, match="exited 3"):
    tool.run_once(f"{sys.executable} -c 'import sys; sys.exit(3)'")
  with pytest.raises(RuntimeError, match="no JSON"):
    tool.run_once(f"{sys.executable} -c 'print(1)'")
  with pytest.raises(ValueError, match="distill_step_s"):
    tool.step_times({"student_step_s": 1.0, "teacher_forward_s": 1.0})


def test_conv_shapes_collects_every_convolution_of_a_model():
  tool = _tool("conv_shapes")
  # resnet8: stem, then one BasicBlock per stage (two 3x3 convolutions), and a 1x1 projection where a stage
  # changes width or stride (stages 2 and 3): 1 + 6 + 2 = 9 convolutions.
  counts = tool.model_convs("resnet8", batch=2, num_classes=10)
  assert sum(counts.values()) == 9
  stem = ((2, 32, 32, 3), (3, 3, 3, 16), (1, 1), ((1, 1), (1, 1)), 1)
  assert counts[stem] == 1
  assert counts[((2, 32, 32, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1)), 1)] == 2
  strided = [s for s in counts if s[2] == (2, 2)]
  assert len(strided) == 4 and all(counts[s] == 1 for s in strided)  # 3x3 and 1x1 shortcut, stages 2 and 3
  assert tool.describe(strided[0]).endswith("/2")

  # Nested jaxprs (a jit inside the traced function) are searched too; depthwise is recognised.
  def f(x, w):
    return jax.jit(lambda a, b: lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=(
        "NHWC", "HWIO", "NHWC"), feature_group_count=4))(x, w)

  jaxpr = jax.make_jaxpr(f)(jnp.zeros((1, 5, 5, 4)), jnp.zeros((3, 3, 1, 4))).jaxpr
  found = tool.collect_convs(jaxpr, collections.Counter())
  (shape,) = found
  assert found[shape] == 1 and tool.is_depthwise(shape) and "g4" in tool.describe(shape)


def test_bench_memory_marks_every_stage_of_a_tiny_pair(capsys):
  tool = _tool("bench_memory")
  assert tool.main(["--teacher", "resnet8", "--student", "resnet8", "--batch", "8", "--programs", "teacher",
                    "--calls", "1", "--cpu-conv-kernels", "xla", "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  stages = report["stages"]
  assert [s["stage"] for s in stages][2:] == ["teacher variables drawn and placed", "teacher: compiled",
                                             "teacher: first call", "teacher: 1 more calls"]
  assert all(0 < s["rss_mb"] <= s["peak_rss_mb"] for s in stages)
  assert [s["peak_rss_mb"] for s in stages] == sorted(s["peak_rss_mb"] for s in stages)  # a peak never falls
  xla = stages[3]["xla"]
  assert xla["argument"] > 0 and xla["output"] > 0 and xla["temp"] >= 0
  with pytest.raises(SystemExit):
    tool.parse_args(["--programs", "student,everything"])
