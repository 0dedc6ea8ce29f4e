"""PSNR and SSIM of a finished SR run's exported model on benchmark folders (Set5, Set14, B100, Urban100).

Usage:
  python tools/sr_evaluate.py --workdir runs/div2k_rcan_x4 --scale 4 --benchmarks $DATA/benchmark
  python tools/sr_evaluate.py --workdir runs/sr_lsfd --scale 2 --hr my_images/HR [--lr my_images/LR]
`--benchmarks DIR` reads DIR/<set>/HR and DIR/<set>/LR_bicubic/X<scale> (the layout EDSR-PyTorch and BasicSR
distribute; without the LR folder the LR images are made by MATLAB-style bicubic downscaling) for every set
present. Whole images, one at a time, measured as SR papers report (kd_jax.metrics: 8-bit, Y channel,
`scale` pixels shaved). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax.numpy as jnp
import numpy as np

from kd_jax import metrics
from kd_jax.data.super_resolution import read_pairs
from kd_jax.errors import KDJaxError
from kd_jax.sr_study import sr_model

BENCHMARKS = ("Set5", "Set14", "B100", "Urban100")


def evaluate_folder(workdir: str, hr_dir: str, lr_dir: str, scale: int, y_channel: bool = True):
  """Mean PSNR and SSIM of the run's model over the image pairs of a folder."""
  lr_images, hr_images, _ = read_pairs(hr_dir, lr_dir, scale, "Benchmark")
  model = sr_model(workdir, scale)
  psnr, ssim = [], []
  for lr, hr in zip(lr_images, hr_images):
    sr = jnp.asarray(model(lr)[None])
    target = jnp.asarray(hr[None].astype(np.float32) / 255.0)
    psnr.append(float(metrics.psnr(sr, target, scale=scale, y_channel=y_channel)[0]))
    ssim.append(float(metrics.ssim(sr, target, scale=scale, y_channel=y_channel)[0]))
  return float(np.mean(psnr)), float(np.mean(ssim)), len(psnr)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a finished run (its exported model)")
  parser.add_argument("--scale", type=int, required=True)
  parser.add_argument("--benchmarks", help="folder holding Set5, Set14, B100, Urban100")
  parser.add_argument("--hr", help="one folder of HR images")
  parser.add_argument("--lr", default="", help="its LR images (default: bicubic downscaling)")
  args = parser.parse_args(argv)
  sets = []
  if args.benchmarks:
    for name in BENCHMARKS:
      root = os.path.join(args.benchmarks, name)
      if os.path.isdir(os.path.join(root, "HR")):
        lr = os.path.join(root, "LR_bicubic", f"X{args.scale}")
        sets.append((name, os.path.join(root, "HR"), lr if os.path.isdir(lr) else ""))
  if args.hr:
    sets.append((os.path.basename(os.path.normpath(args.hr)), args.hr, args.lr))
  try:
    if not sets:
      raise KDJaxError("Nothing to evaluate: give --hr DIR, or --benchmarks DIR holding <set>/HR folders "
                       f"({', '.join(BENCHMARKS)}).")
    print(f"| set | images | PSNR (×{args.scale}, Y) | SSIM |\n|---|---:|---:|---:|")
    for name, hr, lr in sets:
      psnr, ssim, count = evaluate_folder(args.workdir, hr, lr, args.scale)
      print(f"| {name} | {count} | {psnr:.2f} | {ssim:.4f} |", flush=True)
  except KDJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
