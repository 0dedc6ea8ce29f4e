"""Sweeps: every combination of a few config values over several seeds, one aggregated table, one plot per key.

    python -m kd_jax sweep --config experiments/digits_kd.py --workdir runs/kd_sweep \\
        --grid loss.kd.temperature=1,2,4 --grid loss.kd.weight=0.5,0.9 --seeds 0,1,2 \\
        [--config.KEY=VALUE ...] [--shard I/N] [--no-progress]

Each `--grid KEY=V1,V2,...` lists the values of one config key (parsed as `--config.KEY=VALUE` overrides are;
commas inside brackets or quotes do not split, so `--grid data.student_channels=(0,1),(2,)` has two
values); several grids form their Cartesian product, a cell, and every cell runs once per seed of `--seeds`
(which sets `config.seed`; default: the config's own seed). `--config.KEY=VALUE` overrides apply to every run.

Every run is an ordinary `train_and_evaluate` run, as `python -m kd_jax train` makes, in a readable directory:
`<workdir>/loss.kd.temperature=2/loss.kd.weight=0.9/seed=0` (the keys in the order of the `--grid` flags;
a quoted string value is written without its quotes, spaces are dropped). A value that cannot be part of a
directory name (a `/`, a dict, a quote inside) is refused before anything runs, as is an unknown key or a
value the config rejects. Running the command again skips the runs that finished with the same config (as a
pipeline skips its stages, `kd_jax.train.pipeline.finished`), resumes an interrupted run from its last
checkpoint, and runs values added to a grid since; a run that fails is reported (exit status 2) and the
others still run.

`--shard I/N` runs only the combinations whose index (cells in grid order, seeds innermost) is I modulo N, so N
hosts or job-array tasks sharing the workdir make the whole sweep between them, each in its own run
directories. Every invocation, sharded or not, ends by writing the table from whatever runs have finished:

* `results.md`: one row per cell, mean ± sample std over its finished seeds of the validation and the test
  headline metric (the task's, e.g. accuracy in percent), and n (finished/seeds). The best cell (★) is the
  one with the best mean validation headline among the cells whose every seed finished; the test column is
  only reported, never used to choose. Runs without a validation split (`data.val_fraction = 0`) select
  nothing, and the table says so above its header.
* `results.json`: the same per cell (the per-seed values included) and the status of every run.
* `sweep_<KEY>.png` for each swept key: the validation and test headline against that key's values, the
  other keys held at the best cell's values (at their first values when no cell is selected), error bars
  one std over seeds.

Files are written whole and then renamed, under unique temporary names, so shards finishing together on a
shared file system never leave a torn table.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import itertools
import json
import os
import re
import statistics
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections

from kd_jax.config import apply_overrides, validate
from kd_jax.errors import KDJaxError
from kd_jax.tasks import get_task
from kd_jax.train import distributed
from kd_jax.train.loop import format_metric, train_and_evaluate
from kd_jax.train.pipeline import describe_objective, finished
from kd_jax.train.workdir import prepare_workdir

# What a directory component may hold: portable file-name characters, readable in a listing.
_KEY_CHARS = re.compile(r"^[A-Za-z0-9_.]+$")
_VALUE_CHARS = re.compile(r"^[A-Za-z0-9_.+\-,()\[\]]+$")
_MAX_NAME = 200


@dataclasses.dataclass(frozen=True)
class SweepRun:
  """One run of a sweep.

  Attributes:
    index: its place in the sweep's order (cells in grid order, seeds innermost); `--shard I/N` runs the
      indices that are I modulo N.
    cell: `((key, value name), ...)` in grid order; the value names are the directory names' values.
    seed: `config.seed` of the run.
    path: the run directory relative to the sweep's workdir (`key=value/.../seed=S`).
    config: the run's config, overrides, grid values and seed applied and validated.
  """

  index: int
  cell: Tuple[Tuple[str, str], ...]
  seed: int
  path: str
  config: ml_collections.ConfigDict


def split_values(text: str) -> List[str]:
  """`'1,2,(3,4)'` -> `['1', '2', '(3,4)']`: splits on the commas outside brackets and quotes."""
  parts, depth, quote, start = [], 0, "", 0
  for i, ch in enumerate(text):
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return [p.strip() for p in parts]


def value_name(key: str, text: str) -> str:
  """The directory name's form of a grid value: spaces dropped, a quoted string unquoted; `KDJaxError` when
  it cannot be part of a portable directory name."""
  name = re.sub(r"\s+", "", text)
  try:
    parsed = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    parsed = None
  if isinstance(parsed, str) and text.strip()[:1] in "'\"":
    name = parsed
  if not name or not _VALUE_CHARS.match(name) or len(key) + len(name) + 1 > _MAX_NAME:
    raise KDJaxError(f"Grid value {text!r} of {key} cannot be part of a directory name (the run directories "
                     f"are named {key}=VALUE): use values made of letters, digits and . _ + - , ( ) [ ], at most "
                     f"{_MAX_NAME} characters with the key, or sweep a simpler key.")
  return name


def parse_grid(items: Sequence[str]) -> List[Tuple[str, List[Tuple[str, str]]]]:
  """`['optim.lr=0.1,0.2', ...]` -> `[('optim.lr', [('0.1', '0.1'), ('0.2', '0.2')]), ...]`: each key with its
  values as (override text, directory name), in the order given. Malformed items, repeated keys or values,
  `seed` (use `--seeds`) and names that cannot be directories raise `KDJaxError`."""
  grid: List[Tuple[str, List[Tuple[str, str]]]] = []
  for item in items:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not text.strip():
      raise KDJaxError(f"Grid {item!r} must look like KEY=V1,V2,... (e.g. --grid loss.kd.temperature=1,2,4).")
    if key == "seed":
      raise KDJaxError("Sweep seeds with --seeds 0,1,2 rather than --grid seed=...: the table averages over them.")
    if not _KEY_CHARS.match(key):
      raise KDJaxError(f"Grid key {key!r} is not a config key: use dotted names such as optim.lr.")
    if key in [k for k, _ in grid]:
      raise KDJaxError(f"Grid key {key} is given twice; list all its values in one --grid {key}=V1,V2,...")
    values = []
    for text in split_values(text):
      if not text:
        raise KDJaxError(f"Grid {item!r} has an empty value; separate values by single commas.")
      name = value_name(key, text)
      if name in [n for _, n in values]:
        raise KDJaxError(f"Grid {key} lists the value {name!r} twice; each value once.")
      values.append((text, name))
    grid.append((key, values))
  return grid


def parse_seeds(text: str) -> List[int]:
  """`'0,1,2'` -> `[0, 1, 2]`; anything else than distinct non-negative integers raises `KDJaxError`."""
  try:
    seeds = [int(s) for s in text.split(",")]
  except ValueError:
    raise KDJaxError(f"--seeds {text!r} must be comma-separated integers, e.g. --seeds 0,1,2.") from None
  if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
    raise KDJaxError(f"--seeds {text!r} must be distinct non-negative integers, e.g. --seeds 0,1,2.")
  return seeds


def parse_shard(text: str) -> Tuple[int, int]:
  """`'1/4'` -> `(1, 4)`: this task's index and the number of shards, 0 <= index < count."""
  match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
  if not match or not int(match.group(1)) < int(match.group(2)):
    raise KDJaxError(f"--shard {text!r} must be I/N with 0 <= I < N, e.g. --shard 0/4 for the first of four "
                     "tasks (a job array's task index, counted from 0).")
  return int(match.group(1)), int(match.group(2))


