"""Pipelines: a chain of runs (teacher → assistants → student) as one resumable command.

TAKD, DGKD and Pacemaker KD train intermediate models before the student; a study is then several runs whose
teachers are earlier runs. An experiment file declares the chain with `get_pipeline()`, a list of `Stage`s:

    def get_pipeline():
      return [Stage("teacher", teacher_config),
              Stage("assistant", assistant_config, teachers=("teacher",)),
              Stage("student", student_config, teachers=("teacher", "assistant"))]

and `python -m kd_jax pipeline --config FILE --workdir DIR` runs it: each stage is an ordinary
`train_and_evaluate` run in `DIR/<stage>`, whose `config.teacher.workdir` (the first of `teachers`) and
`config.teacher.extra_workdirs` (the others, in order) the pipeline fills with those stages' directories.
Running the command again skips the stages that finished (their `results.json` exists and their stored
config is the stage's), resumes the one that was interrupted from its last checkpoint (bit-identically, as a
single run resumes), and ends with the same table. A stage that fails (bad input, a non-finite loss) is
recorded; the stages that learn from it, directly or through another stage, are not started, and the
others still run. A stage whose teacher stage was retrained with another config (its directory deleted and
the pipeline changed) is refused rather than skipped or resumed with the old teacher's knowledge.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections

from kd_jax.config import apply_overrides, load_python_file, validate
from kd_jax.distillers import describe as describe_loss
from kd_jax.errors import KDJaxError
from kd_jax.train import distributed
from kd_jax.train import workdir as kd_workdir
from kd_jax.train.loop import format_metric, train_and_evaluate
from kd_jax.train.workdir import prepare_workdir

STATUS = "pipeline.json"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One run of a pipeline.

  Attributes:
    name: a unique label; the stage's run directory is `<pipeline workdir>/<name>`.
    config: the run's config. Its `teacher.workdir`/`teacher.extra_workdirs` are filled from `teachers`
      (leave them empty then); a stage without `teachers` may still name an outside teacher run.
    teachers: earlier stages whose exported models are this stage's frozen teachers, in the order the
      distillers see them (index 0 is `config.teacher.workdir`).
  """

  name: str
  config: ml_collections.ConfigDict
  teachers: Tuple[str, ...] = ()


def load_pipeline_file(path: str) -> List[Stage]:
  """Executes a Python experiment file and returns its `get_pipeline()`, checked (`check_stages`)."""
  stages = list(load_python_file(path, "get_pipeline")())
  check_stages(stages)
  return stages


def check_stages(stages: Sequence[Stage]) -> None:
  """Unique names, teachers that are earlier stages, no teacher workdir set by hand where `teachers` sets
  it, and a valid config for every stage; otherwise a `KDJaxError` naming the stage."""
  if not stages:
    raise KDJaxError("The pipeline has no stages: get_pipeline() must return a list of Stage(name, config, "
                     "teachers).")
  seen: List[str] = []
  for stage in stages:
    if not isinstance(stage, Stage):
      raise KDJaxError(f"get_pipeline() must return Stage objects (kd_jax.train.pipeline.Stage); got {stage!r}.")
    if not stage.name or "/" in stage.name or stage.name in (".", ".."):
      raise KDJaxError(f"Stage name {stage.name!r} is not a directory name; use letters, digits, '_' or '-'.")
    if stage.name in seen:
      raise KDJaxError(f"Two stages are named {stage.name!r}; stage names must be unique.")
    teachers = tuple(stage.teachers)
    missing = [t for t in teachers if t not in seen]
    if missing:
      later = [t for t in missing if any(s.name == t for s in stages)]
      raise KDJaxError(f"Stage {stage.name!r} learns from {', '.join(repr(t) for t in missing)}, which "
                       + ("comes later in the pipeline: list teachers before their students." if later else
                          f"is not a stage of this pipeline (stages: {', '.join(s.name for s in stages)})."))
    if teachers and (stage.config.teacher.workdir or stage.config.teacher.extra_workdirs):
      raise KDJaxError(f"Stage {stage.name!r} has teachers {teachers} and also sets config.teacher.workdir or "
                       "extra_workdirs; the pipeline sets those from the teacher stages: leave them empty.")
    try:
      validate(stage.config)
    except KDJaxError as e:
      raise KDJaxError(f"Stage {stage.name!r}: {e}") from e
    seen.append(stage.name)


