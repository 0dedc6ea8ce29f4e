"""Every convolution shape of some models, timed with XLA's CPU kernels and with oneDNN's, one by one.

Usage:
  python tools/conv_shapes.py --models resnet8x4,resnet32x4,vgg8,vgg13,mobilenetv2_half --batch 64
  python tools/conv_shapes.py --models mobilenetv2_half --rounds 5 --json

Why: `config.cpu_conv_kernels='auto'` picks one kernel family per run. A per-shape choice would pay only if
some shapes are reliably faster in the other family; this measures each shape a model has, in the form a
training step runs it, and how often the model runs it.

How: each model (CIFAR input, `--batch` images) is traced once in train mode with XLA's convolutions and
every `conv_general_dilated` in it is collected (input and kernel shapes, strides, padding, groups) with its
count. Each distinct shape is then compiled as two programs per kernel family, on random operands:
  fwd    the convolution alone (what a frozen teacher's forward runs);
  train  forward and both gradients (`jax.vjp` with a random output gradient: what a student step runs);
with `mode='auto'` and `cpu_conv_kernels='xla'` (XLA's kernels, kd_jax's blocked backward) against
`mode='auto-onednn'` (oneDNN's handlers), each under its run's compiler options. Timing: `--rounds` rounds,
each timing both families' programs alternately (xla, onednn) as the median of `--calls` calls, so drift
hits both alike; a shape's figure is the median over rounds and its ratio xla/onednn per round is listed
(> 1: oneDNN faster). Depthwise convolutions run kd_jax's own shifted multiply-adds in both families and are
listed but not timed. The model totals are Σ count × time, what the convolutions alone would cost per step.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import backends, models as kd_models
from kd_jax.backends.cpu import conv as kd_conv
from kd_jax.backends.cpu import onednn

FAMILIES = {"xla": ("auto", "xla"), "onednn": (kd_conv.AUTO_ONEDNN, "onednn")}

# (input shape, kernel shape, strides, padding pairs, feature groups)
Shape = Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...], Tuple[Tuple[int, int], ...], int]


def _sub_jaxprs(params: Dict[str, Any]):
  for value in params.values():
    for item in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def collect_convs(jaxpr: Any, found: collections.Counter) -> collections.Counter:
  """Counts the `conv_general_dilated` equations of `jaxpr` and its sub-jaxprs by `Shape`."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
      p = eqn.params
      found[(tuple(lhs), tuple(rhs), tuple(p["window_strides"]), tuple(map(tuple, p["padding"])),
             int(p["feature_group_count"]))] += 1
    for sub in _sub_jaxprs(eqn.params):
      collect_convs(sub, found)
  return found


def model_convs(name: str, batch: int, num_classes: int) -> collections.Counter:
  """The convolution shapes (with counts) of one train-mode forward pass of model `name` on CIFAR input."""
  model = kd_models.create_model(name, num_classes=num_classes, kernels=backends.Kernels("xla"))
  x = jnp.zeros((batch, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
  closed = jax.make_jaxpr(lambda v, x_: model.apply(v, x_, train=True, mutable=["batch_stats"]))(variables, x)
  return collect_convs(closed.jaxpr, collections.Counter())


def is_depthwise(shape: Shape) -> bool:
  lhs, rhs, _, _, groups = shape
  return groups > 1 and groups == lhs[-1] == rhs[-1] and rhs[2] == 1


def programs(shape: Shape, family: str) -> Dict[str, Callable[[], Any]]:
  """The compiled 'fwd' and 'train' programs of `shape` in `family`, each as a blocking call."""
  lhs, rhs, strides, pads, groups = shape
  mode, kernels = FAMILIES[family]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(lhs, np.float32))
  w = jnp.asarray(rng.standard_normal(rhs, np.float32) * np.sqrt(2.0 / np.prod(rhs[:3])))

  def conv(x_, w_):
    return kd_conv.conv_general_dilated(x_, w_, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=groups, mode=mode)

  dy = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, x, w).shape, np.float32))

  def train(x_, w_, dy_):
    y, pullback = jax.vjp(conv, x_, w_)
    return y, pullback(dy_)

  options = kd_conv.compiler_options(kernels, "cpu")
  fwd = jax.jit(conv).lower(x, w).compile(options)
  step = jax.jit(train).lower(x, w, dy).compile(options)
  return {"fwd": lambda: jax.block_until_ready(fwd(x, w)),
          "train": lambda: jax.block_until_ready(step(x, w, dy))}