def _copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(config.to_dict())


def plan_runs(base: ml_collections.ConfigDict, grid: Sequence[Tuple[str, List[Tuple[str, str]]]],
              seeds: Optional[Sequence[int]] = None, overrides: Sequence[str] = ()) -> List[SweepRun]:
  """Every run of the sweep in its order, each config built and validated, so that a bad key or value is
  refused (`KDJaxError` naming it) before anything runs. `seeds` None: the config's own seed."""
  fixed = apply_overrides(_copy(base), overrides)
  overridden = {o.partition("=")[0].strip() for o in overrides}
  if seeds is not None and "seed" in overridden:
    raise KDJaxError("Give the seeds with --seeds only, not also --config.seed.")
  both = [key for key, _ in grid if key in overridden]
  if both:
    raise KDJaxError(f"{both[0]} is both swept (--grid) and fixed (--config.{both[0]}=...); keep one.")
  seeds = [int(fixed.seed)] if seeds is None else list(seeds)
  runs: List[SweepRun] = []
  for cell in itertools.product(*[[(key, text, name) for text, name in values] for key, values in grid]):
    config = _copy(fixed)
    for key, text, name in cell:
      try:
        apply_overrides(config, [f"{key}={text}"])
      except KDJaxError as e:
        raise KDJaxError(f"--grid {key}: value {text!r}: {e}") from e
    named = tuple((key, name) for key, _, name in cell)
    for seed in seeds:
      run_config = _copy(config)
      run_config.seed = seed
      validate(run_config)
      path = os.path.join(*[f"{key}={name}" for key, name in named], f"seed={seed}")
      runs.append(SweepRun(len(runs), named, seed, path, run_config))
  return runs


