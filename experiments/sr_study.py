"""The SR method comparison on the embedded photos: every SR distiller against the plain L1 student, 3 seeds.

Usage (the table in docs/methods.md, "Super-resolution", comes from this command):
  python experiments/sr_study.py --seeds 0 1 2 --workdir runs/sr_study --update-docs
Per seed it trains the teacher (kd_jax.sr_study.TEACHER, L1), then the student (kd_jax.sr_study.STUDENT) with
each method of kd_jax.sr_study.SR_METHODS from the same initialisation and batches: L1 alone, KD on the
output, FitNet, AT, RKD, RKD + output KD (the comparison study of METHODS.md item 18), FAKD, LSFD (item 2)
and adversarial multi-scale feature distillation (scheme 'adversarial' against the frozen teacher). Rows:
test PSNR/SSIM (Y channel, whole held-out photos) mean ± std over seeds, the gain over L1 alone per seed,
parameters and the median step time. Finished runs are reused, so an interrupted study resumes where it
stopped. `--quick` shrinks every run to a few steps (a smoke test, not a result); `--methods` picks rows;
`--scale 4` runs ×4.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import models
from kd_jax.sr_study import SR_METHODS, bicubic_row, sr_method_config
from kd_jax.study import median_step_ms, run_or_reuse, write_marked_block
from kd_jax.train.run import load_data

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "methods.md")


def _params(model: str, scale: int) -> int:
  shapes = jax.eval_shape(models.create_model(model, scale=scale).init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  return models.param_count(shapes["params"])


def _mean_std(values: List[float], digits: int) -> str:
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--scale", type=int, default=2)
  parser.add_argument("--methods", nargs="+", default=list(SR_METHODS))
  parser.add_argument("--workdir", default="runs/sr_study")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--update-docs", action="store_true", help="write the table into docs/methods.md")
  args = parser.parse_args(argv)
  results: Dict[str, Dict[int, Dict]] = {}
  for seed in args.seeds:
    base = os.path.join(args.workdir, f"x{args.scale}", f"seed{seed}")
    teacher_dir = os.path.join(base, "teacher")
    runs = [("teacher", sr_method_config("teacher", seed, args.scale))]
    runs += [(m, sr_method_config(m, seed, args.scale, teacher_workdir=teacher_dir)) for m in args.methods]
    for name, config in runs:
      if args.quick:
        config.epochs, config.max_steps, config.log_every_steps = 1, 3, 1
      print(f"[sr_study] seed {seed}: {name}", flush=True)
      result = run_or_reuse(config, os.path.join(base, name))
      results.setdefault(name, {})[seed] = {"psnr": result["test_psnr"], "ssim": result["test_ssim"],
                                            "model": config.student.model,
                                            "step_ms": median_step_ms(os.path.join(base, name))}
  floor = bicubic_row(load_data(sr_method_config("l1", args.seeds[0], args.scale)), args.scale)
  lines = [f"| method | model | params | test PSNR (×{args.scale}) | gain over L1 (dB) | test SSIM | step |",
           "|---|---|---:|---:|---:|---:|---:|",
           f"| bicubic | — | — | {floor['psnr']:.2f} | — | {floor['ssim']:.4f} | — |"]
  for name, per_seed in results.items():
    seeds = sorted(per_seed)
    psnr = [per_seed[s]["psnr"] for s in seeds]
    gain = "—"
    if name not in ("teacher", "l1") and "l1" in results:
      gain = _mean_std([per_seed[s]["psnr"] - results["l1"][s]["psnr"] for s in seeds if s in results["l1"]], 3)
    model = per_seed[seeds[0]]["model"]
    lines.append(f"| {name} | {model} | {_params(model, args.scale) / 1e3:.1f}K | {_mean_std(psnr, 2)} | {gain} | "
                 f"{_mean_std([per_seed[s]['ssim'] for s in seeds], 4)} | "
                 f"{statistics.median(per_seed[s]['step_ms'] for s in seeds):.0f} ms |")
  table = "\n".join(lines)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, f"summary-x{args.scale}.md"), "w") as f:
    f.write(table + "\n")
  print("\n" + table)
  if args.update_docs and not args.quick:
    write_marked_block(DOCS, "sr_study", table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
