"""Alternating rounds of benchmark commands, so that a shared or drifting machine affects every side alike.

Usage:
  python tools/bench_rounds.py --rounds 4 \\
    --run "kd_jax=python tools/bench.py --teacher resnet32x4 --student resnet8x4 --batch 64 --distillers kd --steps 8 --json" \\
    --run "eager=python tools/bench_torch.py --teacher resnet32x4 --student resnet8x4 --batch 64 --steps 8 --json" \\
    --run "compiled=python tools/bench_torch.py --teacher resnet32x4 --student resnet8x4 --batch 64 --steps 8 --compile --json"
  ... --json          # the table on stderr, one JSON object (every round's figures) on stdout

Each round runs every `--run NAME=COMMAND` once, in the order given (kd_jax, eager, compiled, kd_jax, ...).
A command prints one JSON object on stdout: `tools/bench.py --json` (its first result row) or
`tools/bench_torch.py --json` (its top level); from it this takes `student_step_s`, `teacher_forward_s` and
`distill_step_s` (each already a median over the command's timed calls), and from the operating system the
command's whole-process peak resident set (`ru_maxrss` of that child, by `os.wait4`, so both frameworks are
measured the same way). Linux counts a child's peak from the launching process's resident set at the fork,
so this tool launches the commands from its own small process (~20 MiB); run it as a script, not from a
large Python process. The table gives, per command, the median over rounds of each step, each step's
throughput relative to the first command's (`--reference` picks another; > 1 = faster than it), the
per-round ratios, and the largest peak RSS. A command that fails stops the run with its stderr's tail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

STEPS = (("distill_step_s", "KD step"), ("student_step_s", "student CE step"),
         ("teacher_forward_s", "teacher forward"))


def step_times(report: Dict[str, Any]) -> Dict[str, float]:
  """The three step medians of one command's JSON report (`tools/bench.py` or `tools/bench_torch.py`)."""
  row = report["results"][0] if report.get("results") else report
  missing = [key for key, _ in STEPS if key not in row]
  if missing:
    raise ValueError(f"the command's JSON has no {', '.join(missing)}: run tools/bench.py or "
                     "tools/bench_torch.py with --json")
  return {key: float(row[key]) for key, _ in STEPS}


def run_once(command: str) -> Tuple[Dict[str, Any], float]:
  """Runs `command` (through the shell) once: its JSON report and its peak RSS in MiB."""
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    child = subprocess.Popen(command, shell=True, stdout=out, stderr=err)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0), err.seek(0)
    stdout, stderr = out.read().decode(), err.read().decode()
  if child.returncode != 0:
    raise RuntimeError(f"{command!r} exited {child.returncode}:\n{stderr[-3000:]}")
  lines = [line for line in stdout.splitlines() if line.startswith("{")]
  if not lines:
    raise RuntimeError(f"{command!r} printed no JSON object on stdout (pass --json):\n{stderr[-2000:]}")
  # ru_maxrss is KiB on Linux. The shell is the direct child; on Linux a reaped child's ru_maxrss is the
  # largest of it and its own reaped descendants, so this is the benchmark process's peak.
  return json.loads(lines[-1]), usage.ru_maxrss / 1024


def summarise(rounds: List[Dict[str, Dict[str, Any]]], names: Sequence[str], reference: str) -> str:
  """The Markdown table of every command's medians over the rounds, against `reference`."""
  lines = ["| command | step | median s | throughput vs " + reference + " | per-round ratio | peak RSS MiB |",
           "|---|---|---:|---:|---|---:|"]
  for name in names:
    rss = max(r[name]["peak_rss_mb"] for r in rounds)
    for key, label in STEPS:
      times = [r[name]["steps"][key] for r in rounds]
      ratios = [r[reference]["steps"][key] / r[name]["steps"][key] for r in rounds]
      median_ratio = statistics.median(r[reference]["steps"][key] for r in rounds) / statistics.median(times)
      lines.append(f"| {name} | {label} | {statistics.median(times):.3f} | {median_ratio:.2f} | "
                   f"{' '.join(f'{x:.2f}' for x in ratios)} | {rss:.0f} |")
  return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", action="append", required=True, metavar="NAME=COMMAND",
                      help="a named command that prints one benchmark JSON object (repeat)")
  parser.add_argument("--rounds", type=int, default=4, help="how many times each command runs (default 4)")
  parser.add_argument("--reference", default=None, help="the command the ratios are against (default: the first)")
  parser.add_argument("--json", action="store_true", help="every round's figures as one JSON object on stdout")
  args = parser.parse_args(argv)
  runs = []
  for item in args.run:
    name, sep, command = item.partition("=")
    if not sep or not name.strip() or not command.strip():
      parser.error(f"--run {item!r}: write NAME=COMMAND, e.g. --run 'eager=python tools/bench_torch.py --json'")
    runs.append((name.strip(), command.strip()))
  names = [name for name, _ in runs]
  if len(set(names)) != len(names):
    parser.error(f"--run names must differ, got {names}")
  if args.rounds < 1:
    parser.error(f"--rounds must be at least 1, got {args.rounds}")
  args.reference = args.reference or names[0]
  if args.reference not in names:
    parser.error(f"--reference {args.reference!r} is not one of the --run names {names}")
  args.runs = runs
  return args


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  rounds: List[Dict[str, Dict[str, Any]]] = []
  for index in range(args.rounds):
    this_round: Dict[str, Dict[str, Any]] = {}
    for name, command in args.runs:
      report, rss = run_once(command)
      this_round[name] = {"steps": step_times(report), "peak_rss_mb": rss, "report": report}
      steps = this_round[name]["steps"]
      print(f"[rounds] {index + 1}/{args.rounds} {name}: KD {steps['distill_step_s']:.3f} s, student "
            f"{steps['student_step_s']:.3f} s, teacher {steps['teacher_forward_s']:.3f} s, peak RSS {rss:.0f} MiB",
            file=sys.stderr, flush=True)
    rounds.append(this_round)
  names = [name for name, _ in args.runs]
  table = (f"{args.rounds} alternating rounds ({', '.join(names)}), medians over the rounds of each command's "
           "medians; load average at the end "
           f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n\n" + summarise(rounds, names, args.reference))
  if args.json:
    print(table, file=sys.stderr)
    print(json.dumps({"commands": dict(args.runs), "reference": args.reference, "rounds": rounds}))
  else:
    print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
