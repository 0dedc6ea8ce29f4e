"""Where a KD benchmark process's resident memory goes, stage by stage.

Usage:
  python tools/bench_memory.py                                  # resnet32x4 -> resnet8x4, batch 64, KD
  python tools/bench_memory.py --programs kd                    # the KD step alone, no (a) and (b) before it
  python tools/bench_memory.py --teacher vgg13 --student vgg8 --json

`tools/bench.py` reports one whole-process peak (`peak_rss_mb`). This builds the same programs the same way
(it imports tools/bench.py: the same models, random teacher, student state and compiled steps) and reads
the process's resident set (`VmRSS`) and its peak so far (`VmHWM`, both from /proc/self/status) after each
stage: the imports, the oneDNN self-check and the models, the teacher's variables, each program's build
(the run, the student's initialised state), its first call (trace, compile, run) and `--calls` more. For
each compiled program it also gives XLA's own account (`compiled.memory_analysis()`: arguments, outputs,
scratch "temp", generated code) and the bytes of every live JAX array afterwards. `--programs` picks and
orders the programs as bench.py runs them: `student` (a), `teacher` (b), `kd` (c). Linux only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import bench  # noqa: E402  (tools/bench.py)
from kd_jax.train.teachers import Teachers  # noqa: E402

PROGRAMS = ("student", "teacher", "kd")


def _status_mb(field: str) -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024  # kB
  raise RuntimeError(f"/proc/self/status has no {field}")


def live_arrays_mb() -> float:
  return sum(x.nbytes for x in jax.live_arrays()) / 2**20


def xla_account(compiled: Any) -> Dict[str, float]:
  stats = compiled.memory_analysis()
  return {key: getattr(stats, f"{key}_size_in_bytes") / 2**20
          for key in ("argument", "output", "alias", "temp", "generated_code")}


class Stages:
  """The rows of the report: one per stage, with RSS, peak RSS and live JAX arrays in MiB."""

  def __init__(self):
    self.rows: List[Dict[str, Any]] = []

  def mark(self, stage: str, **extra: Any) -> None:
    gc.collect()
    row = {"stage": stage, "rss_mb": _status_mb("VmRSS"), "peak_rss_mb": _status_mb("VmHWM"),
           "live_arrays_mb": live_arrays_mb(), **extra}
    self.rows.append(row)
    print(f"[memory] {stage}: RSS {row['rss_mb']:.0f} MiB, peak {row['peak_rss_mb']:.0f}, live arrays "
          f"{row['live_arrays_mb']:.0f}", file=sys.stderr, flush=True)


def measure_program(name: str, setup: Any, stages: Stages, calls: int) -> None:
  """Builds, compiles and runs one program `calls` + 1 times, marking each stage."""
  teachers, teacher_variables = setup.teachers_for("kd")
  if name == "teacher":
    def forward(variables, images):
      return teachers(variables, images).prediction

    fn = jax.jit(forward, compiler_options=setup.compiler_options)
    call_args = (teacher_variables, setup.inputs)
    call = lambda: fn(*call_args)
  else:
    terms = {"ce": {"weight": 1.0}} if name == "student" else {"ce": {"weight": 0.1}, "kd": {"weight": 0.9}}
    fn, call, holder = bench.build_step(setup, terms, Teachers() if name == "student" else teachers,
                                        () if name == "student" else teacher_variables)
    stages.mark(f"{name}: run built, state initialised")
    call_args = (holder["state"], setup.batch, holder["teacher_variables"])
  # Compiled first on its own (the jitted call below reuses this executable), so compiling and running
  # show up as separate stages.
  account = xla_account(fn.lower(*call_args).compile())
  stages.mark(f"{name}: compiled", xla=account)
  jax.block_until_ready(call())
  stages.mark(f"{name}: first call")
  for _ in range(calls):
    jax.block_until_ready(call())
  stages.mark(f"{name}: {calls} more calls")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--teacher", default="resnet32x4")
  parser.add_argument("--student", default="resnet8x4")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--cpu-conv-kernels", default="auto", choices=("auto", "xla", "ynnpack", "onednn"))
  parser.add_argument("--programs", default=",".join(PROGRAMS),
                      help="comma-separated, in order: student (a), teacher (b), kd (c); default all three")
  parser.add_argument("--calls", type=int, default=5, help="calls after the first, per program (default 5)")
  parser.add_argument("--json", action="store_true", help="one JSON object on stdout, the table on stderr")
  args = parser.parse_args(argv)
  args.programs = [p.strip() for p in args.programs.split(",") if p.strip()]
  bad = [p for p in args.programs if p not in PROGRAMS]
  if bad or not args.programs:
    parser.error(f"--programs takes a comma-separated list of {', '.join(PROGRAMS)}; got {bad or 'nothing'}")
  if not sys.platform.startswith("linux"):
    parser.error("this reads /proc/self/status: Linux only")
  return args


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  stages = Stages()
  stages.mark("imports (jax, kd_jax, tools/bench.py)")
  bench_args = bench.parse_args(["--teacher", args.teacher, "--student", args.student, "--batch", str(args.batch),
                                 "--cpu-conv-kernels", args.cpu_conv_kernels, "--distillers", "kd"])
  bench.validate_args(bench_args)
  setup = bench.make_setup(bench_args)
  stages.mark("setup: kernels chosen (oneDNN built and self-checked), models, the batch on the device")
  setup.teachers_for("kd")
  stages.mark("teacher variables drawn and placed")
  for name in args.programs:
    measure_program(name, setup, stages, args.calls)
  lines = [f"{args.teacher} -> {args.student}, batch {args.batch}, cpu_conv_kernels={args.cpu_conv_kernels}, "
           f"programs {', '.join(args.programs)}", "",
           "| stage | RSS MiB | peak RSS MiB | live arrays MiB | XLA: arguments / outputs / temp / code MiB |",
           "|---|---:|---:|---:|---|"]
  for row in stages.rows:
    xla = row.get("xla")
    account = (f"{xla['argument']:.0f} / {xla['output']:.0f} / {xla['temp']:.0f} / {xla['generated_code']:.1f}"
               if xla else "")
    lines.append(f"| {row['stage']} | {row['rss_mb']:.0f} | {row['peak_rss_mb']:.0f} | "
                 f"{row['live_arrays_mb']:.0f} | {account} |")
  table = "\n".join(lines)
  if args.json:
    print(table, file=sys.stderr)
    print(json.dumps({"args": vars(args), "stages": stages.rows}))
  else:
    print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
