"""Teaching in steps on the embedded digits data: plain KD vs TAKD vs DGKD vs stochastic DGKD on one chain,
and Pacemaker KD vs direct KD for a 1×N student, over several seeds.

Usage (the tables in docs/methods.md, "Teacher assistants", come from this command):
  python experiments/chain_study.py --seeds 0 1 2 --workdir runs/chain_study --update-docs
Per seed it runs the pipelines experiments/digits_chain.py and experiments/digits_pacemaker.py
(`python -m kd_jax pipeline`, seed overridden) in <workdir>/chain_s<seed> and <workdir>/pacemaker_s<seed>;
finished stages are skipped, so an interrupted study resumes where it stopped. Rows: test accuracy mean ±
sample std over seeds, the gain over the student with KD from the teacher alone (mean ± std of the per-seed
differences), and for the chain's final students DGKD's error overlap (the share of the student's test errors
that the teacher or an assistant it learnt from also makes; tools/error_overlap.py). `--quick` shrinks every
run to a few steps (a smoke test of the script, not a result).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
from typing import Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from kd_jax.study import write_marked_block  # noqa: E402
from kd_jax.train import workdir as kd_workdir  # noqa: E402
from kd_jax.train.pipeline import load_pipeline_file, run_pipeline  # noqa: E402

DOCS = os.path.join(HERE, os.pardir, "docs", "methods.md")
# (pipeline file, table rows: stage -> label); the first row of each table is its teacher.
CAPTIONS = {"chain": "TAKD's plain CNNs, plane10 → plane8 → plane6 → plane4 → plane2 (experiments/digits_chain.py)",
            "pacemaker": "Pacemaker KD, WRN-16-2 with 3×3, 2×3 and 1×3 filters (experiments/digits_pacemaker.py)"}
STUDIES = {
    "chain": ("digits_chain.py", {
        "teacher": "teacher plane10", "student_ce": "student plane2, CE", "student_kd": "KD from the teacher",
        "takd_student": "TAKD (10→8→6→4→2)", "dgkd_student": "DGKD", "sdgkd_student": "DGKD, stochastic (drop 1)"}),
    "pacemaker": ("digits_pacemaker.py", {
        "teacher": "teacher wrn_16_2 (3×3)", "pacemaker": "pacemaker wrn_16_2_2x3, KD from the teacher",
        "student_ce": "student wrn_16_2_1x3, CE", "student_kd": "KD from the teacher (direct)",
        "student_pacemaker": "Pacemaker: pacemaker, then teacher", "student_pacemaker_joint": "Pacemaker, joint"}),
}
OVERLAP_STAGES = ("student_kd", "takd_student", "dgkd_student", "sdgkd_student")


def _overlap_tool():
  spec = importlib.util.spec_from_file_location("error_overlap", os.path.join(HERE, os.pardir, "tools",
                                                                                  "error_overlap.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_seed(study: str, seed: int, workdir: str, quick: bool) -> Dict[str, Dict]:
  """One pipeline for one seed: `{stage: row}` (rows as `run_pipeline` returns them)."""
  stages = load_pipeline_file(os.path.join(HERE, STUDIES[study][0]))
  overrides = [f"seed={seed}"] + (["max_steps=3", "epochs=2"] if quick else [])
  out = run_pipeline(stages, os.path.join(workdir, f"{study}_s{seed}"), overrides=overrides, progress_bar=False)
  if out["failed"]:
    raise SystemExit(f"{study}, seed {seed}: stages failed: {out['failed']}")
  return {r["stage"]: r for r in out["rows"]}


def overlaps(pipeline_dir: str) -> Dict[str, float]:
  """For each final student of the chain: the share of its test errors that any of its guides also makes."""
  tool, result = _overlap_tool(), {}
  for stage in OVERLAP_STAGES:
    student = os.path.join(pipeline_dir, stage)
    teacher = kd_workdir.stored_config(student)["teacher"]
    guides = [w for w in (teacher["workdir"], *teacher["extra_workdirs"]) if w]
    result[stage] = tool.error_overlap_of_runs(student, guides)["any"]
  return result


def _mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
  values = [scale * v for v in values]
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(study: str, runs: List[Dict[str, Dict]], overlap: List[Dict[str, float]]) -> str:
  labels = STUDIES[study][1]
  with_overlap = bool(overlap)
  head = "| run | test acc (%) | vs KD from the teacher (points) |" + (" errors shared with its guides |" if
                                                                      with_overlap else "")
  lines = [head, "|---|---:|---:|" + ("---:|" if with_overlap else "")]
  for stage, label in labels.items():
    accs = [r[stage]["test"]["accuracy"] for r in runs]
    gains = [r[stage]["test"]["accuracy"] - r["student_kd"]["test"]["accuracy"] for r in runs]
    gain = _mean_std(gains) if stage not in ("teacher", "pacemaker", "student_kd") else ""
    row = f"| {label} | {_mean_std(accs)} | {gain} |"
    if with_overlap:
      row += f" {_mean_std([o[stage] for o in overlap], digits=1)}% |" if stage in OVERLAP_STAGES else " |"
    lines.append(row)
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--workdir", default="runs/chain_study")
  parser.add_argument("--studies", nargs="+", choices=sorted(STUDIES), default=list(STUDIES))
  parser.add_argument("--quick", action="store_true", help="a few steps per run: a smoke test, not a result")
  parser.add_argument("--update-docs", action="store_true", help="write the tables into docs/methods.md")
  args = parser.parse_args(argv)
  parts = []
  for study in args.studies:
    runs = [run_seed(study, seed, args.workdir, args.quick) for seed in args.seeds]
    overlap = ([overlaps(os.path.join(args.workdir, f"{study}_s{seed}")) for seed in args.seeds]
               if study == "chain" else [])
    text = f"{CAPTIONS[study]}, {len(args.seeds)} seeds:\n\n" + table(study, runs, overlap)
    parts.append(text)
    print(f"\n{study} ({len(args.seeds)} seed(s): {', '.join(map(str, args.seeds))})\n\n{text}\n", flush=True)
  with open(os.path.join(args.workdir, "summary.md"), "w") as f:
    f.write("\n\n".join(parts) + "\n")
  if args.update_docs:
    if args.quick:
      raise SystemExit("--quick results are smoke tests: not written into docs/methods.md.")
    write_marked_block(DOCS, "chain_study", "\n\n".join(parts))
  return 0


if __name__ == "__main__":
  sys.exit(main())