def stage_config(stage: Stage, workdir: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The stage's config as it runs: `overrides` (`key=value`, as on the command line) applied, and its
  teachers' run directories filled in."""
  config = ml_collections.ConfigDict(stage.config.to_dict())
  apply_overrides(config, overrides)
  if stage.teachers:
    dirs = [os.path.join(workdir, t) for t in stage.teachers]
    config.teacher.workdir, config.teacher.extra_workdirs = dirs[0], tuple(dirs[1:])
  return config


def finished(stage_dir: str, config: ml_collections.ConfigDict) -> Optional[Dict[str, Any]]:
  """The stage's results if its run finished with this config (what it computes; bookkeeping keys such as
  logging may differ), else None."""
  path = os.path.join(stage_dir, "results.json")
  stored = kd_workdir.stored_config(stage_dir)
  if not os.path.isfile(path) or stored is None:
    return None
  changes = kd_workdir.config_differences(stored, json.loads(config.to_json_best_effort()))
  if any(not kd_workdir.is_bookkeeping(key) for key in changes):
    return None
  with open(path) as f:
    return json.load(f)


TEACHERS_RECORD = "pipeline_teachers.json"


def teacher_record(workdir: str, stage: Stage) -> Dict[str, Any]:
  """What a stage learnt from: each teacher stage's stored config (the keys that change what it computes)."""
  record = {}
  for name in stage.teachers:
    stored = kd_workdir.stored_config(os.path.join(workdir, name)) or {}
    record[name] = {k: v for k, v in kd_workdir.flatten_config(stored).items() if not kd_workdir.is_bookkeeping(k)}
  return record


def stale_teachers(stage_dir: str, record: Dict[str, Any]) -> List[str]:
  """The teachers that changed since the stage in `stage_dir` started learning from them (a teacher stage
  retrained with another config after its directory was deleted): the stage would otherwise be skipped or
  resumed with knowledge of the old ones. Records the teachers on a stage's first start."""
  path = os.path.join(stage_dir, TEACHERS_RECORD)
  if not os.path.isfile(path):
    os.makedirs(stage_dir, exist_ok=True)
    _write_json(path, record)
    return []
  with open(path) as f:
    started_with = json.load(f)
  return [name for name in record if started_with.get(name) != record[name]]


def run_pipeline(stages: Sequence[Stage], workdir: str, *, overrides: Sequence[str] = (),
                 progress_bar: Optional[bool] = None) -> Dict[str, Any]:
  """Runs the stages in order in `workdir/<stage>`, skipping finished ones, and writes the table.

  Returns `{'workdir', 'table', 'rows', 'failed'}`; `rows` has one entry per stage (its status, model,
  teachers, loss and metrics) and is also written to `workdir/results.json` (`results.md` holds the table,
  `pipeline.json` each stage's status as the run goes). `failed` maps a stage that failed or was not started
  to the reason. `overrides` apply to every stage (e.g. `seed=1`); `progress_bar` overrides the configs'.
  """
  check_stages(stages)
  workdir = prepare_workdir(workdir)
  rows: List[Dict[str, Any]] = []
  failed: Dict[str, str] = {}
  for stage in stages:
    config = stage_config(stage, workdir, overrides)
    if progress_bar is not None:
      config.progress_bar = progress_bar
    stage_dir = os.path.join(workdir, stage.name)
    row = {"stage": stage.name, "model": config.student.model, "teachers": list(stage.teachers),
           "loss": {k: dict(v) for k, v in config.loss.items()}, "objective": describe_objective(config)}
    blocked = [t for t in stage.teachers if t in failed]
    stale = [] if blocked else stale_teachers(stage_dir, teacher_record(workdir, stage))
    results = None if blocked or stale else finished(stage_dir, config)
    if blocked:
      failed[stage.name] = (f"not started: its teacher stage {blocked[0]!r} did not finish "
                            f"({failed[blocked[0]]})")
      row["status"] = "not started"
    elif stale:
      failed[stage.name] = (f"failed: it learnt from {', '.join(repr(t) for t in stale)} as configured before, "
                            "and that stage has been retrained with another config since; delete "
                            f"{stage_dir} to train this stage again from the new teacher(s)")
      row["status"] = "failed"
    elif results is not None:
      print(f"[kd_jax] pipeline: {stage.name} finished earlier; skipped", flush=True)
      row["status"] = "done"
    else:
      print(f"[kd_jax] pipeline: {stage.name}: {config.student.model} with {row['objective']}"
            + (f", teachers {', '.join(stage.teachers)}" if stage.teachers else ""), flush=True)
      try:
        results = train_and_evaluate(config, stage_dir)
        row["status"] = "done"
      except KDJaxError as e:
        failed[stage.name] = f"failed: {e}"
        row["status"] = "failed"
    if results is not None:
      row.update(headline=results["headline"],
                 val={k[len("val_"):]: v for k, v in results.items() if k.startswith("val_")},
                 test={k[len("test_"):]: v for k, v in results.items() if k.startswith("test_")},
                 steps=results["steps"])
    if stage.name in failed:
      row["error"] = failed[stage.name]
      print(f"[kd_jax] pipeline: {stage.name} {failed[stage.name]}", flush=True)
    rows.append(row)
    _write_json(os.path.join(workdir, STATUS), {"stages": rows})
  table = pipeline_table(rows)
  _write_json(os.path.join(workdir, "results.json"), rows)
  if distributed.is_main_process():
    with open(os.path.join(workdir, "results.md"), "w") as f:
      f.write(table + "\n")
  return {"workdir": workdir, "table": table, "rows": rows, "failed": failed}


def describe_objective(config: ml_collections.ConfigDict) -> str:
  """The run's loss as text, phase by phase (`name: loss → name: loss`) when it has phases."""
  if not config.phases:
    return describe_loss(config.loss.to_dict())
  return " → ".join(f"{p['name']}: {describe_loss(dict(p.get('loss', config.loss)))}" for p in config.phases)


def pipeline_table(rows: Sequence[Dict[str, Any]]) -> str:
  """One Markdown row per stage: model, teachers, loss, the headline metric on validation and test, status.

  Nothing in it depends on wall time or paths, so an interrupted and resumed pipeline gives the same table
  as an uninterrupted one."""
  metrics = list(dict.fromkeys(r["headline"] for r in rows if "headline" in r)) or ["accuracy"]
  head = (["stage", "model", "teachers", "loss"] + [f"val {m}" for m in metrics] + [f"test {m}" for m in metrics]
          + ["steps", "status"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (2 * len(metrics) + 1) + "---|"]
  for r in rows:
    values = [format_metric(r.get(split, {}).get(m), m) for split in ("val", "test") for m in metrics]
    lines.append(f"| {r['stage']} | {r['model']} | {', '.join(r['teachers']) or '—'} | {r['objective']} | "
                 + " | ".join(values) + f" | {r.get('steps', '—')} | {r['status']} |")
  return "\n".join(lines)


def _write_json(path: str, value: Any) -> None:
  if not distributed.is_main_process():
    return
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=2)
  os.replace(path + ".tmp", path)
