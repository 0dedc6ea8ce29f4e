"""The train step under several convolution backward modes (`config.conv_backward`), timed interleaved.

Usage:
  python tools/bench_conv_backward.py                                  # resnet8x4, CE, modes xla and auto
  python tools/bench_conv_backward.py --student mobilenetv2 --rounds 6
  python tools/bench_conv_backward.py --loss kd --modes xla,auto,matmul --json

Why interleaved: on a small shared machine the speed of the same program drifts by tens of percent over
minutes (other tenants, clock changes), so two modes timed one after the other, as two runs of
`tools/bench.py --conv ...` do, compare the machine's moods as much as the modes. Here every mode's step is
built and compiled first (the training loop's step as `tools/bench.py` builds it, `build_step`: that is
`kd_jax.train.run.build_run`, `init_state` and `make_step`, each mode with its own fresh state and its own
models, built with that mode's kernels as a training run builds them), then the
timed calls go round-robin: round r times one call of every mode. Drift falls on all modes alike; the ratio
of medians is the figure to read. Timing an unchanged mode twice (`--modes xla,auto,xla`) shows the noise
floor of the run.

The loss is `ce` (the student's CE step: (a) of `tools/bench.py`, no teacher) or `kd` (`ce + kd` with the
teacher, (c)). Modes are `config.conv_backward` values, resolved for `--cpu-conv-kernels` as a training run
resolves them (`kd_jax.backends.kernels_for`). Output: per mode the median and the minimum
wall time of a step, the median's ratio to the first mode's, and the loss of the mode's first step (all
modes start from the same state and batch, so these agree up to float32 rounding); with `--json` one JSON
object (`modes`: a list of `mode`, `resolved`, `median_s`, `min_s`, `times_s`, `ratio`, `first_loss`, plus
the setting).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import bench  # noqa: E402
from kd_jax import backends  # noqa: E402
from kd_jax.backends.cpu import conv as kd_conv  # noqa: E402
from kd_jax.errors import KDJaxError  # noqa: E402

LOSSES = {"ce": {"ce": {"weight": 1.0}}, "kd": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0}}}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--teacher", default="resnet32x4")
  parser.add_argument("--student", default="resnet8x4")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--num-classes", type=int, default=100)
  parser.add_argument("--loss", default="ce", choices=sorted(LOSSES))
  parser.add_argument("--modes", default="xla,auto",
                      help=f"comma-separated conv_backward values ({', '.join(kd_conv.CONV_BACKWARDS)}); "
                           "the first is the reference of the ratios; a mode may repeat")
  parser.add_argument("--cpu-conv-kernels", default="xla", choices=kd_conv.CPU_CONV_KERNELS)
  parser.add_argument("--rounds", type=int, default=10, help="timed calls per mode (default 10)")
  parser.add_argument("--json", action="store_true")
  return parser.parse_args(argv)


def _modes(spec: str) -> List[str]:
  modes = [m.strip() for m in spec.split(",") if m.strip()]
  if not modes:
    raise KDJaxError("--modes is empty; give conv_backward values, e.g. --modes xla,auto.")
  for mode in modes:
    kd_conv.validate_conv_backward(mode)
  return modes


def run(args: argparse.Namespace) -> Dict[str, Any]:
  modes = _modes(args.modes)
  if args.rounds < 1:
    raise KDJaxError(f"--rounds must be at least 1; got {args.rounds}.")
  calls, resolved, first_losses = [], [], []
  for mode in modes:
    # The same seeds for every mode: the same batch, teacher variables and initial state.
    setup = bench.make_setup(bench.parse_args([
        "--teacher", args.teacher, "--student", args.student, "--batch", str(args.batch),
        "--image-size", str(args.image_size), "--num-classes", str(args.num_classes),
        "--cpu-conv-kernels", args.cpu_conv_kernels, "--conv", mode]))
    teachers, teacher_variables = setup.teachers_for("single")
    _, call, _ = bench.build_step(setup, LOSSES[args.loss], teachers, teacher_variables)
    resolved.append(backends.kernels_for(setup.config).conv_mode)
    first_losses.append(float(call()))  # every mode starts from the same state: equal up to rounding
    jax.block_until_ready(call())  # one untimed call after compilation, as bench.py's warm-up
    calls.append(call)
  times: List[List[float]] = [[] for _ in modes]
  for _ in range(args.rounds):
    for i, call in enumerate(calls):
      start = time.perf_counter()
      call().block_until_ready()
      times[i].append(time.perf_counter() - start)
  reference = statistics.median(times[0])
  rows = [{"mode": mode, "resolved": res, "median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts,
           "ratio": statistics.median(ts) / reference, "first_loss": loss}
          for mode, res, ts, loss in zip(modes, resolved, times, first_losses)]
  return {"student": args.student, "teacher": args.teacher if args.loss == "kd" else None, "loss": args.loss,
          "batch": args.batch, "image_size": args.image_size, "cpu_conv_kernels": args.cpu_conv_kernels,
          "rounds": args.rounds, "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
          "jax_version": jax.__version__, "load_average": list(os.getloadavg()), "modes": rows}


def format_table(report: Dict[str, Any]) -> str:
  head = (f"{report['student']} {report['loss']} step, batch {report['batch']}, {report['devices']} × "
          f"{report['device']}, {report['rounds']} interleaved rounds, load average "
          f"{', '.join(f'{v:.2f}' for v in report['load_average'])}")
  lines = [head, "", "| mode | resolved | median ms | min ms | ratio to first | first loss |",
           "|---|---|---:|---:|---:|---:|"]
  for row in report["modes"]:
    lines.append(f"| {row['mode']} | {row['resolved']} | {row['median_s'] * 1e3:.1f} | {row['min_s'] * 1e3:.1f} "
                 f"| {row['ratio']:.3f} | {row['first_loss']:.6f} |")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  try:
    report = run(args)
  except KDJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(report) if args.json else format_table(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
