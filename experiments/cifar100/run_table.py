"""Runs the published CIFAR-100 (or ImageNet) distillation table, or a part of it, and prints it beside the
published numbers.

  python experiments/cifar100/run_table.py --workdir runs/c100_table \
      --data-dir $HOME/tensorflow_datasets [--methods kd,crd,dkd] [--pairs res32x4_res8x4,vgg13_vgg8] \
      [--seeds 0,1,2] [--shard I/N] [--stage all|teachers|students] [--teacher-workdir MODEL=DIR ...] \
      [--quick] [--config.KEY=VALUE ...]
  python experiments/imagenet/run_table.py ...     # the same with --table imagenet

Cells are method × pair (methods: the config files of experiments/cifar100/, `ce` being the student alone;
pairs: experiments/cifar100_pairs.py). By default every method runs on the pairs it has a published number for
(or its file's TABLE_PAIRS); `--pairs` restricts that, and a method is run on a pair it has no number for only
when the pair is named. Every cell is a sweep over `--seeds` made by `kd_jax.train.sweep.run_sweep`, in
`<workdir>/<method>/<pair>/seed=S`, so a rerun skips finished runs and resumes interrupted ones, and
`--shard I/N` gives each of N hosts the runs whose index (cells in order, seeds innermost) is I mod N.

Teachers (CIFAR-100): each teacher model of the chosen pairs is trained once (seed 0) with
experiments/cifar100_teacher.py's recipe into `<workdir>/teachers/<model>/seed=0`, first (`--stage teachers`
trains them alone, sharded over the teachers; `--stage students` expects them finished). `--teacher-workdir
resnet32x4=DIR` uses a finished or imported run instead (e.g. a checkpoint converted with
`python -m kd_jax import-torch ...`). ImageNet teachers are never trained here: give them with
--teacher-workdir or import them into `<workdir>/teachers/<model>`.

The table: one row per cell, the final-epoch test top-1 (mean ± sample std over the finished seeds; the last
epoch's model, never the best test epoch, and the test split is only reported: any selection uses the
validation split) next to the published number, its source and the difference. The references report their
best test epoch, so a small shortfall is expected. Written to `<workdir>/table.md` and `table.json` too.

`--quick` shrinks every run for a smoke test: tfds mock data (`tfds.testing.mock_data`, random images, no
download), one epoch of a few steps, every phase one epoch, small batches, and every teacher and student
replaced by `--quick-model` (default resnet8); the numbers it prints mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS = os.path.dirname(HERE)
for path in (HERE, EXPERIMENTS, os.path.dirname(EXPERIMENTS)):
  if path not in sys.path:
    sys.path.append(path)

import ml_collections  # noqa: E402

from kd_jax.config import load_config_file, load_python_file  # noqa: E402
from kd_jax.errors import KDJaxError  # noqa: E402
from kd_jax.train import sweep  # noqa: E402

NOT_METHODS = ("published", "c100_common", "run_table", "im_common")
QUICK_EXAMPLES = 48  # mock examples per split: with batch 16, two training steps an epoch


def table_dir(table: str) -> str:
  return os.path.join(EXPERIMENTS, table)


def methods_of(table: str) -> List[str]:
  """The method config files of a table's folder, in a stable order (logit methods first as in the sources)."""
  names = sorted(f[:-3] for f in os.listdir(table_dir(table)) if f.endswith(".py") and f[:-3] not in NOT_METHODS)
  order = ["ce", "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd", "dkd",
           "review_kd", "dist", "ls_kd", "dkd_ls"]
  return [m for m in order if m in names] + [m for m in names if m not in order]


def published_module(table: str):
  return load_python_file(os.path.join(table_dir(table), "published.py"), "published").__globals__


def config_path(table: str, method: str) -> str:
  return os.path.join(table_dir(table), f"{method}.py")


def default_pairs(table: str, method: str, data) -> Tuple[str, ...]:
  """The pairs a method runs on when --pairs is not given: its published ones, else its file's TABLE_PAIRS, else
  its config's default pair."""
  pairs = data["pairs_of"](method)
  if pairs:
    return pairs
  module = load_python_file(config_path(table, method), "get_config").__globals__
  if "TABLE_PAIRS" in module:
    return tuple(module["TABLE_PAIRS"])
  if "REFERENCE_PAIRS" in module:
    return tuple(module["REFERENCE_PAIRS"])
  return (module["get_config"].__defaults__[0],)


def plan_cells(table: str, methods: Sequence[str], pairs: Optional[Sequence[str]], data) -> List[Tuple[str, str]]:
  """(method, pair) cells in table order. With `pairs` given, every method on each of those pairs it accepts."""
  cells = []
  for method in methods:
    if pairs is None:
      chosen = default_pairs(table, method, data)
    else:
      module = load_python_file(config_path(table, method), "get_config").__globals__
      allowed = module.get("TABLE_PAIRS")
      chosen = [p for p in pairs if allowed is None or p in allowed]
    cells += [(method, p) for p in chosen]
  return cells


