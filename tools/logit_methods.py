"""Every logit distiller on the embedded digits data, over several seeds, next to the CE and KD students.

Usage (the numbers in docs/results.md come from this command):
  python tools/logit_methods.py --seeds 0 1 2 --workdir runs/logit_methods
Per seed it trains the default study's teacher (cnn_large) and a second cnn_large teacher (seed + 100, for
the ensemble), then the mlp_small student with each method's config from experiments/, and the KD student
with the calibrated teacher (`config.teacher.calibrate`). Writes <workdir>/summary.md. `--quick` shrinks
every run to a few steps (a smoke test of the script, not a result).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from kd_jax.config import load_config_file, set_value
from kd_jax.errors import KDJaxError
from kd_jax.distillers import describe as describe_loss
from kd_jax.study import study_configs
from kd_jax.train import train_and_evaluate

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")

# method name -> (config file in experiments/, overrides)
METHODS = {
    "CE": ("digits_kd.py", {"loss": {"ce": {"weight": 1.0}}}),
    "KD": ("digits_kd.py", {}),
    # A seed whose teacher classifies every validation image correctly fits T at the search bound; the table
    # keeps that teacher at T = 1 and counts such seeds rather than stopping (the default stops a run).
    "KD, calibrated teacher": ("digits_kd.py", {"teacher.calibrate": True,
                                                "teacher.calibration_at_bound": "keep_one"}),
    "DKD": ("digits_dkd.py", {}),
    "DIST": ("digits_dist.py", {}),
    "LS-KD": ("digits_ls_kd.py", {}),
    "Energy KD (paper's T rule)": ("digits_energy_kd.py", {}),
    "Energy KD (repository's T rule)": ("digits_energy_kd_repo.py", {}),
    "HE-DA": ("digits_he_da.py", {}),
    "CSKD + CSWT": ("digits_cskd.py", {}),
    "R2KD": ("digits_r2kd.py", {}),
    "R2KD, lr 0.01": ("digits_r2kd.py", {"optim.lr": 0.01}),
    "Ensemble KD (2 teachers)": ("digits_ensemble_kd.py", {"teacher.extra_workdirs": ("@teacher_b",)}),
    "NKD": ("digits_nkd.py", {}),
    "TTM": ("digits_ttm.py", {}),
    "WTTM": ("digits_wttm.py", {}),
    "MLKD": ("digits_mlkd.py", {}),
    "CTKD": ("digits_ctkd.py", {}),
    "Energy DKD (paper's T rule)": ("digits_energy_dkd.py", {}),
    "Energy DKD (repository's T rule)": ("digits_energy_dkd_repo.py", {}),
}
# teacher run name -> (model, seed offset); "@name" in a method's overrides is that teacher's workdir.
TEACHERS = {"teacher": ("cnn_large", 0), "teacher_b": ("cnn_large", 100)}


def _shrink(config):
  config.epochs, config.max_steps, config.log_every_steps = 1, 3, 1


def _resolve(value, teachers):
  if isinstance(value, str) and value.startswith("@"):
    return teachers[value[1:]]
  if isinstance(value, tuple):
    return tuple(_resolve(v, teachers) for v in value)
  return value


def run_seed(seed: int, workdir: str, quick: bool, methods: dict = METHODS, teacher_specs: dict = TEACHERS) -> dict:
  """Trains the teachers of `teacher_specs`, then every method of `methods` (all on `seed`) under `workdir`."""
  runs = {}
  teachers = {}
  for name, (model, offset) in teacher_specs.items():
    config = study_configs(seed=seed + offset)["teacher"]
    config.student.model = model
    config.progress_bar = False
    if quick:
      _shrink(config)
    teachers[name] = os.path.join(workdir, name)
    runs[name] = train_and_evaluate(config, teachers[name])
  for method, (file, overrides) in methods.items():
    config = load_config_file(os.path.join(EXPERIMENTS, file))
    config.seed = seed
    config.progress_bar = False
    config.teacher.workdir = teachers["teacher"]
    for key, value in overrides.items():
      set_value(config, key, _resolve(value, teachers))
    if quick:
      _shrink(config)
    slug = "".join(ch for ch in method.lower().replace(" ", "_") if ch.isalnum() or ch in "_.-")
    try:
      runs[method] = train_and_evaluate(config, os.path.join(workdir, slug))
    except KDJaxError as e:  # a diverged run is a result too: report it, keep going
      print(f"[{method}, seed {seed}] {e}", flush=True)
      runs[method] = {"test_accuracy": None, "error": str(e)}
    runs[method]["loss_text"] = describe_loss(config.loss.to_dict())
    if config.phases:  # e.g. "init (4 ep): 1·ab → main: 1·ce"
      runs[method]["loss_text"] = " → ".join(
          f"{p['name']}" + (f" ({p['epochs']} ep)" if "epochs" in p else "") + ": "
          + describe_loss(dict(p.get("loss", config.loss.to_dict()))) for p in config.phases)
    runs[method]["student"] = config.student.model
  return runs


def _stats(values):
  a = 100 * np.asarray(values, np.float64)
  return a.mean(), (a.std(ddof=1) if len(a) > 1 else 0.0), a


def summarize(per_seed: dict) -> str:
  seeds = sorted(per_seed)
  kd_mean = _stats([per_seed[s]["KD"]["test_accuracy"] for s in seeds])[0]
  lines = [f"| method | loss | test acc, mean ± std ({len(seeds)} seeds) | vs KD | per-seed |",
           "|---|---|---:|---:|---|"]
  present = lambda name: all(name in per_seed[s] for s in seeds)  # a workdir run with --methods lacks rows
  for name in [t for t in ("teacher", "teacher_b") if present(t)]:
    mean, std, a = _stats([per_seed[s][name]["test_accuracy"] for s in seeds])
    lines.append(f"| {name} ({per_seed[seeds[0]][name]['model']}) | ce | {mean:.2f} ± {std:.2f} | | "
                 f"{', '.join(f'{x:.2f}' for x in a)} |")
  for method in [m for m in METHODS if present(m)]:
    results = [per_seed[s][method]["test_accuracy"] for s in seeds]
    if any(r is None for r in results):
      failed = [str(s) for s in seeds if per_seed[s][method]["test_accuracy"] is None]
      lines.append(f"| {method} | {per_seed[seeds[0]][method]['loss_text']} | diverged (non-finite loss) on "
                   f"seed(s) {', '.join(failed)} | | "
                   f"{', '.join('—' if r is None else f'{100 * r:.2f}' for r in results)} |")
      continue
    mean, std, a = _stats(results)
    lines.append(f"| {method} | {per_seed[seeds[0]][method]['loss_text']} | {mean:.2f} ± {std:.2f} | "
                 f"{mean - kd_mean:+.2f} | {', '.join(f'{x:.2f}' for x in a)} |")
  if not present("KD, calibrated teacher"):
    return "\n".join(lines)
  cal = [per_seed[s]["KD, calibrated teacher"]["teacher_calibration"][0] for s in seeds]
  lines += ["", "Teacher calibration on the validation split (mean over seeds; 15 bins):", "",
            "| fitted T | ECE before | ECE after | over/under before | ACE before | ACE after | NLL before | NLL after |",
            "|---:|---:|---:|---|---:|---:|---:|---:|"]
  m = lambda k: np.mean([c[k] for c in cal])
  lines.append(f"| {m('temperature'):.3f} | {m('ece_before'):.4f} | {m('ece_after'):.4f} | "
               f"{m('ece_over_before'):.4f} / {m('ece_under_before'):.4f} | {m('ace_before'):.4f} | "
               f"{m('ace_after'):.4f} | {m('nll_before'):.4f} | {m('nll_after'):.4f} |")
  kept = [str(s) for s, c in zip(seeds, cal) if "kept_uncalibrated" in c]
  if kept:
    lines += ["", f"Seed(s) {', '.join(kept)}: the temperature fitted at the search bound was not applied; the "
              "teacher kept T = 1 (`config.teacher.calibration_at_bound='keep_one'`, reason in results.json)."]
  return "\n".join(lines)


def run_table(doc: str, default_workdir: str, methods: dict, teacher_specs: dict, summarize_fn) -> None:
  """The command line shared by the methods tables: runs seeds, writes runs.json and summary.md.

  `--methods NAME ...` re-runs only those rows and keeps the others from <workdir>/runs.json (teacher runs
  already in the workdir are finished, so they are only re-evaluated).
  """
  parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--workdir", default=default_workdir)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--methods", nargs="+", default=None,
                      help="run only these rows (exact names); the others are read from <workdir>/runs.json")
  args = parser.parse_args()
  unknown = sorted(set(args.methods or ()) - set(methods))
  if unknown:
    parser.error(f"unknown method(s) {unknown}; rows: {list(methods)}")
  selected = methods if args.methods is None else {m: methods[m] for m in args.methods}
  per_seed = {}
  stored = os.path.join(args.workdir, "runs.json")
  if args.methods is not None and os.path.isfile(stored):
    with open(stored) as f:
      per_seed = {int(seed): runs for seed, runs in json.load(f).items()}
  for seed in args.seeds:
    runs = run_seed(seed, os.path.join(args.workdir, f"seed{seed}"), args.quick, selected, teacher_specs)
    per_seed[seed] = {**per_seed.get(seed, {}), **runs}
    with open(stored, "w") as f:
      json.dump(per_seed, f, indent=2, default=str)
    # Progress: the seeds that have every row (with --methods, later seeds may still lack the new ones).
    complete = {s: r for s, r in per_seed.items() if all(m in r for m in methods)}
    if complete:
      print(summarize_fn(complete), flush=True)
  table = summarize_fn(per_seed)
  with open(os.path.join(args.workdir, "summary.md"), "w") as f:
    f.write(table + "\n")
  print("\n" + table)


def main() -> None:
  run_table(__doc__, "runs/logit_methods", METHODS, TEACHERS, summarize)


if __name__ == "__main__":
  main()
