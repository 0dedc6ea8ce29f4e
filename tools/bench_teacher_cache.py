"""Speed of the KD train step with the teacher-output cache (`config.teacher.cache`) against the live teacher.

Usage:
  python tools/bench_teacher_cache.py --teacher resnet32x4 --student resnet8x4 --batch 64 --examples 2048
  python tools/bench_teacher_cache.py --teacher cnn_large --student mlp_small --image-size 8 --channels 1 \\
      --num-classes 10 --examples 1024 --json

Measures, on random images held in a `Split` of `--examples` examples (flip-only augmentation unless
`--no-flip`; the cache refuses crops):
  (a) the student's step alone (cross-entropy, no teacher),
  (b) the KD step (`ce + kd`) running the teacher, as training does without the cache,
  (c) the same KD step reading the cached teacher logits (both flip views) gathered by 'index' on the host,
  (d) the one-off cost of building the cache (one eval-mode teacher pass over the split, both views),
    reported in total and per example, so it can be scaled to a full split (50 000 for CIFAR), and of
    opening it again as a resumed run does (`cache_reuse_s`: reading the entry and checking it against a
    fresh pass over its first evaluation batch, compilation included).
Each timed step is what the training loop does per step: build the batch on the host (`Split.get`, plus
`TeacherCache.gather` for (c)), place it on the mesh, run the jitted step (state donated), wait for the
loss. (a), (b) and (c) are interleaved round by round (`--rounds` rounds of `--steps` steps each, after one
compiling call and one warm-up call each), so load from other processes hits all three alike; the figures
are the medians over all timed steps, with the load average before and after. Teacher variables are
freshly initialised (shapes, not trained values, set the speed).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
import optax

from kd_jax import data as kd_data
from kd_jax import distillers as kd_distillers
from kd_jax import models as kd_models
from kd_jax.config import base_config
from kd_jax.models import conv as kd_conv
from kd_jax.train import sharding
from kd_jax.train import teacher_cache as tc
from kd_jax.train.step import create_train_state, train_step
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


def random_split(args: argparse.Namespace) -> kd_data.Split:
  rng = np.random.default_rng(0)
  shape = (args.examples, args.image_size, args.image_size, args.channels)
  return kd_data.Split(images=rng.integers(0, 256, shape, dtype=np.uint8),
                       labels=rng.integers(0, args.num_classes, args.examples).astype(np.int32),
                       mean=np.full(args.channels, 0.5, np.float32), std=np.full(args.channels, 0.25, np.float32),
                       scale=1 / 255)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  # Traced with the convolution backward a default training run uses.
  with kd_conv.conv_backward(kd_conv.conv_backward_for(base_config())):
    return _main(argv)


def _main(argv: Optional[Sequence[str]]) -> Dict[str, Any]:
  args = parse_args(argv)
  load_before = os.getloadavg()
  mesh = sharding.make_mesh()
  split = random_split(args)
  config = base_config()
  config.data.flip = args.flip
  config.eval_batch_size = args.eval_batch
  config.optim.schedule = "constant"
  teacher = kd_models.create_model(args.teacher, args.num_classes)
  student = kd_models.create_model(args.student, args.num_classes)
  sample = kd_data.train_batch(split, args.batch, seed=0, step=0)
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

    steps_per_epoch = kd_data.steps_per_epoch(args.examples, args.batch)
    schedule = optax.constant_schedule(0.05)
    tx = optax.sgd(schedule, momentum=0.9)
    placed_vars = sharding.replicate(teacher_vars, mesh)
    variants = {
        "student_step_s": (kd_distillers.from_config({"ce": {"weight": 1.0}}), None),
        "kd_step_live_s": (kd_distillers.from_config({"ce": {"weight": 1.0}, "kd": {"weight": 1.0}}), None),
        "kd_step_cached_s": (kd_distillers.from_config({"ce": {"weight": 1.0}, "kd": {"weight": 1.0}}), cache),
    }
    runners = {}
    for name, (distiller, variant_cache) in variants.items():
      state = create_train_state(jax.random.PRNGKey(0), student, distiller, tx,
                                 {k: jnp.asarray(v) for k, v in sample.items()}, teachers, teacher_vars)
      state = sharding.replicate(state, mesh)
      step = jax.jit(functools.partial(
          train_step, student=student, teachers=teachers, distiller=distiller, tx=tx, schedule=schedule,
          steps_per_epoch=steps_per_epoch, flip=args.flip,
          teacher_cache=None if variant_cache is None else variant_cache.layout), donate_argnums=(0,),
          compiler_options=kd_conv.compiler_options_for(config))  # as the training loop
      runners[name] = {"state": state, "step": step, "cache": variant_cache, "times": [], "i": 0}

    def one_step(runner) -> float:
      start = time.perf_counter()
      indices = kd_data.batch_indices(args.examples, args.batch, seed=0, step=runner["i"])
      batch = split.get(indices)
      if runner["cache"] is not None:
        batch.update(runner["cache"].gather(indices))
      runner["state"], metrics = runner["step"](runner["state"], sharding.shard_batch(batch, mesh), placed_vars)
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
