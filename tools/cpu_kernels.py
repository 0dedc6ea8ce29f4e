"""How fast this machine's kernels run one matmul and one 3x3 convolution: XLA (both CPU kernel settings), oneDNN, NumPy, PyTorch.

Usage:
  python tools/cpu_kernels.py                 # a Markdown table
  python tools/cpu_kernels.py --json

Why: the KD step's time on CPU is nearly all convolutions, so the question "how close to the machine's
limit is kd_jax?" is answered kernel by kernel. Measured, each as the median wall time of `--calls` calls
after one warm-up (GFLOP/s = 2 x multiply-adds / time):
  - a float32 `n x n` matmul (default 2048): `jnp.dot` under jit, NumPy's `@`, and `torch.mm` when PyTorch
    is installed (it is not a dependency; `pip install torch` for that column);
  - a 3x3, stride-1, SAME convolution, NHWC, float32, for each `--conv BATCHxSIZExCHANNELS` (default the
    three stages of resnet8x4/resnet32x4 at batch 64): XLA with `config.cpu_conv_kernels='xla'` (kd_jax's
    default, `kd_jax.backends.cpu.conv.compiler_options`) and 'ynnpack' (XLA's default), with their process
    CPU time (CPU > wall means several cores worked), kd_jax's oneDNN custom call ('onednn',
    `kd_jax.backends.cpu.onednn`) where it can be built here, and PyTorch's `conv2d` in channels-last (oneDNN)
    when installed. The two XLA settings' outputs are compared (relative max difference), and oneDNN's
    with XLA's.
Timings on a shared machine are noise: report them with the load average this prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kd_jax.backends.cpu import conv as kd_conv
from kd_jax.backends.cpu import onednn

_XLA_SETTINGS = ("xla", "ynnpack")


def _timed(call: Callable[[], Any], calls: int) -> Dict[str, float]:
  """Median wall and process-CPU seconds of `calls` calls of `call` (which blocks), after one warm-up."""
  call()
  wall, cpu = [], []
  for _ in range(calls):
    start, cpu_start = time.perf_counter(), time.process_time()
    call()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - cpu_start)
  return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def _torch():
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count() or 1)
  return torch


def matmul_rows(n: int, calls: int) -> List[Dict[str, Any]]:
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
  flops = 2.0 * n ** 3
  dot = jax.jit(jnp.dot)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  rows = [("jnp.dot (XLA)", lambda: dot(ja, jb).block_until_ready()), ("numpy @", lambda: a @ b)]
  torch = _torch()
  if torch is not None:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    rows.append((f"torch.mm ({torch.__version__})", lambda: torch.mm(ta, tb)))
  out = []
  for name, call in rows:
    t = _timed(call, calls)
    out.append({"op": f"matmul {n}x{n}", "impl": name, **t, "gflops": flops / t["wall_s"] / 1e9})
  return out


def conv_rows(batch: int, size: int, channels: int, calls: int) -> List[Dict[str, Any]]:
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, size, size, channels), np.float32)
  w = (rng.standard_normal((3, 3, channels, channels)) * np.sqrt(2.0 / (9 * channels))).astype(np.float32)
  flops = 2.0 * batch * size * size * channels * channels * 9
  op = f"conv3x3 {batch}x{size}x{size}x{channels}"

  def conv(x_, w_):
    return lax.conv_general_dilated(x_, w_, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  jx, jw = jnp.asarray(x), jnp.asarray(w)
  out, values = [], {}
  for kernels in _XLA_SETTINGS:
    compiled = jax.jit(conv).lower(jx, jw).compile(kd_conv.compiler_options(kernels, "cpu"))
    values[kernels] = np.asarray(compiled(jx, jw))
    t = _timed(lambda: compiled(jx, jw).block_until_ready(), calls)
    out.append({"op": op, "impl": f"XLA, cpu_conv_kernels={kernels}", **t, "gflops": flops / t["wall_s"] / 1e9})
  first, second = (values[k] for k in _XLA_SETTINGS)
  difference = float(np.max(np.abs(first - second)) / np.max(np.abs(second)))
  for row in out:
    row["relative_difference_between_xla_settings"] = difference
  if onednn.available():
    version = onednn.ensure_available()
    compiled = jax.jit(lambda x_, w_: onednn.conv(x_, w_, (1, 1), ((1, 1), (1, 1)))).lower(jx, jw).compile(
        kd_conv.compiler_options("onednn", "cpu"))
    got = np.asarray(compiled(jx, jw))
    t = _timed(lambda: compiled(jx, jw).block_until_ready(), calls)
    out.append({"op": op, "impl": f"oneDNN {version}, cpu_conv_kernels=onednn", **t,
                "gflops": flops / t["wall_s"] / 1e9,
                "relative_difference_to_xla": float(np.max(np.abs(got - first)) / np.max(np.abs(first)))})
  torch = _torch()
  if torch is not None:
    tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    tw = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
      t = _timed(lambda: torch.nn.functional.conv2d(tx, tw, padding=1), calls)
    out.append({"op": op, "impl": f"torch conv2d, channels-last ({torch.__version__})", **t,
                "gflops": flops / t["wall_s"] / 1e9})
  return out


def _shape(text: str) -> List[int]:
  parts = text.lower().split("x")
  if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise argparse.ArgumentTypeError(f"--conv takes BATCHxSIZExCHANNELS with positive integers, got {text!r}; "
                                     "e.g. 64x32x64 (batch 64, 32x32 images, 64 channels)")
  return [int(p) for p in parts]


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--matmul", type=int, default=2048, help="matmul side (0 skips it)")
  parser.add_argument("--conv", type=_shape, action="append", default=[], metavar="BATCHxSIZExCHANNELS",
                      help="a 3x3 convolution to time (repeatable; default 64x32x64, 64x16x128, 64x8x256)")
  parser.add_argument("--calls", type=int, default=10)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  if args.calls < 1:
    parser.error(f"--calls must be >= 1, got {args.calls}")
  load = os.getloadavg()
  rows = matmul_rows(args.matmul, args.calls) if args.matmul > 0 else []
  for batch, size, channels in args.conv or [[64, 32, 64], [64, 16, 128], [64, 8, 256]]:
    rows += conv_rows(batch, size, channels, args.calls)
  report = {"device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(), "jax_version": jax.__version__,
            "loadavg_before": list(load), "loadavg_after": list(os.getloadavg()), "calls": args.calls,
            "rows": rows}
  if args.json:
    print(json.dumps(report, indent=2))
    return 0
  print(f"{report['cpu_count']} CPU cores, jax {report['jax_version']}, median of {args.calls} calls, load "
        f"average {load[0]:.2f} before, {report['loadavg_after'][0]:.2f} after\n")
  print("| op | implementation | wall ms | CPU ms | GFLOP/s |")
  print("|---|---|---:|---:|---:|")
  for r in rows:
    print(f"| {r['op']} | {r['impl']} | {r['wall_s'] * 1e3:.1f} | {r['cpu_s'] * 1e3:.1f} | {r['gflops']:.0f} |")
  differences = {r["op"]: r["relative_difference_between_xla_settings"] for r in rows
                 if "relative_difference_between_xla_settings" in r}
  for op, d in differences.items():
    print(f"\n{op}: XLA's two kernel settings differ by {d:.1e} (max |diff| / max |value|)", end="")
  for r in rows:
    if "relative_difference_to_xla" in r:
      print(f"\n{r['op']}: oneDNN differs from XLA's kernels by {r['relative_difference_to_xla']:.1e}", end="")
  print()
  return 0


if __name__ == "__main__":
  sys.exit(main())
