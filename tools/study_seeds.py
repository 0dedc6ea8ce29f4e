"""Runs the default study over several seeds and prints mean ± std test accuracy per run.

Usage (the README's numbers come from this command):
  python tools/study_seeds.py --seeds 0 1 2 --workdir runs/study_seeds
Each seed is a full `python -m kd_jax` study in <workdir>/seed<k>; the table is also written to
<workdir>/summary.md.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from kd_jax.study import run_study


def summarize(per_seed: dict) -> str:
  """Markdown table: one row per run, mean ± sample std over seeds of test (and val) accuracy."""
  seeds = sorted(per_seed)
  runs = [r["run"] for r in per_seed[seeds[0]]]
  lines = [f"| run | model | test acc (mean ± std over {len(seeds)} seeds) | val acc | per-seed test acc | "
           "wall time (mean) |", "|---|---|---:|---:|---|---:|"]
  for i, run in enumerate(runs):
    rows = [per_seed[s][i] for s in seeds]
    test = np.array([100 * r["test_accuracy"] for r in rows])
    val = np.array([100 * r["val_accuracy"] for r in rows])
    std = lambda a: a.std(ddof=1) if len(a) > 1 else 0.0
    lines.append(f"| {run} | {rows[0]['model']} | {test.mean():.2f} ± {std(test):.2f} | "
                 f"{val.mean():.2f} ± {std(val):.2f} | {', '.join(f'{t:.2f}' for t in test)} | "
                 f"{np.mean([r['wall_time_s'] for r in rows]):.1f} s |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--workdir", default="runs/study_seeds")
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  per_seed = {}
  for seed in args.seeds:
    out = run_study(os.path.join(args.workdir, f"seed{seed}"), seed=seed, quick=args.quick, progress_bar=False)
    per_seed[seed] = out["rows"]
    print(out["table"], flush=True)
  table = summarize(per_seed)
  with open(os.path.join(args.workdir, "summary.md"), "w") as f:
    f.write(table + "\n")
  print("\n" + table)


if __name__ == "__main__":
  main()
