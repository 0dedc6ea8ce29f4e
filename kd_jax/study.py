"""The default study: a teacher, a plain student and a KD student on the embedded digits data.

`python -m kd_jax` runs it. Each of the three runs is an ordinary `train_and_evaluate` call on a config
built from `kd_jax.config.base_config()`, so any of them can be re-run alone with `python -m kd_jax train`.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Dict, List, Optional

import ml_collections

from kd_jax.config import base_config
from kd_jax.distillers import describe as describe_loss
from kd_jax.train.loop import prepare_workdir, train_and_evaluate


def study_configs(seed: int = 0, quick: bool = False) -> Dict[str, ml_collections.ConfigDict]:
  """The three runs of the default study, in the order they must run (the teacher first).

  `quick` shrinks every run to a few steps (the `runlocal` switch used by tests and smoke checks).
  The teacher's workdir is filled in by `run_study`.
  """
  common = base_config()
  common.seed = seed
  common.data.name = "digits"
  common.data.val_fraction = 0.1
  common.batch_size = 64
  common.optim.lr = 0.05
  common.optim.schedule = "cosine"
  common.optim.weight_decay = 5e-4
  common.epochs = 30
  common.log_every_steps = 20

  teacher = ml_collections.ConfigDict(common.to_dict())
  teacher.student.model = "cnn_large"
  teacher.loss = ml_collections.ConfigDict({"ce": {"weight": 1.0}})

  student_ce = ml_collections.ConfigDict(common.to_dict())
  student_ce.student.model = "mlp_small"
  student_ce.loss = ml_collections.ConfigDict({"ce": {"weight": 1.0}})

  student_kd = ml_collections.ConfigDict(student_ce.to_dict())
  student_kd.teacher.model = teacher.student.model
  student_kd.loss = ml_collections.ConfigDict(
      {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}})

  configs = {"teacher": teacher, "student_ce": student_ce, "student_kd": student_kd}
  if quick:
    for c in configs.values():
      c.epochs, c.max_steps, c.log_every_steps = 1, 3, 1
  return configs


def results_table(rows: List[Dict[str, Any]]) -> str:
  """A Markdown table of study results (test accuracy is reported, never used for selection)."""
  lines = ["| run | model | loss | val acc | test acc | epochs | wall time |",
           "|---|---|---|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['run']} | {r['model']} | {describe_loss(r['loss'])} | {100 * r['val_accuracy']:.2f} | "
                 f"{100 * r['test_accuracy']:.2f} | {r['epochs']:.3g} | {r['wall_time_s']:.1f} s |")
  return "\n".join(lines)


def run_study(workdir: Optional[str] = None, *, seed: int = 0, quick: bool = False,
              progress_bar: bool = True) -> Dict[str, Any]:
  """Runs teacher → student (CE) → student (KD) and writes `results.md` and `results.json` in `workdir`."""
  workdir = prepare_workdir(workdir or os.path.join("runs", time.strftime(f"study-%Y%m%d-%H%M%S-seed{seed}")))
  configs = study_configs(seed=seed, quick=quick)
  configs["student_kd"].teacher.workdir = os.path.join(workdir, "teacher")
  rows = []
  for run, config in configs.items():
    config.progress_bar = progress_bar
    print(f"[kd_jax] {run}: {config.student.model} with {describe_loss(config.loss.to_dict())}", flush=True)
    results = train_and_evaluate(config, os.path.join(workdir, run))
    rows.append({"run": run, **results})
  table = results_table(rows)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(table + "\n")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(rows, f, indent=2)
  return {"workdir": workdir, "table": table, "rows": rows}


def write_marked_block(path: str, name: str, text: str) -> None:
  """Puts `text` between the markers `<!-- name:begin -->` and `<!-- name:end -->` of the Markdown file
  `path`, replacing what stood there (the marked block is appended when the file has no markers): how the
  study scripts write their tables into the docs."""
  begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
  with open(path) as f:
    doc = f.read()
  block = f"{begin}\n{text}\n{end}"
  if begin in doc and end in doc:
    head, rest = doc.split(begin, 1)
    doc = head + block + rest.split(end, 1)[1]
  else:
    doc = doc.rstrip("\n") + "\n\n" + block + "\n"
  with open(path + ".tmp", "w") as f:
    f.write(doc)
  os.replace(path + ".tmp", path)


def run_or_reuse(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """`train_and_evaluate(config, workdir)` without progress bars, or the results of the run that finished there
  before (`results.json`), so an interrupted study resumes where it stopped."""
  done = os.path.join(workdir, "results.json")
  if os.path.isfile(done):
    with open(done) as f:
      return json.load(f)
  config.progress_bar = False
  return train_and_evaluate(config, workdir)


def median_step_ms(workdir: str) -> float:
  """The median of a run's logged step times (`perf/step_ms` per logged interval), the first interval left out
  because it includes compilation; NaN when none was logged."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    times = [json.loads(line).get("perf/step_ms") for line in f]
  times = [t for t in times[1:] if t]
  return statistics.median(times) if times else float("nan")
