"""Would several train steps per compiled call (a `lax.scan` over stacked batches) make small models faster?

The idea: when a model is so small that dispatching a step costs as much as running it, one call that runs k
steps saves k − 1 dispatches. This tool measures it on the library's own `train_step` (jitted exactly as the
loop jits it, state donated), with every batch already on the device, so only the step and its dispatch are
timed: (a) k separate calls of the one-step program, against (b) one call of `jax.lax.scan(train_step)` over
k stacked batches. The variants are interleaved round by round, so load from other processes falls on all
alike; figures are medians of per-step times. KD uses a randomly initialised `cnn_large` teacher (speed
depends on shapes, not trained values). Digits-shaped data (8×8×1, 10 classes).

    python tools/bench_steps_per_call.py --students mlp_tiny,mlp_small,cnn_small --losses ce,kd --k 4,16

The result decided the question for kd_jax (docs/benchmarks.md): the loop does not offer a steps-per-call
option, because on the machines measured the scanned program was not faster.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kd_jax import data as kd_data  # noqa: E402
from kd_jax import distillers, models  # noqa: E402
from kd_jax.config import base_config  # noqa: E402
from kd_jax.train import optim  # noqa: E402
from kd_jax.train.step import create_train_state, train_step  # noqa: E402
from kd_jax.train.teachers import Teachers  # noqa: E402

LOSSES = {"ce": {"ce": {"weight": 1.0}}, "kd": {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}}


def _programs(student_name: str, loss: str, batch_size: int, k: int, dataset):
  """The one-step and the k-step programs of one set-up, their initial state and device-resident batches."""
  config = base_config()
  config.optim.schedule = "constant"
  student = models.create_model(student_name, 10)
  batches = [kd_data.train_batch(dataset.train, batch_size, seed=0, step=i) for i in range(k)]
  sample = {key: jnp.asarray(v) for key, v in batches[0].items()}
  teachers, teacher_variables = Teachers(), ()
  if loss == "kd":
    teacher = models.create_model("cnn_large", 10)
    teachers = Teachers((teacher,), (1.0,))
    teacher_variables = (teacher.init(jax.random.PRNGKey(1), sample["image"][:1]),)
  distiller = distillers.from_config(LOSSES[loss])
  schedule = optim.learning_rate_schedule(config.optim, 100, 10_000)
  tx = optim.make_optimizer(config.optim, schedule)
  state = create_train_state(jax.random.PRNGKey(0), student, distiller, tx, sample, teachers, teacher_variables)
  step = functools.partial(train_step, student=student, teachers=teachers, distiller=distiller, tx=tx,
                           schedule=schedule, steps_per_epoch=100)
  one = jax.jit(step, donate_argnums=(0,))
  several = jax.jit(lambda s, stacked, tv: jax.lax.scan(lambda c, b: step(c, b, tv), s, stacked),
                    donate_argnums=(0,))
  device_batches = [{key: jnp.asarray(v) for key, v in b.items()} for b in batches]
  stacked = {key: jnp.asarray(np.stack([b[key] for b in batches])) for key in batches[0]}
  return one, several, state, device_batches, stacked, teacher_variables


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--students", default="mlp_tiny,mlp_small,cnn_small")
  parser.add_argument("--losses", default="ce,kd")
  parser.add_argument("--k", default="4,16", help="steps per call of the scanned program (comma-separated)")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--calls", type=int, default=5, help="timed calls of the k-step program per round")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)

  dataset = kd_data.load_dataset("digits")
  rows = []
  for student in args.students.split(","):
    for loss in args.losses.split(","):
      for k in (int(v) for v in args.k.split(",")):
        one, several, state, device_batches, stacked, tv = _programs(student, loss, args.batch, k, dataset)
        one_state = jax.tree.map(jnp.copy, state)
        several_state = jax.tree.map(jnp.copy, state)
        start = time.perf_counter()
        for b in device_batches:
          one_state, _ = one(one_state, b, tv)
        jax.block_until_ready(one_state)
        compile_one = time.perf_counter() - start
        start = time.perf_counter()
        several_state, _ = several(several_state, stacked, tv)
        jax.block_until_ready(several_state)
        compile_several = time.perf_counter() - start
        times = {"one": [], "several": []}
        for _ in range(args.rounds):
          start = time.perf_counter()
          for _ in range(args.calls):
            for b in device_batches:
              one_state, metrics = one(one_state, b, tv)
          jax.block_until_ready((one_state, metrics))
          times["one"].append((time.perf_counter() - start) / (args.calls * k))
          start = time.perf_counter()
          for _ in range(args.calls):
            several_state, metrics = several(several_state, stacked, tv)
          jax.block_until_ready((several_state, metrics))
          times["several"].append((time.perf_counter() - start) / (args.calls * k))
        one_ms, several_ms = (1e3 * statistics.median(times[v]) for v in ("one", "several"))
        # Both ran the same steps on the same batches: their parameters must agree, or the comparison is void.
        param_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                         zip(jax.tree.leaves(one_state.params), jax.tree.leaves(several_state.params)))
        rows.append({"student": student, "loss": loss, "k": k, "one_step_ms": one_ms, "scan_ms_per_step": several_ms,
                     "speedup": one_ms / several_ms, "compile_one_s": compile_one,
                     "compile_scan_s": compile_several, "max_param_diff": param_diff})
        print(f"{student} {loss} k={k}: one step {one_ms:.3f} ms, scan {several_ms:.3f} ms/step", file=sys.stderr,
              flush=True)
  load = os.getloadavg()[0]
  if args.json:
    print(json.dumps({"batch": args.batch, "rounds": args.rounds, "calls": args.calls, "loadavg": load,
                      "device": jax.devices()[0].device_kind, "jax_version": jax.__version__, "results": rows},
                     indent=2))
  else:
    print(f"digits-shaped data, batch {args.batch}, {jax.devices()[0].device_kind}, median of {args.rounds} rounds "
          f"of {args.calls} calls (load average {load:.1f})\n")
    print("| student | loss | k | one step per call, ms/step | scan of k, ms/step | speed-up | compile: one / scan s |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
      print(f"| {r['student']} | {r['loss']} | {r['k']} | {r['one_step_ms']:.3f} | {r['scan_ms_per_step']:.3f} | "
            f"{r['speedup']:.2f}× | {r['compile_one_s']:.1f} / {r['compile_scan_s']:.1f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