def quick_config(c: ml_collections.ConfigDict, model: str) -> ml_collections.ConfigDict:
  """`c` shrunk to a smoke test: one short epoch (and phase), small batches, `model` as teacher and student."""
  c.epochs = 1
  c.batch_size = 16
  c.eval_batch_size = 64
  c.log_every_steps = 1
  c.progress_bar = False
  c.student.model = model
  if c.teacher.model:
    c.teacher.model = model
  c.optim.milestones = ()
  c.phases = tuple(dict(p, epochs=1) if "epochs" in p else dict(p) for p in c.phases)
  for spec in list(c.loss.values()) + [v for p in c.phases for v in p.get("loss", {}).values()]:
    if "nce_k" in spec:
      spec["nce_k"] = 16  # CRD's negatives must be fewer than the mock training examples of other classes
  return c


def _shard_of_cell(shard: Tuple[int, int], first_index: int) -> Tuple[int, int]:
  # Run k of a cell has global index first_index + k; run_sweep's shard (j, n) takes k ≡ j (mod n), so
  # j = (i − first_index) mod n gives every run to the shard that owns its global index.
  index, count = shard
  return ((index - first_index) % count, count)


def run_teachers(args, teachers: Sequence[str], shard: Tuple[int, int]) -> Dict[str, str]:
  """Trains each CIFAR teacher once (seed 0) through run_sweep; returns model -> run directory."""
  import cifar100_teacher  # pylint: disable=import-outside-toplevel
  dirs = {}
  for k, model in enumerate(teachers):
    if model in args.teacher_workdir:
      dirs[model] = args.teacher_workdir[model]
      continue
    workdir = os.path.join(args.workdir, "teachers", model)
    dirs[model] = os.path.join(workdir, "seed=0")
    if args.stage == "students" or args.table != "cifar100":
      continue
    c = cifar100_teacher.get_config()
    c.student.model = model
    if args.quick:
      c = quick_config(c, args.quick_model)
    print(f"[run_table] teacher {model}", flush=True)
    out = sweep.run_sweep(c, workdir, [], seeds=[0], overrides=args.overrides, shard=_shard_of_cell(shard, k),
                          progress_bar=False if args.quick else None)
    if out["failed"]:
      print(f"[run_table] teacher {model} failed: {out['failed']}", flush=True)
  return dirs


def run_cells(args, cells, teacher_dirs, shard) -> Dict[Tuple[str, str], dict]:
  """Runs this shard's runs of every cell; returns (method, pair) -> run_sweep's result."""
  results = {}
  for k, (method, pair) in enumerate(cells):
    base = load_config_file(f"{config_path(args.table, method)}:{pair}")
    teacher = base.teacher.model
    overrides = list(args.overrides)
    if teacher:
      overrides.append(f"teacher.workdir={teacher_dirs[teacher]}")
    if args.quick:
      base = quick_config(base, args.quick_model)
    print(f"[run_table] {method} on {pair}", flush=True)
    results[(method, pair)] = sweep.run_sweep(
        base, os.path.join(args.workdir, method, pair), [], seeds=args.seeds, overrides=overrides,
        shard=_shard_of_cell(shard, k * len(args.seeds)), progress_bar=False if args.quick else None)
  return results


def _teacher_accuracy(run_dir: str) -> Optional[float]:
  try:
    with open(os.path.join(run_dir, "results.json")) as f:
      value = json.load(f).get("test_accuracy")
  except (OSError, ValueError):
    return None
  return None if value is None else 100.0 * float(value)


