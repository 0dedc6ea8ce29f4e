"""DGKD's error overlap: how many of a student's test errors its teacher and assistants also make.

Usage (finished run directories; the student first):
  python tools/error_overlap.py runs/dgkd/student_dgkd runs/dgkd/teacher runs/dgkd/ta_plane8 ...
  python tools/error_overlap.py --pipeline runs/dgkd --student student_dgkd
With `--pipeline` the others are the stages the student learnt from (its `teacher.workdir` and
`extra_workdirs`). Every model is evaluated on the student's test split (the student's config.json names
the data); prints a Markdown table (`kd_jax.metrics.error_overlap` defines the rates) and `--json` writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Sequence

import ml_collections
import numpy as np

from kd_jax import data as kd_data
from kd_jax import metrics
from kd_jax.config import base_config
from kd_jax.errors import KDJaxError
from kd_jax.train import workdir as kd_workdir
from kd_jax.train.run import load_data
from kd_jax.train.teachers import load_teachers, teacher_logits


def _run_config(workdir: str) -> ml_collections.ConfigDict:
  stored = kd_workdir.stored_config(workdir)
  if stored is None or not os.path.isfile(os.path.join(workdir, "results.json")):
    raise KDJaxError(f"{workdir!r} is not a finished kd_jax run (no config.json/results.json): train it first.")
  config = base_config()
  config.update_from_flattened_dict({k: tuple(v) if isinstance(v, list) else v
                                     for k, v in kd_workdir.flatten_config(stored).items()
                                     if not k.startswith(("loss.", "phases", "peers"))})
  return config


def error_overlap_of_runs(student: str, others: Sequence[str]) -> Dict[str, object]:
  """Test errors of the student run and of each other run, and the overlap rates between them."""
  config = _run_config(student)
  dataset = load_data(config)
  config.teacher.workdir, config.teacher.extra_workdirs = student, tuple(others)
  config.teacher.model, config.teacher.pruned_copy_rate = "", 0.0
  sample = dataset.test.get(np.arange(1))["image"]
  modules, variables = load_teachers(config, dataset.num_classes, sample)
  logits, labels = teacher_logits(modules, variables, kd_data.eval_batches(dataset.test, config.eval_batch_size))
  wrong = logits.argmax(-1) != labels[None]
  overlap = metrics.error_overlap(wrong[0], wrong[1:])
  rows = [{"run": path, "test_errors": int(w.sum()), "test_accuracy": float(1 - w.mean()),
           "shares_student_errors": rate} for path, w, rate in zip(others, wrong[1:], overlap["per_model"])]
  return {"student": student, "test_examples": int(len(labels)), "student_errors": overlap["student_errors"],
          "student_accuracy": float(1 - wrong[0].mean()), "others": rows, "any": overlap["any"],
          "all": overlap["all"]}


def table(result: Dict[str, object]) -> str:
  lines = [f"Student {result['student']}: {result['student_errors']} errors on {result['test_examples']} test "
           f"examples ({100 * result['student_accuracy']:.2f}% accuracy).", "",
           "| model | test errors | test acc | shares the student's errors |", "|---|---:|---:|---:|"]
  for r in result["others"]:
    lines.append(f"| {r['run']} | {r['test_errors']} | {100 * r['test_accuracy']:.2f} | "
                 f"{100 * r['shares_student_errors']:.1f}% |")
  lines.append(f"| any of them | | | {100 * result['any']:.1f}% |")
  lines.append(f"| all of them | | | {100 * result['all']:.1f}% |")
  return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="*", help="run directories: the student, then the models to compare")
  parser.add_argument("--pipeline", help="a pipeline directory; with --student, compare the stage's teachers")
  parser.add_argument("--student", help="the student stage of --pipeline")
  parser.add_argument("--json", help="also write the result to this JSON file")
  args = parser.parse_args(argv)
  try:
    if args.pipeline:
      if not args.student or args.runs:
        raise KDJaxError("--pipeline needs --student STAGE and no run directories.")
      student = os.path.join(args.pipeline, args.student)
      config = kd_workdir.stored_config(student) or {}
      teacher = config.get("teacher", {})
      others = [w for w in (teacher.get("workdir"), *teacher.get("extra_workdirs", ())) if w]
      if not others:
        raise KDJaxError(f"Stage {args.student!r} of {args.pipeline!r} has no teachers (or has not run).")
    elif len(args.runs) >= 2:
      student, others = args.runs[0], args.runs[1:]
    else:
      raise KDJaxError("Give the student's run directory and at least one other, or --pipeline and --student.")
    result = error_overlap_of_runs(student, others)
  except KDJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(table(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