def median_time(call: Callable[[], Any], calls: int) -> float:
  call()
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_shape(shape: Shape, rounds: int, calls: int) -> Dict[str, Any]:
  built = {family: programs(shape, family) for family in FAMILIES}
  row: Dict[str, Any] = {}
  for kind in ("fwd", "train"):
    per_round = {family: [] for family in FAMILIES}
    for _ in range(rounds):
      for family in FAMILIES:
        per_round[family].append(median_time(built[family][kind], calls))
    for family in FAMILIES:
      row[f"{kind}_{family}_s"] = statistics.median(per_round[family])
    row[f"{kind}_ratios"] = [a / b for a, b in zip(per_round["xla"], per_round["onednn"])]
  return row


def describe(shape: Shape) -> str:
  lhs, rhs, strides, pads, groups = shape
  text = f"{'x'.join(map(str, lhs))} * {rhs[0]}x{rhs[1]}x{rhs[2]}x{rhs[3]}"
  if strides != (1, 1):
    text += f" /{strides[0]}"
  if groups > 1:
    text += f" g{groups}"
  return text


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default="resnet8x4,resnet32x4,vgg8,vgg13,mobilenetv2_half",
                      help="comma-separated registered classification models")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--num-classes", type=int, default=100)
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per shape (default 3)")
  parser.add_argument("--calls", type=int, default=5, help="timed calls per round and program (default 5)")
  parser.add_argument("--json", action="store_true", help="one JSON object on stdout, the table on stderr")
  args = parser.parse_args(argv)
  args.models = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = [m for m in args.models if m not in kd_models.model_names()]
  if unknown:
    parser.error(f"unknown model(s) {unknown}; registered: {', '.join(kd_models.model_names())}")
  if jax.default_backend() != "cpu":
    parser.error(f"this compares CPU kernels; JAX's backend here is {jax.default_backend()}")
  problem = onednn.self_check()
  if problem is not None:
    parser.error(f"oneDNN is not usable here: {problem.splitlines()[0]} (pip install -e '.[cpu]')")
  return args


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  counts = {name: model_convs(name, args.batch, args.num_classes) for name in args.models}
  shapes = sorted({s for c in counts.values() for s in c}, key=lambda s: (s[0][1:], s[1], s[2], s[4]))
  rows = []
  for shape in shapes:
    row = {"shape": describe(shape), "depthwise": is_depthwise(shape),
           "counts": {name: counts[name][shape] for name in args.models if counts[name][shape]}}
    if not row["depthwise"]:
      row.update(time_shape(shape, args.rounds, args.calls))
    print(f"[conv_shapes] {row['shape']}: " + (
        "depthwise (the same form in both)" if row["depthwise"] else
        f"fwd xla/onednn {row['fwd_xla_s'] * 1e3:.2f}/{row['fwd_onednn_s'] * 1e3:.2f} ms, "
        f"train {row['train_xla_s'] * 1e3:.2f}/{row['train_onednn_s'] * 1e3:.2f} ms"), file=sys.stderr, flush=True)
    rows.append(row)
  lines = [f"batch {args.batch}, float32, oneDNN {onednn.describe()}, {args.rounds} rounds x {args.calls} calls, "
           f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", "",
           "| shape (NHWC * HWIO, /stride, groups) | used by (count) | fwd xla ms | fwd onednn ms | fwd ratios "
           "| train xla ms | train onednn ms | train ratios |", "|---|---|---:|---:|---|---:|---:|---|"]
  for row in rows:
    used = ", ".join(f"{m} {n}" for m, n in row["counts"].items())
    if row["depthwise"]:
      lines.append(f"| {row['shape']} | {used} | depthwise: kd_jax's own form in both | | | | | |")
      continue
    ratios = {k: " ".join(f"{r:.2f}" for r in row[f"{k}_ratios"]) for k in ("fwd", "train")}
    lines.append(f"| {row['shape']} | {used} | {row['fwd_xla_s'] * 1e3:.2f} | {row['fwd_onednn_s'] * 1e3:.2f} | "
                 f"{ratios['fwd']} | {row['train_xla_s'] * 1e3:.2f} | {row['train_onednn_s'] * 1e3:.2f} | "
                 f"{ratios['train']} |")
  lines += ["", "| model | fwd xla ms | fwd onednn ms | train xla ms | train onednn ms |", "|---|---:|---:|---:|---:|"]
  totals = {}
  for name in args.models:
    total = {key: sum(row.get(key, 0.0) * row["counts"].get(name, 0) for row in rows)
             for key in ("fwd_xla_s", "fwd_onednn_s", "train_xla_s", "train_onednn_s")}
    totals[name] = total
    lines.append(f"| {name} | " + " | ".join(f"{total[k] * 1e3:.1f}" for k in total) + " |")
  table = "\n".join(lines)
  if args.json:
    print(table, file=sys.stderr)
    print(json.dumps({"batch": args.batch, "rounds": args.rounds, "calls": args.calls, "shapes": rows,
                      "totals": totals}))
  else:
    print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
