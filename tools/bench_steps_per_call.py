"""Do several train steps per compiled call (`config.steps_per_call`, a `lax.scan` over stacked batches)
make small models faster?

The idea: when a model is so small that dispatching a step costs as much as running it, one call that runs k
steps saves k − 1 dispatches. Two measurements, digits data (8×8×1, 10 classes); KD uses a `cnn_large`
teacher (randomly initialised in the first mode, trained for one step in the second: speed depends on shapes,
not trained values).

Programs alone (default): the loop's own steps, built as the loop builds them (a config run through
`kd_jax.train.run.build_run`, its state from `init_state`, its steps from `make_step`: jitted with the
state's shardings, state donated), with every batch (`host_batch`, as the loop reads them) already on the
device, so only the steps and their dispatch are timed: (a) k separate calls of the one-step program
(`make_step(run, state, 0)`) against (b) one call of the k-step program over k stacked batches
(`make_step(run, state, 0, per_call=k)`, a `lax.scan` of the same step: `kd_jax.train.run._scan_steps`).
The variants are interleaved round by round, so load from other processes falls on both alike; figures are
medians of per-step times, and both variants must end with the same parameters.

    python tools/bench_steps_per_call.py --students mlp_tiny,mlp_small,cnn_small --losses ce,kd --k 4,16

Whole runs (`--loop`): `train_and_evaluate` as a user runs it (host batches, metrics fetched once per logging
interval, evaluation each epoch; a checkpoint only at the end), with `steps_per_call` 1 and each k, for
`--epochs` epochs; the per-step cost is the median of the loop's own `perf/step_ms` (each epoch's training
wall time over its steps, evaluation excluded) over every epoch but the first (which compiles), pooled over
`--rounds` interleaved rounds.

    python tools/bench_steps_per_call.py --loop --students mlp_tiny,cnn_small --losses ce,kd --k 4,16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from kd_jax import backends  # noqa: E402
from kd_jax import data as kd_data  # noqa: E402
from kd_jax import models  # noqa: E402
from kd_jax.config import base_config  # noqa: E402
from kd_jax.train import loop, sharding  # noqa: E402
from kd_jax.train.run import build_run, host_batch, init_state, make_step  # noqa: E402
from kd_jax.train.teachers import Teachers  # noqa: E402

LOSSES = {"ce": {"ce": {"weight": 1.0}}, "kd": {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}}


def _programs(student_name: str, loss: str, batch_size: int, k: int, dataset):
  """The one-step and the k-step programs of one set-up (`make_step` with 1 and k steps per call, as the
  loop builds them), their initial state and device-resident batches (one by one, and stacked)."""
  config = base_config()
  config.data.name = "digits"
  config.student.model = student_name
  config.batch_size = batch_size
  config.optim.schedule = "constant"
  config.loss = LOSSES[loss]
  teachers, teacher_variables = Teachers(), ()
  if loss == "kd":  # randomly initialised: speed depends on shapes, not trained values
    teacher = models.create_model("cnn_large", dataset.num_classes, kernels=backends.kernels_for(config))
    sample = kd_data.train_batch(dataset.train, batch_size, seed=config.seed, step=0)
    teachers = Teachers((teacher,), (1.0,))
    teacher_variables = (teacher.init(jax.random.PRNGKey(1), jnp.asarray(sample["image"][:1])),)
  run = build_run(config, dataset, teachers=(teachers, teacher_variables))
  state = init_state(run)
  one, several = make_step(run, state, 0), make_step(run, state, 0, per_call=k)
  rows = sharding.process_rows(batch_size, run.mesh)
  batches = [host_batch(run, 0, i, rows) for i in range(k)]
  device_batches = [sharding.shard_batch(b, run.mesh, global_batch_size=batch_size) for b in batches]
  stacked = sharding.shard_batches(batches, run.mesh, global_batch_size=batch_size)
  return one, several, state, device_batches, stacked, run.teacher_variables


def _config_for(args, student: str, loss: str, per_call: int, epochs: int, teacher_dir: str = ""):
  config = base_config()
  config.data.name = "digits"
  config.student.model = student
  config.batch_size, config.epochs, config.steps_per_call = args.batch, epochs, per_call
  config.optim.schedule, config.progress_bar = "constant", False
  config.log_every_steps = 50
  config.checkpoint_every_epochs = 10_000  # only the final save (perf/step_ms excludes saves anyway)
  config.loss = LOSSES[loss]
  if teacher_dir:
    config.teacher.workdir, config.teacher.model = teacher_dir, "cnn_large"
  return config


def _quietly(fn):
  """`fn` with its printed progress lines sent to stderr, so that stdout holds only the report (--json)."""
  def call(*args, **kwargs):
    with contextlib.redirect_stdout(sys.stderr):
      return fn(*args, **kwargs)
  return call


def _loop_rows(args, dataset) -> list:
  """Per-step cost of whole `train_and_evaluate` runs with steps_per_call 1 and each k (see the module doc)."""
  rows, runs = [], 0
  with tempfile.TemporaryDirectory(prefix="bench_steps_per_call_") as work:
    teacher_dir = os.path.join(work, "teacher")
    teacher_config = _config_for(args, "cnn_large", "ce", 1, 1)
    teacher_config.max_steps = 1
    run = _quietly(loop.train_and_evaluate)
    run(teacher_config, teacher_dir, dataset=dataset)
    for student in args.students.split(","):
      for loss in args.losses.split(","):
        variants = [1] + [int(v) for v in args.k.split(",")]
        step_ms = {k: [] for k in variants}
        for _ in range(args.rounds):
          for k in variants:
            runs += 1
            workdir = os.path.join(work, f"run{runs}")
            config = _config_for(args, student, loss, k, args.epochs, teacher_dir if loss == "kd" else "")
            run(config, workdir, dataset=dataset)
            with open(os.path.join(workdir, "metrics.jsonl")) as f:
              epochs = [json.loads(line) for line in f]
            step_ms[k].extend(e["perf/step_ms"] for e in epochs[1:])  # the first epoch compiles
        one = statistics.median(step_ms[1])
        for k in variants[1:]:
          ms = statistics.median(step_ms[k])
          rows.append({"student": student, "loss": loss, "k": k, "loop_one_step_ms": one,
                       "loop_k_ms_per_step": ms, "speedup": one / ms})
          print(f"{student} {loss} k={k}: loop {one:.3f} ms/step with 1 step per call, {ms:.3f} with {k}",
                file=sys.stderr, flush=True)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--students", default="mlp_tiny,mlp_small,cnn_small")
  parser.add_argument("--losses", default="ce,kd")
  parser.add_argument("--k", default="4,16", help="steps per call of the scanned program (comma-separated)")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--calls", type=int, default=5, help="timed calls of the k-step program per round")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--loop", action="store_true", help="time whole training runs (see the module doc)")
  parser.add_argument("--epochs", type=int, default=6, help="--loop: epochs per run (the first is not timed)")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)

  dataset = kd_data.load_dataset("digits")
  if args.loop:
    rows = _loop_rows(args, dataset)
    load = os.getloadavg()[0]
    report = {"mode": "loop", "batch": args.batch, "epochs": args.epochs, "rounds": args.rounds, "loadavg": load,
              "device": jax.devices()[0].device_kind, "jax_version": jax.__version__, "results": rows}
    if args.json:
      print(json.dumps(report, indent=2))
    else:
      print(f"whole digits runs, batch {args.batch}, epochs {args.epochs}, {report['device']}, median of "
            f"{args.rounds} rounds (load average {load:.1f})\n")
      print("| student | loss | k | 1 step per call, ms/step | k steps per call, ms/step | speed-up |")
      print("|---|---|---:|---:|---:|---:|")
      for r in rows:
        print(f"| {r['student']} | {r['loss']} | {r['k']} | {r['loop_one_step_ms']:.3f} | "
              f"{r['loop_k_ms_per_step']:.3f} | {r['speedup']:.2f}× |")
    return 0
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
