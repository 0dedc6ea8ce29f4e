"""Speed of the KD train step with the teacher-output cache (`config.teacher.cache`) against the live teacher.

Usage:
  python tools/bench_teacher_cache.py --teacher resnet32x4 --student resnet8x4 --batch 64 --examples 2048
  python tools/bench_teacher_cache.py --teacher cnn_large --student mlp_small --image-size 8 --channels 1 \\
      --num-classes 10 --examples 1024 --json

Measures, on random images (`kd_jax.data.from_arrays`, all `--examples` of them in the training split;
flip-only augmentation unless `--no-flip`; the cache refuses crops):
  (a) the student's step alone (cross-entropy, no teacher),
  (b) the KD step (`ce + kd`) running the teacher, as training does without the cache,
  (c) the same KD step reading the cached teacher logits (both flip views) gathered by 'index' on the host,
  (d) the one-off cost of building the cache (one eval-mode teacher pass over the split, both views),
    reported in total and per example, so it can be scaled to a full split (50 000 for CIFAR), and of
    opening it again as a resumed run does (`cache_reuse_s`: reading the entry and checking it against a
    fresh pass over its first evaluation batch, compilation included).
Each variant is a run built as the training loop builds it: a config (`base_config()` with the student, the
batch, flip, the loss and SGD at a constant 0.05 with momentum 0.9) through `kd_jax.train.run.build_run`
with the teacher passed in (`teachers=`), its state from `init_state` and its step from `make_step`; (c)'s
run reads the cache this tool opened (`kd_jax.train.teacher_cache.open_cache`, set as the run's
`output_cache`). Each timed step is what the training loop does per step: build the batch on the host
(`kd_jax.train.run.host_batch`: `Split.get`, plus `TeacherCache.gather` for (c)), place it on the mesh, run
the jitted step (state donated), wait for the loss. (a), (b) and (c) are interleaved round by round
(`--rounds` rounds of `--steps` steps each, after one compiling call and one warm-up call each), so load
from other processes hits all three alike; the figures are the medians over all timed steps, with the load
average before and after. Teacher variables are freshly initialised (shapes, not trained values, set the
speed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import backends
from kd_jax import data as kd_data
from kd_jax import models as kd_models
from kd_jax.config import base_config
from kd_jax.train import sharding
from kd_jax.train import teacher_cache as tc
from kd_jax.train.run import build_run, host_batch, init_state, make_step
from kd_jax.train.teachers import Teachers


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--teacher", default="resnet32x4")
  parser.add_argument("--student", default="resnet8x4")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--examples", type=int, default=2048, help="examples in the (random) training split")
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--num-classes", type=int, default=100)
  parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
  parser.add_argument("--eval-batch", type=int, default=256, help="batch of the cache-building pass")
  parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
  args = parser.parse_args(argv)
  if args.examples < args.batch:
    parser.error("--examples must be at least --batch")
  return args


def random_dataset(args: argparse.Namespace) -> kd_data.Dataset:
  """`--examples` random uint8 images, all in the training split (`kd_jax.data.from_arrays`), normalised as
  `(x / 255 - 0.5) / 0.25`."""
  rng = np.random.default_rng(0)
  shape = (args.examples, args.image_size, args.image_size, args.channels)
  images = rng.integers(0, 256, shape, dtype=np.uint8)
  labels = rng.integers(0, args.num_classes, args.examples).astype(np.int32)
  return kd_data.from_arrays(images, labels, num_classes=args.num_classes, val_fraction=0.0, name="random",
                             mean=0.5 * 255, std=0.25 * 255)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  args = parse_args(argv)
  load_before = os.getloadavg()
  mesh = sharding.make_mesh()
  dataset = random_dataset(args)
  split = dataset.train
  config = base_config()
  config.student.model = args.student
  config.batch_size = args.batch
  config.eval_batch_size = args.eval_batch
  config.data.flip = args.flip
  # SGD with momentum 0.9 at a constant 0.05, no weight decay.
  config.optim.schedule, config.optim.lr, config.optim.momentum, config.optim.weight_decay = "constant", 0.05, 0.9, 0.0
  teacher = kd_models.create_model(args.teacher, args.num_classes, kernels=backends.kernels_for(config))
  sample = kd_data.train_batch(split, args.batch, seed=config.seed, step=0)
  teacher_vars = (teacher.init(jax.random.PRNGKey(1), jnp.asarray(sample["image"][:1]), train=False),)
  teachers = Teachers((teacher,), (1.0,), (False,))

  with tempfile.TemporaryDirectory() as directory:
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the library's progress line; stdout is for --json
      cache = tc.open_cache(config, teachers, teacher_vars, split, directory, mesh)
    build_s = time.perf_counter() - start
    # Opening it again: what a resumed run pays, the check of the entry against a fresh first batch included.
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
      reopened = tc.open_cache(config, teachers, teacher_vars, split, directory, mesh)
    reuse_s = time.perf_counter() - start
    if reopened.built:
      raise RuntimeError("the cache entry just built was rebuilt when opened again")

    variants = {
        "student_step_s": ({"ce": {"weight": 1.0}}, None),
        "kd_step_live_s": ({"ce": {"weight": 1.0}, "kd": {"weight": 1.0}}, None),
        "kd_step_cached_s": ({"ce": {"weight": 1.0}, "kd": {"weight": 1.0}}, cache),
    }
    rows = sharding.process_rows(args.batch, mesh)
    runners = {}
    for name, (loss, variant_cache) in variants.items():
      config.loss = loss
      run = build_run(config, dataset, teachers=(teachers, teacher_vars), mesh=mesh)
      if variant_cache is not None:
        # build_run opens config.teacher.cache only for teachers it loads itself; this one is already open.
        run = dataclasses.replace(run, output_cache=variant_cache)
        if not run.uses_cache(0):
          raise RuntimeError(f"{name}: the run does not read the teacher-output cache")
      state = init_state(run)
      runners[name] = {"run": run, "state": state, "step": make_step(run, state, 0), "times": [], "i": 0}

    def one_step(runner) -> float:
      # What the training loop does per step: the batch of this step built on the host (with the cached
      # teacher outputs gathered by index where the run reads the cache), placed on the mesh, one step.
      start = time.perf_counter()
      run = runner["run"]
      batch = sharding.shard_batch(host_batch(run, 0, runner["i"], rows), mesh, global_batch_size=args.batch)
      runner["state"], metrics = runner["step"](runner["state"], batch, run.teacher_variables)
      metrics["loss"].block_until_ready()
      runner["i"] += 1
      return time.perf_counter() - start

    compile_s = {name: one_step(r) for name, r in runners.items()}
    for r in runners.values():
      one_step(r)  # warm-up
    for _ in range(args.rounds):
      for r in runners.values():
        r["times"] += [one_step(r) for _ in range(args.steps)]

  result: Dict[str, Any] = {
      "teacher": args.teacher, "student": args.student, "batch": args.batch, "examples": args.examples,
      "image_shape": [args.image_size, args.image_size, args.channels], "flip": args.flip,
      "devices": mesh.size, "platform": jax.devices()[0].platform, "jax_version": jax.__version__,
      "timed_steps": args.rounds * args.steps, "load_avg_before": [round(x, 2) for x in load_before],
      "load_avg_after": [round(x, 2) for x in os.getloadavg()],
      "cache_build_s": round(build_s, 3), "cache_build_per_example_ms": round(1e3 * build_s / args.examples, 4),
      "cache_reuse_s": round(reuse_s, 3), "cache_bytes": cache.report()["bytes"],
      "compile_s": {k: round(v, 3) for k, v in compile_s.items()}}
  for name, r in runners.items():
    result[name] = round(statistics.median(r["times"]), 5)
  result["cached_over_live"] = round(result["kd_step_cached_s"] / result["kd_step_live_s"], 3)
  result["cached_over_student"] = round(result["kd_step_cached_s"] / result["student_step_s"], 3)
  if args.json:
    print(json.dumps(result))
  else:
    for key, value in result.items():
      print(f"{key:28s} {value}")
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
