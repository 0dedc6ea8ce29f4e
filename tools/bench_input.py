"""How many images per second does the streaming input pipeline decode and augment, per worker and in total?

The pipeline of `kd_jax.data.streaming` as a run uses it: JPEGs read from a tfds build, decoded with PIL,
random-resized-cropped and flipped (`--mode train`) or resized and centre-cropped (`--mode eval`), normalised
and stacked into batches by grain worker processes. For each worker count in `--workers` it opens the training
stream (`streaming.train_batches`) and times `--batches` batches after the first one (the first pays for
starting the workers, reported apart as `startup_s`). `0` workers means one prefetch thread of this process.

By default the data are a synthetic build of `--images` JPEGs of 375 × 500 (ImageNet's typical size; photo
crops, `kd_jax.data.testing.build_jpeg_dataset`) in a temporary directory; `--data-dir` and `--name` read a
real build instead (e.g. `--name imagenet2012 --data-dir ~/tensorflow_datasets`).

    python tools/bench_input.py --workers 0,1,2 --images 256 --batch-size 32
    python tools/bench_input.py --name imagenet2012 --data-dir /data/tfds --workers 0,4,8,16 --json

How many workers a GPU needs: workers = (images/s the train step consumes) ÷ (images/s per worker); the step's
rate is `perf/images_per_s` in a run's metrics, or `tools/bench.py` with synthetic data (`--gpu-images-per-s`
prints the estimate for a given rate).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kd_jax.data import streaming  # noqa: E402
from kd_jax.data.datasets import DATASETS  # noqa: E402
from kd_jax.data.testing import build_jpeg_dataset  # noqa: E402


def measure(split: streaming.StreamingSplit, workers: int, batch_size: int, batches: int, mode: str) -> dict:
  """Images/s of `batches` batches after the first, from a stream of `split` with `workers` processes."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  split = dataclasses.replace(split, num_workers=workers, prefetch=max(2, 2 * workers))
  start = time.perf_counter()
  if mode == "train":
    stream = streaming.train_batches(split, batch_size, seed=0, start=0, stop=batches + 1)
  else:
    stream = split.eval_batches(batch_size)
  with stream:
    next(stream)
    first = time.perf_counter()
    count = 0
    for _ in range(batches):
      try:
        next(stream)
      except StopIteration:
        break
      count += 1
    end = time.perf_counter()
  total = count * batch_size / (end - first)
  return {"workers": workers, "images_per_s": total, "images_per_s_per_worker": total / max(workers, 1),
          "startup_s": first - start, "batches": count, "batch_size": batch_size}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data-dir", default="", help="tfds data_dir of a JPEG build ('' = build a synthetic one)")
  parser.add_argument("--name", default="", help="its tfds name, e.g. imagenet2012 ('' = the synthetic build)")
  parser.add_argument("--images", type=int, default=256, help="images of the synthetic build")
  parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--batches", type=int, default=0, help="timed batches per count (0 = one pass, at most 64)")
  parser.add_argument("--image-size", type=int, default=224)
  parser.add_argument("--mode", choices=("train", "eval"), default="train")
  parser.add_argument("--gpu-images-per-s", type=float, default=0.0,
                      help="a train step's images/s: prints the workers it needs")
  parser.add_argument("--json", action="store_true", help="print the results as JSON")
  args = parser.parse_args(argv)

  with tempfile.TemporaryDirectory(prefix="kd_jax_bench_input_") as tmp:
    data_dir, name = args.data_dir, args.name
    if not name:
      data_dir = data_dir or tmp
      name = build_jpeg_dataset(data_dir, config_name=f"bench{args.images}", num_train=args.images,
                                num_validation=args.images, fixed_size=(375, 500))
    spec = DATASETS.get(name) or streaming.spec_for(streaming.TFDS_PREFIX + name, data_dir or None)
    dataset = streaming.load_streaming_dataset(name, spec, data_dir=data_dir or None, val_fraction=0.0, seed=0,
                                               image_size=args.image_size)
    split = dataset.train if args.mode == "train" else dataset.test
    batches = args.batches or min(64, len(split) // args.batch_size - 1)
    if batches < 1:
      parser.error(f"{len(split)} images make no timed batch of {args.batch_size} after the first; "
                   "raise --images or lower --batch-size.")
    rows = [measure(split, int(w), args.batch_size, batches, args.mode) for w in args.workers.split(",")]

  base = rows[0]["images_per_s"]
  for r in rows:
    r["ratio"] = r["images_per_s"] / base
  results = {"name": name, "mode": args.mode, "image_size": args.image_size, "cpus": os.cpu_count(), "rows": rows}
  if args.gpu_images_per_s:
    per_worker = max(r["images_per_s_per_worker"] for r in rows if r["workers"] > 0) if any(
        r["workers"] for r in rows) else rows[0]["images_per_s"]
    results["gpu_images_per_s"] = args.gpu_images_per_s
    results["workers_needed"] = math.ceil(args.gpu_images_per_s / per_worker)
  if args.json:
    print(json.dumps(results, indent=2))
  else:
    print(f"{name} ({args.mode}, {args.image_size}px, {os.cpu_count()} CPUs)")
    print("| workers | images/s | per worker | vs first row | startup s |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
      print(f"| {r['workers']} | {r['images_per_s']:.0f} | {r['images_per_s_per_worker']:.0f} | "
            f"{r['ratio']:.2f}× | {r['startup_s']:.1f} |")
    if "workers_needed" in results:
      print(f"A step consuming {args.gpu_images_per_s:.0f} images/s needs about {results['workers_needed']} workers.")
  return results


if __name__ == "__main__":  # grain starts its workers with 'spawn': they re-import this file
  main()
