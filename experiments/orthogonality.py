"""The orthogonality study: does KD's gain survive pruning, quantisation-aware training and cheap convolutions?

Park, Yoo, Kwak, "On the Orthogonality of Knowledge Distillation with Other Techniques: From an Ensemble
Perspective", arXiv:2009.04120 (METHODS.md item 3), argue that KD acts like bagging (the teacher's soft
targets are an implicit data augmentation), so its gain adds to that of the other ways of making a network
small. This study measures it on the embedded digits data.

Usage (the table in docs/methods.md, between `<!-- orthogonality:begin -->` and `<!-- orthogonality:end -->`,
comes from this command):
  python experiments/orthogonality.py --seeds 0 1 2 --workdir runs/orthogonality --update-docs

Per seed: the default study's teacher (cnn_large, CE, 30 epochs: `kd_jax.study.study_configs`), trained once
per seed in `<workdir>/seed<s>/teacher` (each seed's KD students learn from their own seed's teacher, so the
seed-to-seed spread includes the teacher's). Then, for every row of experiments/orthogonality_configs.py, the
student trained with CE alone and with 0.1·CE + 0.9·KD at T = 4 (the paper's recipe), each in
`<workdir>/seed<s>/<row>_<ce|kd>`, with the default study's recipe otherwise (SGD lr 0.05 with a cosine
schedule, batch 64, 30 epochs). The student is resnet8 (RepDistiller's CIFAR ResNet-8, 78K parameters; on
8×8 digits its stages are 8×8, 4×4 and 2×2), a network with 3×3 convolutions so that the cheap-convolution
row applies; its rows:
  - baseline; magnitude pruning to 50%, 80% and 90% of the kernels (gradual, Zhu & Gupta, from epoch 6 to
    epoch 21, masks every 5 steps; the stem conv and classifier dense); int8 and int4 QAT (first layer and
    classifier at 8 bits); resnet8 with depthwise-separable block convs (`resnet8_dw_sep`).
The table: per row, test accuracy mean ± sample std over seeds with CE and with KD, KD's gain (mean ± std of
the per-seed difference KD − CE, in points), and, from `kd_jax.compression.report.compression_report` on the
first seed's KD run, parameters, non-zero parameters, size in bytes at the row's bit widths, FLOPs per image
(XLA's count, dense; and with pruned weights skipped) and the eval time of a batch of 64. The test split is
only reported; nothing is selected on it.

Written to `<workdir>/results.md` (and `results.json`, every seed's numbers). Finished runs are reused (their
`results.json`) and unfinished ones resume from their checkpoints, so an interrupted study goes on where it
stopped (a run dir trained with another config is refused by `train_and_evaluate`: delete it). `--rows` picks
rows; `--teacher-workdir` uses one finished teacher run for every seed instead of training one per seed;
`--quick` shrinks every run to a few steps (a smoke test, not a result: one-shot pruning at step 0 instead of
the gradual schedule; never written into the docs). Bad arguments exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import ml_collections
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from orthogonality_configs import LOSSES, ROWS, apply_row  # noqa: E402

import kd_jax  # noqa: E402
from kd_jax.compression.report import compression_report  # noqa: E402
from kd_jax.errors import KDJaxError  # noqa: E402
from kd_jax.study import median_step_ms, study_configs, write_marked_block  # noqa: E402
from kd_jax.train.loop import train_and_evaluate  # noqa: E402
from kd_jax.train.run import load_data  # noqa: E402

DOCS = os.path.join(HERE, os.pardir, "docs", "methods.md")
MARKER = "orthogonality"
STUDENT = "resnet8"
PRUNE_EVERY_STEPS = 5   # Δt: 17 steps per digits epoch, so about 51 mask updates between epochs 6 and 21
REPORT_BATCH = 64       # the batch of the FLOPs count (reported per image) and of the timed eval calls
QUICK_STEPS = 2
REPORT_FILE = "compression_report.json"
DOCS_SECTION = """## Orthogonality of KD with pruning, quantisation and cheap convolutions