def shard_runs(runs: Sequence[SweepRun], index: int, count: int) -> List[SweepRun]:
  """The runs of shard `index` of `count`: those whose index is `index` modulo `count`."""
  return [r for r in runs if r.index % count == index]


def _stats(values: List[float]) -> Dict[str, Any]:
  return {"mean": statistics.fmean(values) if values else None,
          "std": statistics.stdev(values) if len(values) > 1 else None, "values": values}


def aggregate(runs: Sequence[SweepRun], results: Dict[str, Dict[str, Any]], headline: str) -> List[Dict[str, Any]]:
  """One row per cell, in grid order: the cell, its finished seeds, and mean / sample std / values over them of
  the validation and test `headline` (`results` maps a run's path to its results.json). A run without a
  validation split adds nothing to the validation values."""
  rows: Dict[Tuple, Dict[str, Any]] = {}
  for run in runs:
    row = rows.setdefault(run.cell, {"cell": dict(run.cell), "path": os.path.dirname(run.path), "seeds": [],
                                     "total": 0, "val": [], "test": []})
    row["total"] += 1
    done = results.get(run.path)
    if done is None:
      continue
    row["seeds"].append(run.seed)
    for split in ("val", "test"):
      value = done.get(f"{split}_{headline}")
      if value is not None:
        row[split].append(float(value))
  out = []
  for row in rows.values():
    out.append({**row, "n": len(row["seeds"]), "val": _stats(row["val"]), "test": _stats(row["test"]),
                "best": False})
  return out


def select_best(rows: Sequence[Dict[str, Any]], higher_is_better: bool) -> Optional[int]:
  """The index of the row with the best mean VALIDATION value among the rows whose every seed finished with a
  validation value, the first one on ties; None when there is none. Test values are never looked at."""
  best = None
  for i, row in enumerate(rows):
    mean = row["val"]["mean"]
    if row["n"] < row["total"] or len(row["val"]["values"]) < row["total"] or mean is None:
      continue
    if best is None or (mean > rows[best]["val"]["mean"] if higher_is_better else mean < rows[best]["val"]["mean"]):
      best = i
  return best


def format_mean_std(stats: Dict[str, Any], metric: str) -> str:
  """`mean ± std` in the units of results tables (`format_metric`); the mean alone for one value, `—` for none."""
  if stats["mean"] is None:
    return "—"
  if stats["std"] is None:
    return format_metric(stats["mean"], metric)
  return f"{format_metric(stats['mean'], metric)} ± {format_metric(stats['std'], metric)}"