def comparison_table(args, cells, results, teacher_dirs, data) -> Tuple[str, List[dict]]:
  """The Markdown table of final-epoch test top-1 beside the published numbers, and its rows as dicts."""
  rows = []
  for (method, pair), out in results.items():
    stats = out["summary"]["cells"][0]["test"]
    mean = None if stats["mean"] is None else 100.0 * stats["mean"]
    std = None if stats["std"] is None else 100.0 * stats["std"]
    pub = data["published"](method, pair)
    rows.append({"method": method, "pair": pair, "mean": mean, "std": std, "n": len(stats["values"]),
                 "seeds": len(args.seeds), "published": pub[0] if pub else None, "source": pub[1] if pub else None})
  for teacher, run_dir in teacher_dirs.items():
    pub = data.get("TEACHERS", {}).get(teacher)
    acc = _teacher_accuracy(run_dir)
    rows.insert(0, {"method": "teacher", "pair": teacher, "mean": acc, "std": None, "n": int(acc is not None),
                    "seeds": 1, "published": pub[0] if pub else None, "source": pub[1] if pub else None})
  lines = [f"{args.table} table: final-epoch test top-1 (%), mean ± sample std over finished seeds; the test split "
           "is only reported (selection, if any, on validation). Published numbers are the references' best "
           "test epoch." + (" QUICK SMOKE RUN: the numbers mean nothing." if args.quick else ""), "",
           "| method | pair | kd_jax test top-1 | n | published | Δ | source |", "|---|---|---:|---:|---:|---:|---|"]
  for r in rows:
    ours = "—" if r["mean"] is None else f"{r['mean']:.2f}" + ("" if r["std"] is None else f" ± {r['std']:.2f}")
    pub = "—" if r["published"] is None else f"{r['published']:.2f}"
    delta = "" if r["mean"] is None or r["published"] is None else f"{r['mean'] - r['published']:+.2f}"
    lines.append(f"| {r['method']} | {r['pair']} | {ours} | {r['n']}/{r['seeds']} | {pub} | {delta} | "
                 f"{r['source'] or 'not published'} |")
  return "\n".join(lines), rows


def parse_args(argv: Optional[Sequence[str]], table: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--table", default=table, choices=("cifar100", "imagenet"))
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data-dir", default="", help="tfds data_dir (config.data.data_dir)")
  parser.add_argument("--methods", default="", help="comma-separated method files (default: all)")
  parser.add_argument("--pairs", default="", help="comma-separated pairs (default: each method's published pairs)")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--shard", default="0/1", help="I/N: this host's share of the runs")
  parser.add_argument("--stage", default="all", choices=("all", "teachers", "students"))
  parser.add_argument("--teacher-workdir", action="append", default=[], metavar="MODEL=DIR")
  parser.add_argument("--quick", action="store_true", help="smoke test on tfds mock data, a few steps per run")
  parser.add_argument("--quick-model", default="resnet8")
  args, rest = parser.parse_known_args(argv)
  bad = [r for r in rest if not r.startswith("--config.")]
  if bad:
    parser.error(f"unknown arguments {bad}; overrides are --config.KEY=VALUE")
  args.overrides = [r[len("--config."):] for r in rest]
  if args.data_dir:
    args.overrides.append(f"data.data_dir={args.data_dir}")
  args.seeds = sweep.parse_seeds(args.seeds)
  args.shard_pair = sweep.parse_shard(args.shard)
  known = methods_of(args.table)
  args.method_list = [m for m in args.methods.split(",") if m] or known
  unknown = [m for m in args.method_list if m not in known]
  if unknown:
    raise KDJaxError(f"Unknown method(s) {', '.join(unknown)} for the {args.table} table; choose from {', '.join(known)}.")
  args.pair_list = [p for p in args.pairs.split(",") if p] or None
  pairs = dict(item.split("=", 1) for item in args.teacher_workdir if "=" in item)
  if len(pairs) != len(args.teacher_workdir):
    raise KDJaxError("--teacher-workdir takes MODEL=DIR, e.g. --teacher-workdir resnet32x4=runs/c100_resnet32x4.")
  args.teacher_workdir = pairs
  return args


def main(argv: Optional[Sequence[str]] = None, table: str = "cifar100") -> int:
  try:
    args = parse_args(argv, table)
    data = published_module(args.table)
    if args.pair_list is not None:
      resolve = data.get("pair_name", lambda p: p)
      args.pair_list = [resolve(p) for p in args.pair_list]
    cells = plan_cells(args.table, args.method_list, args.pair_list, data)
    if args.quick and args.table != "cifar100":
      raise KDJaxError("--quick runs on CIFAR-sized mock data: use it with --table cifar100.")
    mock = contextlib.nullcontext()
    if args.quick:
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
      mock = tfds.testing.mock_data(num_examples=QUICK_EXAMPLES)
    with mock:
      teachers = []
      for method, pair in cells:
        model = load_config_file(f"{config_path(args.table, method)}:{pair}").teacher.model
        if model and model not in teachers:
          teachers.append(model)
      teacher_dirs = run_teachers(args, teachers, args.shard_pair)
      if args.stage == "teachers":
        return 0
      results = run_cells(args, cells, teacher_dirs, args.shard_pair)
  except KDJaxError as e:
    print(f"run_table: {e}", file=sys.stderr)
    return 2
  text, rows = comparison_table(args, cells, results, teacher_dirs, data)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "table.md"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(args.workdir, "table.json"), "w") as f:
    json.dump({"table": args.table, "seeds": args.seeds, "quick": args.quick, "rows": rows}, f, indent=2)
  print(text)
  failed = any(out["failed"] for out in results.values())
  return 2 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
