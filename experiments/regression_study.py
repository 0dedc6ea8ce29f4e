"""The regression and pseudo-label study (METHODS.md item 16): small students with 20% of the labels, with and
without a teacher's pseudo-labels, on diabetes and on the synthetic trajectories, over 3 seeds.

Usage (the table in docs/methods.md, "Regression and pseudo-labels", comes from this command):
  python experiments/regression_study.py --seeds 0 1 2 --workdir runs/regression_study --update-docs
Per seed and dataset (experiments/regression_configs.py, `config.data.split_seed` = the seed for every run,
so all of them see the same split and labeled subset): the teacher (large model) on the labeled 20%; a
second teacher with `config.seed` + 100 (another initialisation and batch order, the same data); the student
(small model) on the labeled 20% alone; the student with 0.5·L2(labels) + 0.5·L2(teacher's predictions on
every training example); the same with the 2-teacher ensemble's mean, examples weighted by the teachers'
agreement; and the student with every training label (labeled_fraction 1), the upper reference. Rows: test
RMSE and MAE in the data's units (diabetes: disease progression score; trajectories: metres over the 24
future coordinates), mean ± std over seeds, and the RMSE reduction against the labeled-only student of the
same seed. Finished runs are reused, so an interrupted study resumes where it stopped. `--quick` shrinks
every run to a few steps (a smoke test, not a result; it never writes the docs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List

import numpy as np

from kd_jax.study import run_or_reuse, write_marked_block

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from regression_configs import (DATASETS, LABELED_FRACTION, SECOND_TEACHER_OFFSET,  # noqa: E402
                                regression_config)

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "methods.md")
ROWS = ("teacher", "teacher_2", "labeled", "pseudo_label", "ensemble", "full")
SHOWN = {"teacher": "teacher", "teacher_2": "second teacher", "labeled": "student, labels only",
         "pseudo_label": "student + pseudo-labels (teacher)",
         "ensemble": "student + pseudo-labels (2-teacher ensemble, weighted)",
         "full": "student, all labels (reference)"}


def _configs(dataset: str, seed: int, base: str):
  """(row, config) in training order: the teachers first, their workdirs fed to the students."""
  teachers = (os.path.join(base, "teacher"), os.path.join(base, "teacher_2"))
  second = regression_config(dataset, "teacher", seed)
  second.seed = seed + SECOND_TEACHER_OFFSET  # data.split_seed stays `seed`: the same split and labels
  return [("teacher", regression_config(dataset, "teacher", seed)), ("teacher_2", second),
          ("labeled", regression_config(dataset, "labeled", seed)),
          ("pseudo_label", regression_config(dataset, "pseudo_label", seed, teachers[:1])),
          ("ensemble", regression_config(dataset, "ensemble", seed, teachers)),
          ("full", regression_config(dataset, "full", seed))]


def _mean_std(values: List[float], digits: int) -> str:
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def table(results: Dict[str, Dict[str, Dict[int, Dict]]]) -> str:
  """The Markdown table: one row per (dataset, method), test metrics mean ± std over seeds."""
  lines = ["| data | run | model | labeled | test RMSE | test MAE | RMSE below labels-only |",
           "|---|---|---|---:|---:|---:|---:|"]
  for dataset, rows in results.items():
    digits = 2 if dataset == "diabetes" else 3
    for row in ROWS:
      per_seed = rows.get(row)
      if not per_seed:
        continue
      seeds = sorted(per_seed)
      gain = "—"
      if row not in ("teacher", "teacher_2", "labeled") and "labeled" in rows:
        gain = _mean_std([rows["labeled"][s]["rmse"] - per_seed[s]["rmse"] for s in seeds if s in rows["labeled"]],
                         digits)
      labeled = "100%" if row == "full" else f"{LABELED_FRACTION:.0%}"
      lines.append(f"| {dataset} | {SHOWN[row]} | {per_seed[seeds[0]]['model']} | {labeled} | "
                   f"{_mean_std([per_seed[s]['rmse'] for s in seeds], digits)} | "
                   f"{_mean_std([per_seed[s]['mae'] for s in seeds], digits)} | {gain} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
  parser.add_argument("--workdir", default="runs/regression_study")
  parser.add_argument("--quick", action="store_true", help="a few steps per run (smoke test)")
  parser.add_argument("--update-docs", action="store_true", help="write the table into docs/methods.md")
  args = parser.parse_args(argv)
  start = time.time()
  results: Dict[str, Dict[str, Dict[int, Dict]]] = {}
  for seed in args.seeds:
    for dataset in args.datasets:
      base = os.path.join(args.workdir, dataset, f"seed{seed}")
      for row, config in _configs(dataset, seed, base):
        if args.quick:
          config.epochs, config.max_steps, config.log_every_steps = 1, 3, 1
        print(f"[regression_study] seed {seed}: {dataset} {row}", flush=True)
        result = run_or_reuse(config, os.path.join(base, row))
        results.setdefault(dataset, {}).setdefault(row, {})[seed] = {
            "rmse": result["test_rmse"], "mae": result["test_mae"], "model": config.student.model}
  text = table(results)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "summary.md"), "w") as f:
    f.write(text + "\n")
  print("\n" + text)
  print(f"\n[regression_study] {time.time() - start:.0f} s")
  if args.update_docs and not args.quick:
    write_marked_block(DOCS, "regression_study", text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