def sweep_table(rows: Sequence[Dict[str, Any]], keys: Sequence[str], headline: str, higher_is_better: bool,
                seeds: Sequence[int], objective: str) -> str:
  """The Markdown table with the lines above it that say what was swept and how the best cell was chosen."""
  complete = sum(r["n"] == r["total"] for r in rows)
  finished_runs = sum(r["n"] for r in rows)
  direction = "higher" if higher_is_better else "lower"
  lines = [f"Sweep of {objective} over {' × '.join(keys) or 'seeds only'}; seeds {', '.join(map(str, seeds))}; "
           f"{finished_runs} of {sum(r['total'] for r in rows)} runs finished, {complete} of {len(rows)} cells "
           "complete."]
  if finished_runs and not any(r["val"]["values"] for r in rows):
    lines.append("These runs have no validation split (data.val_fraction = 0), so no cell is selected: the test "
                 "split is never used to choose. Set data.val_fraction > 0 to select on validation.")
  elif any(r["best"] for r in rows):
    lines.append(f"★ marks the best mean validation {headline} ({direction} is better) among the complete cells; "
                 "the test column is only reported, never used to choose.")
  else:
    lines.append("No cell has every seed finished with a validation value yet, so none is selected.")
  head = list(keys) + [f"val {headline} (mean ± std)", f"test {headline} (mean ± std)", "n", "best"]
  lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(keys) + "---:|---:|---:|:---:|"]
  for r in rows:
    cells = [r["cell"][k] for k in keys] + [format_mean_std(r["val"], headline), format_mean_std(r["test"], headline),
                                            f"{r['n']}/{r['total']}", "★" if r["best"] else ""]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _write_atomically(path: str, data: bytes) -> None:
  # A unique temporary name: shards on several hosts may write the same table at the same moment.
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path) + ".", suffix=".tmp")
  with os.fdopen(fd, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def _number(name: str) -> Optional[float]:
  try:
    value = ast.literal_eval(name)
  except (ValueError, SyntaxError):
    return None
  return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def plot_key(path: str, key: str, rows: Sequence[Dict[str, Any]], grid: Sequence[Tuple[str, List]],
             anchor: Dict[str, str], headline: str) -> None:
  """A PNG of the validation and test headline (mean, error bar one std) against `key`'s values, the other
  keys at `anchor`'s values. Numeric values on a numeric axis, others evenly spaced."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  names = [name for k, values in grid if k == key for _, name in values]
  by_cell = {tuple(sorted(r["cell"].items())): r for r in rows}
  points = [by_cell[tuple(sorted({**anchor, key: name}.items()))] for name in names]
  numbers = [_number(n) for n in names]
  xs = numbers if all(x is not None for x in numbers) else list(range(len(names)))
  scale = 100.0 if headline == "accuracy" else 1.0
  fig = Figure(figsize=(5.0, 3.6), layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  for split, marker in (("val", "o"), ("test", "s")):
    shown = [(x, p[split]) for x, p in zip(xs, points) if p[split]["mean"] is not None]
    if shown:
      ax.errorbar([x for x, _ in shown], [scale * s["mean"] for _, s in shown],
                  yerr=[scale * (s["std"] or 0.0) for _, s in shown], marker=marker, capsize=3, label=split)
  if xs != numbers:
    ax.set_xticks(xs, names)
  others = ", ".join(f"{k}={v}" for k, v in anchor.items() if k != key)
  ax.set_title(f"{headline} vs {key}, mean ± std over seeds" + (f"\n(at {others})" if others else ""),
               fontsize="small")
  ax.set_xlabel(key)
  ax.set_ylabel(f"{headline} (%)" if scale == 100.0 else headline)
  ax.legend(fontsize="small")
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  _write_atomically(path, buf.getvalue())


def _finished_results(workdir: str, runs: Sequence[SweepRun],
                      known: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
  out = {}
  for run in runs:
    results = known.get(run.path) or finished(os.path.join(workdir, run.path), run.config)
    if results is not None:
      out[run.path] = results
  return out


def write_summary(workdir: str, runs: Sequence[SweepRun], grid: Sequence[Tuple[str, List]],
                  results: Dict[str, Dict[str, Any]], failed: Dict[str, str]) -> Dict[str, Any]:
  """Aggregates the finished `results` (run path -> results.json), selects the best cell on validation, and
  writes `results.md`, `results.json` and one `sweep_<key>.png` per swept key into `workdir`."""
  task = get_task(runs[0].config.task)
  headline = next((r["headline"] for r in results.values()), task.headline)
  keys = [k for k, _ in grid]
  rows = aggregate(runs, results, headline)
  best = select_best(rows, task.higher_is_better)
  if best is not None:
    rows[best]["best"] = True
  seeds = list(dict.fromkeys(r.seed for r in runs))
  table = sweep_table(rows, keys, headline, task.higher_is_better, seeds, describe_objective(runs[0].config))
  status = [{"path": r.path, "seed": r.seed, "cell": dict(r.cell),
             "status": "done" if r.path in results else "failed" if r.path in failed else "not finished",
             **({"error": failed[r.path]} if r.path in failed else {})} for r in runs]
  summary = {"grid": {k: [name for _, name in values] for k, values in grid}, "seeds": seeds,
             "headline": headline, "higher_is_better": task.higher_is_better,
             "best": rows[best]["cell"] if best is not None else None,
             "selection": "mean validation headline among complete cells; test only reported",
             "cells": rows, "runs": status}
  if distributed.is_main_process():
    _write_atomically(os.path.join(workdir, "results.md"), (table + "\n").encode())
    _write_atomically(os.path.join(workdir, "results.json"), json.dumps(summary, indent=2).encode())
    anchor = dict(rows[best]["cell"]) if best is not None else {k: values[0][1] for k, values in grid}
    for key in keys:
      plot_key(os.path.join(workdir, f"sweep_{key}.png"), key, rows, grid, anchor, headline)
  return {"table": table, "summary": summary}


def run_sweep(base: ml_collections.ConfigDict, workdir: str, grid: Sequence[str], *,
              seeds: Optional[Sequence[int]] = None, overrides: Sequence[str] = (),
              shard: Tuple[int, int] = (0, 1), progress_bar: Optional[bool] = None) -> Dict[str, Any]:
  """Runs this shard's runs of the sweep (`grid`: `KEY=V1,V2,...` items) in `workdir`, skipping finished ones,
  then writes the table from every finished run of the whole sweep (`write_summary`).

  Returns `{'workdir', 'table', 'summary', 'ran', 'skipped', 'failed'}`: the run paths trained now and skipped
  as finished, and `failed` mapping a run path that failed to the reason. `progress_bar` overrides the config's.
  """
  parsed = parse_grid(grid)
  runs = plan_runs(base, parsed, seeds, overrides)
  workdir = prepare_workdir(workdir)
  mine = shard_runs(runs, *shard)
  ran, skipped, failed, known = [], [], {}, {}
  for count, run in enumerate(mine, 1):
    config, run_dir = run.config, os.path.join(workdir, run.path)
    if progress_bar is not None:
      config.progress_bar = progress_bar
    done = finished(run_dir, config)
    label = f"[kd_jax] sweep {count}/{len(mine)}: {run.path}"
    if done is not None:
      print(f"{label}: finished earlier; skipped", flush=True)
      skipped.append(run.path)
      known[run.path] = done
      continue
    print(label, flush=True)
    try:
      known[run.path] = train_and_evaluate(config, run_dir)
      ran.append(run.path)
    except KDJaxError as e:
      failed[run.path] = str(e)
      print(f"{label}: failed: {e}", flush=True)
  out = write_summary(workdir, runs, parsed, _finished_results(workdir, runs, known), failed)
  return {"workdir": workdir, "ran": ran, "skipped": skipped, "failed": failed, **out}
