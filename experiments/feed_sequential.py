"""Sequential FEED: each stage's student teaches the next stage's student.

Park & Kwak, arXiv:1909.10754. Stage 1 distils a teacher run into the student with FEED's loss and one
translator (FT's loss on the teacher's raw last-stage feature, β = 500, next to CE weight 1); stage i + 1 uses
stage i's student run (its workdir, passed as `config.teacher.workdir`, the model read from that run) as its
only teacher. Every stage is an ordinary `train_and_evaluate` run of the same config (by default
experiments/digits_feed.py, with `teacher.extra_workdirs` cleared), in `<workdir>/stage<i>`; a finished stage
is resumed, not retrained. The script prints, and writes to `<workdir>/results.md`, a Markdown table of the
stages' test accuracies (row 0 is the first teacher's run when it has a results.json). The paper treats this
variant as a source of lessons rather than its main method.

Digits, one seed, 30 epochs per stage, cnn_small students, cnn_large teacher (98.52% test) from
experiments/digits_teacher.py, `--stages 3` (the command below): stage 1 97.77%, stage 2 97.59%, stage 3
97.22% test accuracy (validation 99.21%, 100.00%, 97.62%); the CE-only cnn_small is 97.77%. One test image is
0.19 points; no gain from the chain here.

Usage (train the teacher first, experiments/digits_teacher.py):
  python experiments/feed_sequential.py --workdir runs/feed_seq --stages 3 \
      --teacher-workdir runs/digits_teacher [--config experiments/digits_feed.py] [--config.KEY=VALUE ...]
e.g. --config.loss.feed.beta=100 or --config.seed=1; overrides apply to every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

import ml_collections

from kd_jax.config import apply_overrides, load_config_file
from kd_jax.errors import KDJaxError
from kd_jax.train.loop import train_and_evaluate

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_feed.py")


def stage_config(config: ml_collections.ConfigDict, teacher_workdir: str, first: bool) -> ml_collections.ConfigDict:
  """`config` with one teacher, the run in `teacher_workdir`; later stages read the model from that run."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.teacher.workdir = teacher_workdir
  c.teacher.extra_workdirs = ()
  if not first:
    c.teacher.model = ""  # the previous stage's student, as recorded in its exported model
  return c


def run_sequential(config: ml_collections.ConfigDict, workdir: str, stages: int, teacher_workdir: str, *,
                   dataset=None) -> List[Dict[str, Any]]:
  """Trains `stages` students in a chain; returns one row per stage (its `train_and_evaluate` results)."""
  if stages < 1:
    raise KDJaxError(f"--stages must be >= 1, got {stages}.")
  if "feed" not in {spec.get("distiller", term) for term, spec in config.loss.items()}:
    raise KDJaxError("sequential FEED needs a 'feed' term in config.loss (see experiments/digits_feed.py).")
  rows, teacher = [], teacher_workdir
  for stage in range(1, stages + 1):
    print(f"[feed_sequential] stage {stage}/{stages}: teacher {teacher}", flush=True)
    stage_dir = os.path.join(workdir, f"stage{stage}")
    results = train_and_evaluate(stage_config(config, teacher, first=stage == 1), stage_dir, dataset=dataset)
    rows.append({"stage": stage, "teacher": teacher, **results})
    teacher = stage_dir
  return rows


def results_table(rows: List[Dict[str, Any]], teacher_results: Optional[Dict[str, Any]] = None) -> str:
  """Markdown table: stage, model, its teacher, validation and test accuracy."""
  lines = ["| stage | model | teacher | val acc | test acc |", "|---:|---|---|---:|---:|"]
  if teacher_results:
    lines.append(f"| 0 (teacher) | {teacher_results['model']} | — | {100 * teacher_results['val_accuracy']:.2f} | "
                 f"{100 * teacher_results['test_accuracy']:.2f} |")
  for r in rows:
    lines.append(f"| {r['stage']} | {r['model']} | {r['teacher']} | {100 * r['val_accuracy']:.2f} | "
                 f"{100 * r['test_accuracy']:.2f} |")
  return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description="Sequential FEED: a chain of FEED stages.",
                                   epilog="Extra --config.KEY=VALUE arguments override config keys in every stage.")
  parser.add_argument("--workdir", required=True, help="directory of the chain; stage i runs in <workdir>/stage<i>")
  parser.add_argument("--stages", type=int, default=3)
  parser.add_argument("--teacher-workdir", default="runs/digits_teacher", help="the first stage's teacher run")
  parser.add_argument("--config", default=DEFAULT_CONFIG, help="Python config with a 'feed' loss term")
  args, extra = parser.parse_known_args(argv)
  unknown = [a for a in extra if not a.startswith("--config.")]
  if unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  try:
    config = apply_overrides(load_config_file(args.config), [a[len("--config."):] for a in extra])
    rows = run_sequential(config, args.workdir, args.stages, args.teacher_workdir)
  except KDJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  teacher_results = None
  path = os.path.join(args.teacher_workdir, "results.json")
  if os.path.isfile(path):
    with open(path) as f:
      teacher_results = json.load(f)
  table = results_table(rows, teacher_results)
  with open(os.path.join(args.workdir, "results.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    json.dump(rows, f, indent=2)
  print("\n" + table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