Park, Yoo, Kwak (arXiv:2009.04120) argue that KD's gain adds to that of the other ways of making a network
small. `experiments/orthogonality.py` trains, on digits over 3 seeds, a resnet8 student compressed each way
(experiments/orthogonality_configs.py), once with CE alone and once with 0.1·CE + 0.9·KD (T = 4) from the
cnn_large teacher, and reports each row's KD gain next to what the compression saves
(`kd_jax.compression.report`). The CIFAR-100 configs are `experiments/cifar100_orthogonality.py:<row>_<ce|kd>`.
"""


def teacher_config(seed: int, quick: bool) -> ml_collections.ConfigDict:
  """The seed's teacher: the default study's (cnn_large, CE)."""
  return study_configs(seed=seed, quick=quick)["teacher"]


def student_config(row: str, loss: str, seed: int, teacher_workdir: str, quick: bool) -> ml_collections.ConfigDict:
  """Row `row` of the student trained with `loss` ('ce' or 'kd'; KD reads the teacher in `teacher_workdir`)."""
  c = study_configs(seed=seed, quick=quick)["student_kd" if loss == "kd" else "student_ce"]
  c.student.model = STUDENT
  apply_row(c, row, loss, prune_every_steps=PRUNE_EVERY_STEPS)
  if loss == "kd":
    c.teacher.model = ""  # the teacher run's record names it (cnn_large, or the one --teacher-workdir gives)
    c.teacher.workdir = teacher_workdir
  if quick:
    c.max_steps = QUICK_STEPS
    if c.compression.sparsity:  # the gradual schedule would not start within a few steps: one-shot at step 0
      c.compression.prune_begin_epoch = c.compression.prune_end_epoch = 0
  return c


def run_or_reuse(config: ml_collections.ConfigDict, workdir: str, dataset: Any) -> Dict[str, Any]:
  """The results of the run finished in `workdir` (`results.json`), else `train_and_evaluate` (which resumes
  from the run's checkpoints) on the already loaded `dataset`."""
  done = os.path.join(workdir, "results.json")
  if os.path.isfile(done):
    with open(done) as f:
      return json.load(f)
  config.progress_bar = False
  return train_and_evaluate(config, workdir, dataset=dataset)


def report_of(workdir: str, sample: np.ndarray, cache: Optional[str] = None) -> Dict[str, Any]:
  """`compression_report` of the run exported in `workdir`, cached in `cache` (default
  `<workdir>/compression_report.json`; its timing is measured once, when the run is first reported)."""
  path = cache or os.path.join(workdir, REPORT_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  model, variables = kd_jax.load_model(workdir)
  report = compression_report(model, variables, sample)
  with open(path + ".tmp", "w") as f:
    json.dump(report, f, indent=2)
  os.replace(path + ".tmp", path)
  return report


def run_seed(seed: int, workdir: str, rows: Sequence[str], quick: bool,
             teacher_workdir: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
  """Trains (or reuses) the seed's teacher, unless `teacher_workdir` names a finished teacher run to use
  instead, and every row's CE and KD students in `workdir`; returns `{run name: {'accuracy', 'report',
  'step_ms', 'model'}}` with 'teacher' first ('accuracy' None for a given teacher without results.json)."""
  teacher = teacher_config(seed, quick)
  dataset = load_data(teacher)  # the seed's split; every run of the seed shares it
  sample = np.asarray(dataset.test.get(np.arange(min(REPORT_BATCH, len(dataset.test))))["image"])
  out = {}
  if teacher_workdir:  # checked first: a teacher that is no finished run stops the study before any training
    info = kd_jax.load_model(teacher_workdir, with_info=True)[2]
    done, result = os.path.join(teacher_workdir, "results.json"), {}
    if os.path.isfile(done):
      with open(done) as f:
        result = json.load(f)
    out["teacher"] = {"accuracy": result.get("test_accuracy"), "model": info["model"], "step_ms": float("nan"),
                      "report": report_of(teacher_workdir, sample, os.path.join(workdir, "teacher_" + REPORT_FILE))}
    runs = []
  else:
    teacher_workdir = os.path.join(workdir, "teacher")
    runs = [("teacher", teacher, teacher_workdir)]
  for row in rows:
    for loss in LOSSES:
      runs.append((f"{row}_{loss}", student_config(row, loss, seed, teacher_workdir, quick),
                   os.path.join(workdir, f"{row}_{loss}")))
  for name, config, run_dir in runs:
    print(f"[orthogonality] seed {seed}: {name} ({config.student.model})", flush=True)
    result = run_or_reuse(config, run_dir, dataset)
    out[name] = {"accuracy": result["test_accuracy"], "model": result["model"],
                 "report": report_of(run_dir, sample), "step_ms": median_step_ms(run_dir)}
  return out


def _mean_std(values: Sequence[float], scale: float = 100.0) -> str:
  values = [scale * v for v in values]
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _signed_mean_std(values: Sequence[float]) -> str:
  text = _mean_std(values)
  return text if text.startswith("-") else "+" + text


def _count(n: float) -> str:
  return f"{int(n):,}"


def _flops(n: float) -> str:
  return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} K"


def _cost_cells(report: Dict[str, Any]) -> List[str]:
  batch = report["batch"]
  nonzero = f"{_count(report['nonzero'])} ({100 * report['nonzero'] / report['params']:.0f}%)"
  return [_count(report["params"]), nonzero, _count(report["bytes"]), _flops(report["flops"] / batch),
          _flops(report["flops_sparse"] / batch), f"{report['inference_ms']:.2f}"]


TABLE_HEAD = ("| row | student | CE test acc (%) | KD test acc (%) | KD gain (points) | params | non-zero params | "
              "size (bytes) | FLOPs / image | FLOPs / image, pruned skipped | eval ms / batch of 64 |")


def study_table(per_seed: Dict[int, Dict[str, Dict[str, Any]]], rows: Sequence[str]) -> str:
  """The Markdown table of `per_seed[seed][run name] = {'accuracy', 'model', 'report'}`: the teacher, then per
  row CE and KD accuracy (mean ± sample std over seeds), KD's gain (mean ± std of the per-seed KD − CE) and
  the first seed's KD run's costs."""
  seeds = sorted(per_seed)
  first = per_seed[seeds[0]]
  lines = [TABLE_HEAD, "|---|---|" + "---:|" * 9]
  teacher = first["teacher"]
  accuracy = [per_seed[s]["teacher"]["accuracy"] for s in seeds]
  accuracy = "—" if None in accuracy else _mean_std(accuracy)  # a given teacher run without results.json
  lines.append(f"| teacher (CE) | {teacher['model']} | {accuracy} | — | — | "
               + " | ".join(_cost_cells(teacher["report"])) + " |")
  for row in rows:
    ce = [per_seed[s][f"{row}_ce"]["accuracy"] for s in seeds]
    kd = [per_seed[s][f"{row}_kd"]["accuracy"] for s in seeds]
    kd_run = first[f"{row}_kd"]
    lines.append(f"| {ROWS[row].label} | {kd_run['model']} | {_mean_std(ce)} | {_mean_std(kd)} | "
                 f"{_signed_mean_std([k - c for k, c in zip(kd, ce)])} | " + " | ".join(_cost_cells(kd_run["report"]))
                 + " |")
  return "\n".join(lines)


def study_text(per_seed: Dict[int, Dict[str, Dict[str, Any]]], rows: Sequence[str], quick: bool,
               teacher_workdir: Optional[str] = None) -> str:
  """The table with a line saying what it is (seeds, teacher; costs from the first seed's KD runs)."""
  seeds = sorted(per_seed)
  teacher = per_seed[seeds[0]]["teacher"]["model"]
  teacher = f"{teacher} from {teacher_workdir} for every seed" if teacher_workdir else f"{teacher} trained per seed"
  note = (f"Digits, {len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}); teacher "
          f"{teacher}; KD = 0.1·CE + 0.9·KD at T = 4; costs of the seed-{seeds[0]} KD runs (size at the "
          "row's bit widths, pruned zeros stored; FLOPs from XLA's cost analysis of the full-precision network).")
  if quick:
    note = "**--quick smoke test: a few steps per run, not a result.** " + note
  return study_table(per_seed, rows) + "\n\n" + note


def update_docs(path: str, text: str) -> None:
  """Writes `text` between the orthogonality markers of the Markdown file `path`, first appending the section
  (heading, a paragraph and the markers) where the markers are absent."""
  with open(path) as f:
    doc = f.read()
  if f"<!-- {MARKER}:begin -->" not in doc:
    with open(path, "w") as f:
      f.write(doc.rstrip("\n") + "\n\n" + DOCS_SECTION + f"\n<!-- {MARKER}:begin -->\n<!-- {MARKER}:end -->\n")
  write_marked_block(path, MARKER, text)


def check_arguments(seeds: Sequence[int], rows: Sequence[str], quick: bool, update: bool) -> None:
  """A KDJaxError naming the problem for unknown rows, repeated seeds or rows, or a quick run into the docs."""
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise KDJaxError(f"Unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}.")
  if not seeds or len(set(seeds)) != len(seeds) or len(set(rows)) != len(rows) or not rows:
    raise KDJaxError(f"--seeds and --rows take distinct values, at least one each; got seeds {list(seeds)}, "
                     f"rows {list(rows)}.")
  if quick and update:
    raise KDJaxError("--quick results are smoke tests: they are not written into docs/methods.md; drop one of "
                     "--quick and --update-docs.")


def run_study(workdir: str, seeds: Sequence[int], rows: Sequence[str], quick: bool,
              teacher_workdir: Optional[str] = None) -> Dict[str, Any]:
  """Every seed's runs, then `<workdir>/results.md` (the table) and `results.json` (every seed's numbers)."""
  start = time.time()
  per_seed = {seed: run_seed(seed, os.path.join(workdir, f"seed{seed}"), rows, quick, teacher_workdir)
              for seed in seeds}
  text = study_text(per_seed, rows, quick, teacher_workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(text + "\n")
  seconds = time.time() - start
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"seeds": list(seeds), "rows": list(rows), "quick": quick, "wall_time_s": seconds,
               "runs": {str(s): r for s, r in per_seed.items()}}, f, indent=2)
  return {"text": text, "runs": per_seed, "wall_time_s": seconds}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--rows", nargs="+", default=list(ROWS), help=f"rows to run (default all: {', '.join(ROWS)})")
  parser.add_argument("--workdir", default="runs/orthogonality")
  parser.add_argument("--teacher-workdir", default=None,
                      help="a finished teacher run (e.g. runs/digits_teacher) used for every seed instead of "
                           "training the default study's teacher per seed")
  parser.add_argument("--quick", action="store_true", help="a few steps per run: a smoke test, not a result")
  parser.add_argument("--update-docs", action="store_true", help="write the table into docs/methods.md")
  parser.add_argument("--docs", default=DOCS, help="the Markdown file --update-docs writes (default docs/methods.md)")
  args = parser.parse_args(argv)
  try:
    check_arguments(args.seeds, args.rows, args.quick, args.update_docs)
    out = run_study(args.workdir, args.seeds, args.rows, args.quick, args.teacher_workdir)
    if args.update_docs:
      update_docs(args.docs, out["text"])
  except KDJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("\n" + out["text"] + f"\n\n[orthogonality] {out['wall_time_s']:.0f} s; results in "
        f"{os.path.join(args.workdir, 'results.md')}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
