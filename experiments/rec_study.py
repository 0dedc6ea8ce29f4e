"""The recommender distillation study with explicit ratings (METHODS.md item 15b): RD (also with its hybrid
weight), CD (teacher- and student-guided), DE-RRD, TD (full and hierarchical), BD and DUET against the plain small
student on the synthetic ratings, over 3 seeds.

Usage (the table in docs/methods.md, "Recommenders with explicit ratings", comes from this command):
  python experiments/rec_study.py --seeds 0 1 2 --workdir runs/rec_study --update-docs
Per seed (experiments/rec_configs.py; every run of a seed shares `config.seed`, so the same validation split
and training ratings): the rating teacher (mf_large), DUET's preference teacher (mf_large on "rated or not"),
the student alone (mf_small), then the student with each method: RD, RD hybrid, CD, CD student-guided, DE-RRD
(DE + RRD terms), TD and TD hierarchical from the rating teacher, BD (the student and an mf_large peer trained
together under config.scheme='mutual', no pretrained teacher), DUET from both teachers. Rows: test RMSE (the
headline; lower is better) and NDCG@10 over each user's held-out ratings (higher is better), mean ± std over
seeds, the RMSE change against the student alone of the same seed (negative = better), and the median step
time. The fixed test split (10% of the ratings) is only reported; nothing is selected on it. Finished runs are
reused, so an interrupted study resumes where it stopped, unless they are stale: their loss config differs from
the current one, or the method's entry of `rec_configs.REVISIONS` (bumped when the library changes what a config
does) is newer than the one recorded in the run (`study_revision.json`, absent = 1); a stale run is deleted and
trained again, and so are the runs that read a teacher which was retrained. `--quick` shrinks every run to a few
steps (a smoke test, not a result; it never writes the docs); `--methods` picks rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from typing import Dict, List, Tuple

import numpy as np

from kd_jax.study import median_step_ms, run_or_reuse, write_marked_block

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rec_configs import METHODS, NEEDS, REVISIONS, rec_config  # noqa: E402

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "methods.md")
TEACHERS = ("teacher", "preference_teacher")
SHOWN = {"teacher": "teacher (mf_large)", "preference_teacher": "preference teacher (mf_large, rated or not)",
         "student": "student alone (mf_small)", "rd": "RD", "rd_hybrid": "RD, hybrid weight (μ = 0.1)",
         "cd": "CD (teacher-guided)", "cd_student": "CD (student-guided)", "de_rrd": "DE-RRD", "td": "TD (full)",
         "td_hier": "TD (hierarchical)", "bd": "BD (student with an mf_large peer)", "duet": "DUET"}
STAMP = "study_revision.json"


def _stale(config, workdir: str, revision: int) -> bool:
  """Whether a finished run in `workdir` must be trained again (see the module docstring)."""
  done = os.path.join(workdir, "results.json")
  if not os.path.isfile(done):
    return False
  with open(done) as f:
    stored_loss = json.load(f).get("loss")
  stamp = os.path.join(workdir, STAMP)
  recorded = 1
  if os.path.isfile(stamp):
    with open(stamp) as f:
      recorded = json.load(f)["revision"]
  return stored_loss != json.loads(json.dumps(config.loss.to_dict())) or recorded < revision


def run_current(config, workdir: str, revision: int, force: bool = False) -> Tuple[Dict, bool]:
  """`(results, trained)`: `run_or_reuse`, after deleting the run in `workdir` when it is stale (or `force`);
  `trained` is False where a finished run was reused. Records the revision in the run."""
  if os.path.isdir(workdir) and (force or _stale(config, workdir, revision)):
    print(f"[rec_study] {workdir} is stale: training it again", flush=True)
    shutil.rmtree(workdir)
  reused = os.path.isfile(os.path.join(workdir, "results.json"))
  result = run_or_reuse(config, workdir)
  with open(os.path.join(workdir, STAMP), "w") as f:
    json.dump({"revision": revision}, f)
  return result, not reused


def _mean_std(values: List[float], digits: int = 4) -> str:
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def study_table(results: Dict[str, Dict[int, Dict]]) -> str:
  """The Markdown table of `results[method][seed] = {'rmse', 'ndcg', 'step_ms'}`."""
  lines = ["| run | test RMSE | vs student alone | test NDCG@10 | step |", "|---|---:|---:|---:|---:|"]
  for method, per_seed in results.items():
    seeds = sorted(per_seed)
    delta = ""
    if method not in TEACHERS + ("student",) and "student" in results:
      delta = _mean_std([per_seed[s]["rmse"] - results["student"][s]["rmse"] for s in seeds
                         if s in results["student"]])
    ndcg = "—" if method == "preference_teacher" else _mean_std([per_seed[s]["ndcg"] for s in seeds])
    rmse = "—" if method == "preference_teacher" else _mean_std([per_seed[s]["rmse"] for s in seeds])
    step = statistics.median(per_seed[s]["step_ms"] for s in seeds)
    lines.append(f"| {SHOWN.get(method, method)} | {rmse} | {delta} | {ndcg} | "
                 f"{'—' if np.isnan(step) else f'{step:.1f} ms'} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m not in TEACHERS])
  parser.add_argument("--workdir", default="runs/rec_study")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--update-docs", action="store_true", help="write the table into docs/methods.md")
  args = parser.parse_args(argv)
  unknown = sorted(set(args.methods) - set(METHODS))
  if unknown:
    parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
  needed = [t for t in TEACHERS if any(t in NEEDS.get(m, ()) for m in args.methods) or t == "teacher"]
  start = time.time()
  results: Dict[str, Dict[int, Dict]] = {}
  for seed in args.seeds:
    base = os.path.join(args.workdir, f"seed{seed}")
    workdirs = {t: os.path.join(base, t) for t in TEACHERS}
    retrained = set()
    for method in needed + [m for m in args.methods if m not in needed]:
      config = rec_config(method, seed, workdirs["teacher"], workdirs["preference_teacher"])
      if args.quick:
        config.epochs, config.max_steps, config.log_every_steps = 1, 3, 1
      print(f"[rec_study] seed {seed}: {method}", flush=True)
      workdir = os.path.join(base, method)
      result, trained = run_current(config, workdir, REVISIONS.get(method, 1),
                                    force=any(t in retrained for t in NEEDS.get(method, ())))
      if trained:
        retrained.add(method)
      results.setdefault(method, {})[seed] = {"rmse": result["test_rmse"], "ndcg": result["test_ndcg@10"],
                                              "step_ms": median_step_ms(workdir)}
  table = study_table(results)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "summary.md"), "w") as f:
    f.write(table + "\n")
  print("\n" + table + f"\n\n[rec_study] {time.time() - start:.0f} s")
  if args.update_docs and not args.quick:
    write_marked_block(DOCS, "rec_study", table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
