"""Segmentation with a privileged modality on the embedded `buildings` tiles, over several seeds.

Usage (the table in docs/methods.md, "Segmentation with a privileged modality", comes from this command):
  python experiments/seg_study.py --seeds 0 1 2 --workdir runs/seg_study --update-docs
Per seed (experiments/seg_configs.py): the teacher (unet_small) on EO+SAR; the student (unet_tiny) on EO alone
with CE; the student with per-pixel KD from the teacher, with per-pixel KD and a feature term through a 1×1
adapter, and with CWD; then the seed paper's kind of network, a DeepLabv3+ teacher with a deformable block
(deeplab_small_dcn) on EO+SAR, its EO student (deeplab_tiny) alone and with per-pixel KD. Rows: test mIoU,
building IoU and pixel accuracy, mean ± sample std over seeds, and the mIoU gain over the EO-only student of
the same architecture and seed (same initialisation and batches). Finished runs are reused, so an interrupted study resumes where it stopped.
`--quick` shrinks every run to a few steps (a smoke test, not a result; it never writes the docs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from seg_configs import CWD, PIXEL_KD, PIXEL_KD_FEATURE, seg_config  # noqa: E402

from kd_jax.distillers import describe  # noqa: E402
from kd_jax.study import run_or_reuse, write_marked_block  # noqa: E402

DOCS = os.path.join(HERE, os.pardir, "docs", "methods.md")
# name: (label, role, model (None: the role's U-Net), loss, teacher run, EO-student run the gain is against)
RUNS = {
    "teacher": ("teacher (EO+SAR)", "teacher", None, None, None, None),
    "student": ("student, EO only, CE", "student", None, None, None, None),
    "pixel_kd": ("student + pixel KD", "student", None, PIXEL_KD, "teacher", "student"),
    "pixel_kd_feature": ("student + pixel KD + feature L2 (1×1 adapter)", "student", None, PIXEL_KD_FEATURE,
                         "teacher", "student"),
    "cwd": ("student + CWD", "student", None, CWD, "teacher", "student"),
    "dcn_teacher": ("DeepLabv3+ teacher with deformable conv (EO+SAR)", "teacher", "deeplab_small_dcn", None,
                    None, None),
    "deeplab_student": ("DeepLabv3+ student, EO only, CE", "student", "deeplab_tiny", None, None, None),
    "deeplab_pixel_kd": ("DeepLabv3+ student + pixel KD", "student", "deeplab_tiny", PIXEL_KD, "dcn_teacher",
                         "deeplab_student"),
}


def run_seed(seed: int, workdir: str, quick: bool) -> Dict[str, Dict]:
  results = {}
  for name, (_, role, model, loss, teacher, _) in RUNS.items():
    config = seg_config(role, loss, model)
    config.seed = seed
    if teacher:
      config.teacher.workdir = os.path.join(workdir, teacher)
    if quick:
      config.epochs, config.max_steps = 1, 3
    print(f"[seg_study] seed {seed}: {name}", flush=True)
    results[name] = run_or_reuse(config, os.path.join(workdir, name))
  return results


def _mean_std(values: Sequence[float]) -> str:
  values = [100 * v for v in values]
  return f"{values[0]:.2f}" if len(values) == 1 else f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(runs: List[Dict[str, Dict]]) -> str:
  lines = ["| run | model | loss | test mIoU (%) | building IoU (%) | pixel acc (%) | mIoU vs its EO student (points) |",
           "|---|---|---|---:|---:|---:|---:|"]
  for name, (label, _, _, _, _, baseline) in RUNS.items():
    first = runs[0][name]
    gain = _mean_std([r[name]["test_miou"] - r[baseline]["test_miou"] for r in runs]) if baseline else ""
    lines.append(f"| {label} | {first['model']} | {describe(first['loss'])} | "
                 f"{_mean_std([r[name]['test_miou'] for r in runs])} | "
                 f"{_mean_std([r[name]['test_iou_1'] for r in runs])} | "
                 f"{_mean_std([r[name]['test_pixel_accuracy'] for r in runs])} | {gain} |")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--workdir", default="runs/seg_study")
  parser.add_argument("--quick", action="store_true", help="a few steps per run: a smoke test, not a result")
  parser.add_argument("--update-docs", action="store_true", help="write the table into docs/methods.md")
  args = parser.parse_args(argv)
  runs = [run_seed(seed, os.path.join(args.workdir, f"seed{seed}"), args.quick) for seed in args.seeds]
  text = table(runs)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "summary.md"), "w") as f:
    f.write(text + "\n")
  print("\n" + text)
  if args.update_docs:
    if args.quick:
      raise SystemExit("--quick results are smoke tests: not written into docs/methods.md.")
    write_marked_block(DOCS, "seg_study", text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
