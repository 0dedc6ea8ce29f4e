"""Speed benchmark of the distillation step: what a distiller costs over training the student alone.

Usage:
  python tools/bench.py --teacher resnet32x4 --student resnet8x4 --batch 64 --distillers kd --json
  python tools/bench.py --distillers kd,dkd,fitnet,crd        # a Markdown table on stdout
  python tools/bench.py --distillers all --steps 20            # every registered distiller
  python tools/bench.py --distillers kd --conv xla             # XLA's own convolution gradients (ablation)
  python tools/bench.py --distillers kd --profile /tmp/prof    # plus a jax.profiler trace of each program
  python tools/bench.py --task super_resolution                # EDSR-baseline → edsr_8x32, x2, 48×48 LR, batch 16
  python tools/bench.py --task super_resolution --distillers sr_output,lsfd --scale 4 --steps 20

For a teacher → student pair, batch size and dtype it measures, after compilation, the median wall time of
  (a) the student's train step with cross-entropy alone (the teacher is not run),
  (b) the teacher's forward pass alone (eval mode, as in the train step),
  (c) the distillation step, `ce + distiller` (weights `--ce-weight`, `--weight`, both 1 by default),
for every distiller asked for, and prints the distillation overhead `(c) / ((a) + (b))`, the compile
time (wall time of the first call), recompilations after the first call (must be 0), peak memory, and the
achieved FLOP/s (XLA's cost analysis of the compiled step over its median time) against the device's peak
where it is known (`--peak-tflops`, or the table `PEAK_TFLOPS` of NVIDIA spec-sheet figures).

(a) and (c) are the training loop's own step, built as `kd_jax.train.loop` builds it: a run of a config
(`kd_jax.config.base_config()` with the benchmark's student, dtype, batch, augmentation, seed and CPU
convolution kernels, and `ce` or `ce + distiller` as its loss) is built by `kd_jax.train.run.build_run`, with
the random teachers passed in (`teachers=`) and nothing stored on disk; its state comes from `init_state`
(initialised by the library, phase 0's optimizer, placed on the mesh) and its step from `make_step` (jitted
with the state's shardings, the state donated and the run's compiler options) on a `data` mesh of every
visible device. The run's training split is a pretend one of `--train-examples` examples
(`pretend_dataset`: steps per epoch, CRD's labels and bank size); every measured call gets the benchmark's
own batch, random normal images and random labels/indices placed on the devices once. The teacher's
variables are drawn on the host (`random_variables`; a speed benchmark needs shapes, not trained values).
Distillers that need a training-split pass (`Distiller.prepare`: Energy KD's and HE-DA's energy thresholds,
CRD's labels and bank size) are prepared on `TrainingData` made of random teacher logits and random labels
for `--train-examples` examples (50000, CIFAR's training split, by default), and the prepared constants go
into the config's loss (as a resumed run reads them back), so `build_run` never runs the teachers over the
pretend split. `ensemble_kd` runs with two teachers (the teacher model twice, initialised independently)
and `r2kd` with the teacher and its 10%-magnitude-pruned copy on batch statistics, as their experiment
configs do; their (b) is the forward pass of those teachers.
A distiller that does not fit the pair, or fails to build, compile or run, is reported as skipped with
the reason; the run goes on.

Super-resolution (`--task super_resolution`): the same three measurements for an SR pair, with the task's
supervised term (the distiller `supervised`, L1 to the HR patch) in place of CE: (a) the student step with
`supervised` alone, (b) the teacher's forward pass on the LR patches, (c) `supervised + distiller`
(`--ce-weight`, alias `--supervised-weight`, weighs the supervised term). Defaults become `--teacher
edsr_baseline --student edsr_8x32 --batch 16 --image-size 48 --scale 2` (the issue's EDSR-baseline → small
EDSR at 48×48 LR patches, batch 16) and `--distillers sr_output,fitnet,at,rkd,fakd,lsfd`, with SR
hyper-parameters where a distiller's default reads classification features (`TASK_HPARAMS`: FitNet's
conv regressor on the last block, AT, FAKD and LSFD on the last block of both; `--set` overrides them).
`--image-size` is the LR patch side (the HR patch is `--scale` times it) and the batch is already the patch
size: the config's `data.tile_size` is `--image-size`, `data.patch_size` 0 (no crop), `data.crop_pad` 0
(`--crop-pad` must stay 0), the flips and transposes of the SR task as `--flip`. The pretend split is an
`sr_dataset` of one random uint8 LR/HR pair whose single tile is repeated `--train-examples` times (a view,
as for classification); the batch holds random uint8-valued LR and HR patches in [0, 1]. `--num-classes`
is ignored. The report's baseline is `baselines["student_supervised"]` (classification:
`baselines["student_ce"]`).

Timing: the first call is compiled and run (its wall time up to `block_until_ready` is `compile_s`), then
`--warmup` untimed calls, then `--steps` timed calls, each followed by `block_until_ready` on the loss (or
the logits), nothing read back to the host; the batch is reused, so no host-to-device copy happens in the
loop either, which `jax.transfer_guard("disallow")` enforces. Compilations after the first call are
counted with a `jax.monitoring` listener on XLA backend compilations and with the jitted function's cache
size (`recompiles`, must be 0). Memory: `peak_rss_mb` is the process's peak resident set so far
(`getrusage`, so it only grows from one row to the next), `peak_device_mb` the devices' `peak_bytes_in_use`
where the backend reports it (also process-wide), `xla_temp_mb` the step's scratch memory per device
(the compiled executable's memory analysis, exact per row).

With `--json` the table goes to stderr and stdout holds exactly one JSON object: `device`, `devices`,
`platform`, `task`, `scale` (None for classification), `teacher`, `student`, `batch`, `image_shape` (the
LR patch for SR), `num_classes` (None for SR), `supervised_term` ('ce' or 'supervised'), `dtype`,
`conv_backward`, `steps`, `jax_version`,
`peak_tflops_per_device`, `peak_tflops_source`, `baselines` and `results`, a list with one entry per
distiller (`distiller`, `status` 'ok' or 'skipped', `reason`, `student_step_s`, `teacher_forward_s`,
`distill_step_s`, `overhead`, `compile_s`, `recompiles`, `peak_rss_mb`, ...; see docs/benchmarks.md).
Each measurement also records the process CPU time of its timed calls (`cpu_median_s`, `*_cpu_s`), a
steadier measure than wall time when other jobs share the CPU cores.
Timings from a shared or loaded machine are noise: report figures with the machine they came from.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from kd_jax import backends
from kd_jax import data as kd_data
from kd_jax import distillers as kd_distillers
from kd_jax import models as kd_models
from kd_jax import tasks as kd_tasks
from kd_jax.config import CHOICES, base_config
from kd_jax.data import super_resolution as sr_data
from kd_jax.errors import KDJaxError
from kd_jax.compression.pruning import prune_by_magnitude
from kd_jax.train import sharding
from kd_jax.train.run import Run, build_run, init_state, make_step
from kd_jax.train.teachers import Teachers

DTYPES = CHOICES["compute_dtype"]

# Dense (no structured sparsity) peak TFLOP/s per device, from NVIDIA's data sheets. The sheets print the
# tensor-core figures "with sparsity"; the dense figure is half of that. float32 runs are compared with the
# TF32 tensor-core peak, because JAX's default matmul/conv precision on these GPUs lets XLA use TF32 for
# float32 operands; with `jax_default_matmul_precision=highest` the plain FP32 (CUDA-core) peak applies.
#   H200 SXM (H200 data sheet, 2024): FP32 67; TF32 989 sparse → 494.5; BF16 1,979 sparse → 989.5.
#   H200 NVL (same sheet):           FP32 60; TF32 835 sparse → 417.5; BF16 1,671 sparse → 835.5.
#   H100 SXM (H100 data sheet):      FP32 67; TF32 989 sparse → 494.5; BF16 1,979 sparse → 989.5.
#   H100 NVL (same sheet):           FP32 60; TF32 835 sparse → 417.5; BF16 1,671 sparse → 835.5.
#   H100 PCIe (same sheet):          FP32 51; TF32 756 sparse → 378;   BF16 1,513 sparse → 756.5.
#   A100 SXM/PCIe (A100 data sheet): FP32 19.5; TF32 156 dense; BF16 312 dense.
# Matched in order against `device.device_kind` (e.g. "NVIDIA H100 80GB HBM3"); the first hit wins, so the
# more specific names come first. CPUs and anything else: unknown (None) unless `--peak-tflops` is given.
PEAK_TFLOPS: Tuple[Tuple[str, Dict[str, float]], ...] = (
    ("H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bfloat16": 835.5}),
    ("H200", {"fp32": 67.0, "tf32": 494.5, "bfloat16": 989.5}),
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bfloat16": 835.5}),
    ("H100 PCIe", {"fp32": 51.0, "tf32": 378.0, "bfloat16": 756.5}),
    ("H100", {"fp32": 67.0, "tf32": 494.5, "bfloat16": 989.5}),
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bfloat16": 312.0}),
)

# Distillers whose benchmark runs with more than the one plain teacher: name -> (what, teacher setup).
TEACHER_SETUPS = {
    "ensemble_kd": "two teachers (the teacher model twice, initialised independently), as with one "
                   "config.teacher.extra_workdirs entry",
    "r2kd": "the teacher and its 10% magnitude-pruned copy on batch statistics (config.teacher.pruned_copy_rate "
            "= 0.1, as experiments/digits_r2kd.py)",
}
TASKS = ("classification", "super_resolution")
# Per task: the supervised term of (a) and (c), and the defaults of the options left unset on the command line.
SUPERVISED_TERM = {"classification": "ce", "super_resolution": "supervised"}
TASK_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "classification": {"teacher": "resnet32x4", "student": "resnet8x4", "batch": 64, "image_size": 32,
                       "distillers": "all", "crop_pad": 4, "scale": None},
    # The issue's SR pair: EDSR-baseline → a small EDSR at 48×48 LR patches, batch 16, x2.
    "super_resolution": {"teacher": "edsr_baseline", "student": "edsr_8x32", "batch": 16, "image_size": 48,
                         "distillers": "sr_output,fitnet,at,rkd,fakd,lsfd", "crop_pad": 0, "scale": 2},
}
# Distiller hyper-parameters for the task where a default reads classification features (as the SR study's
# configs, `kd_jax.sr_study.SR_METHODS`, set them); `--set` overrides them.
TASK_HPARAMS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "classification": {},
    "super_resolution": {
        "fitnet": {"stage": -1, "teacher_stage": -1, "regressor": "conv"},
        "at": {"stages": (-1,)},
        "fakd": {"stages": (-1,), "teacher_stages": (-1,)},
        "lsfd": {"stages": (-1,), "teacher_stages": (-1,)},
    },
}
# Per task: distillers that are not measured as (c), and why.
SKIP_ALWAYS: Dict[str, Dict[str, str]] = {
    "classification": {"ce": "the cross-entropy baseline (a) itself"},
    "super_resolution": {"supervised": "the supervised (L1) baseline (a) itself",
                         "ce": "cross-entropy on class labels; an SR batch has none (its supervised term is "
                               "'supervised', the baseline (a))"},
}

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compilations = [0]


def _count_compilation(event: str, duration: float, **kwargs: Any) -> None:
  del duration, kwargs
  if event == _BACKEND_COMPILE_EVENT:
    _compilations[0] += 1


_listener_installed = [False]


def _install_compile_listener() -> None:
  """Counts every XLA backend compilation in this process (one listener, however often `run` is called)."""
  if not _listener_installed[0]:
    jax.monitoring.register_event_duration_secs_listener(_count_compilation)
    _listener_installed[0] = True


# ----------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", default="classification", choices=TASKS,
                      help="classification (default) or super_resolution; sets the defaults of --teacher, "
                           "--student, --batch, --image-size, --distillers, --crop-pad and --scale")
  parser.add_argument("--teacher", default=None,
                      help="registered model name (default resnet32x4; SR: edsr_baseline)")
  parser.add_argument("--student", default=None, help="registered model name (default resnet8x4; SR: edsr_8x32)")
  parser.add_argument("--batch", type=int, default=None,
                      help="global batch size, split over the devices (default 64; SR: 16)")
  parser.add_argument("--image-size", type=int, default=None,
                      help="square images of this side (default 32; SR: the LR patch side, 48)")
  parser.add_argument("--scale", type=int, default=None,
                      help="SR only: the upscaling factor, 2, 3 or 4 (default 2)")
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--num-classes", type=int, default=100, help="classes (classification only)")
  parser.add_argument("--train-examples", type=int, default=50000,
                      help="size of the pretend training split (CRD's bank, steps per epoch)")
  parser.add_argument("--dtype", default="float32",
                      help="float32, or bfloat16: the library's mixed precision (config.compute_dtype), "
                           "bf16 compute with float32 parameters")
  parser.add_argument("--conv", default="auto", choices=backends.CONV_BACKWARDS,
                      help="the models' convolution backward pass (config.conv_backward): auto (default: on CPU "
                           "the blocked backward, or the matmul one with --cpu-conv-kernels ynnpack; XLA's "
                           "gradients on GPUs/TPUs), xla, matmul, blocked")
  parser.add_argument("--cpu-conv-kernels", default="auto", choices=backends.CPU_CONV_KERNELS,
                      help="which kernels run CPU convolutions (config.cpu_conv_kernels): auto (the library's "
                           "default: oneDNN where it builds and passes its self-check, else xla), xla (XLA's own), "
                           "ynnpack (XLA's default in jax 0.10) or onednn (needs the cpu extra); ignored on "
                           "GPUs/TPUs. The report's cpu_conv_kernels is what ran, 'auto' resolved")
  parser.add_argument("--distillers", default=None,
                      help="comma-separated registered names, or 'all' (default; SR: "
                           f"{TASK_DEFAULTS['super_resolution']['distillers']})")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the compiling first call")
  parser.add_argument("--ce-weight", "--supervised-weight", dest="ce_weight", type=float, default=1.0,
                      help="weight of the supervised term in (c): CE, or SR's L1 `supervised`")
  parser.add_argument("--weight", type=float, default=1.0, help="weight of the distiller term in (c)")
  parser.add_argument("--set", action="append", default=[], metavar="NAME.KEY=VALUE",
                      help="a distiller hyper-parameter, e.g. --set kd.temperature=2 (repeatable)")
  parser.add_argument("--crop-pad", type=int, default=None,
                      help="random-crop padding inside the step (default 4, CIFAR's; SR: 0, the only value)")
  parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                      help="random horizontal flip inside the step (CIFAR: on; SR: the task's flips and "
                           "transposes of LR and HR)")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="peak TFLOP/s of one device for this dtype (overrides the built-in table)")
  parser.add_argument("--flops-source", default="auto", choices=("auto", "compiled", "lowered"),
                      help="which program XLA's FLOP estimate comes from: auto (the lowered one on GPUs, whose "
                           "compiled cost analysis misses cuDNN convolutions; the compiled one elsewhere)")
  parser.add_argument("--profile", default="", metavar="DIR",
                      help="also trace 3 more calls of every measured program with jax.profiler into DIR/<program> "
                           "(TensorBoard/XProf .xplane.pb and a Perfetto trace); untimed")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="one JSON object on stdout, the table on stderr")
  return with_task_defaults(parser.parse_args(argv))


def with_task_defaults(args: argparse.Namespace) -> argparse.Namespace:
  """`args` with every option left unset (None) given its task's default (`TASK_DEFAULTS`)."""
  for key, value in TASK_DEFAULTS[args.task].items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  return args


def _parse_value(text: str) -> Any:
  import ast
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _hparams(settings: Sequence[str]) -> Dict[str, Dict[str, Any]]:
  out: Dict[str, Dict[str, Any]] = {}
  for item in settings:
    key, sep, value = item.partition("=")
    name, dot, field = key.partition(".")
    if not sep or not dot or not name or not field:
      raise KDJaxError(f"--set {item!r} must look like NAME.KEY=VALUE, e.g. --set kd.temperature=2.")
    out.setdefault(name, {})[field] = _parse_value(value)
  return out


def distiller_hparams(args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
  """Each distiller's hyper-parameters: the task's (`TASK_HPARAMS`) updated by `--set`."""
  out = {name: dict(values) for name, values in TASK_HPARAMS[args.task].items()}
  for name, values in _hparams(args.set).items():
    out.setdefault(name, {}).update(values)
  return out


def _distiller_list(spec: str) -> List[str]:
  registered = kd_distillers.distiller_names()
  names = [n.strip() for n in spec.split(",") if n.strip()]
  if names == ["all"]:
    return registered
  if not names:
    raise KDJaxError(f"--distillers is empty. Registered distillers: {', '.join(registered)} (or 'all').")
  unknown = [n for n in names if n not in kd_distillers.DISTILLERS]
  if unknown:
    raise KDJaxError(f"Unknown distiller(s) {', '.join(map(repr, unknown))}. Registered distillers: "
                     f"{', '.join(registered)} (or 'all').")
  return list(dict.fromkeys(names))


def validate_args(args: argparse.Namespace) -> None:
  """Rejects bad arguments before anything is compiled, saying what to do instead."""
  if args.dtype not in DTYPES:
    raise KDJaxError(f"--dtype {args.dtype!r} is not one of {', '.join(DTYPES)}.")
  for name, value, low in (("--batch", args.batch, 1), ("--image-size", args.image_size, 1),
                           ("--channels", args.channels, 1), ("--num-classes", args.num_classes, 1),
                           ("--steps", args.steps, 1), ("--warmup", args.warmup, 0),
                           ("--crop-pad", args.crop_pad, 0)):
    if value < low:
      raise KDJaxError(f"{name} must be >= {low}, got {value}.")
  if args.task == "super_resolution":
    if args.scale not in (2, 3, 4):
      raise KDJaxError(f"--scale must be 2, 3 or 4 (the SR models' factors), got {args.scale}.")
    if args.crop_pad:
      raise KDJaxError(f"--crop-pad {args.crop_pad} pads classification images; an SR batch is already the "
                       "LR patch (--image-size): leave --crop-pad at 0.")
  elif args.scale is not None:
    raise KDJaxError("--scale is the SR upscaling factor: use it with --task super_resolution.")
  if args.train_examples < args.batch:
    raise KDJaxError(f"--train-examples ({args.train_examples}) must be at least --batch ({args.batch}).")
  if args.peak_tflops is not None and not args.peak_tflops > 0:
    raise KDJaxError(f"--peak-tflops must be > 0, got {args.peak_tflops}.")
  for model in (args.teacher, args.student):
    if model not in kd_models.MODELS:
      raise KDJaxError(f"Unknown model {model!r}. Registered models: {', '.join(kd_models.model_names())}.")
  names = _distiller_list(args.distillers)
  for name, values in _hparams(args.set).items():
    if name not in names:
      raise KDJaxError(f"--set names distiller {name!r}, which is not in --distillers ({', '.join(names)}).")
    valid = [f.name for f in dataclasses.fields(kd_distillers.DISTILLERS[name])]
    unknown = sorted(set(values) - set(valid))
    if unknown:
      raise KDJaxError(f"--set: distiller {name!r} has no hyper-parameter(s) {', '.join(unknown)}. "
                       f"Valid: {', '.join(valid) or '(none)'}.")


# ----------------------------------------------------------------------------------------------------------
# Measuring


@dataclasses.dataclass
class Timing:
  """One measured function: first-call wall time, timed calls, compilations after the first call."""

  compile_s: float
  times_s: List[float]
  recompiles: int
  donated_fraction: Optional[float] = None  # input-state leaves deleted by the first call (donation worked)
  donation_warnings: Tuple[str, ...] = ()
  cpu_times_s: List[float] = dataclasses.field(default_factory=list)  # process CPU time of each timed call

  @property
  def cpu_median_s(self) -> Optional[float]:
    return statistics.median(self.cpu_times_s) if self.cpu_times_s else None

  @property
  def median_s(self) -> float:
    return statistics.median(self.times_s)


def time_calls(call: Callable[[], jax.Array], jitted: Any, steps: int, warmup: int) -> Timing:
  """Times `call()` (which runs `jitted` once and returns a small array to wait on).

  The first call compiles; its wall time is `compile_s`. Then `warmup` untimed and `steps` timed calls,
  each waited on with `block_until_ready` (the only synchronisation; nothing is copied to the host, and the
  transfer guard would raise if anything were). `recompiles` counts backend compilations and jit-cache
  growth after the first call.
  """
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    start = time.perf_counter()
    jax.block_until_ready(call())
    compile_s = time.perf_counter() - start
  donation = tuple(str(w.message).splitlines()[0] for w in caught if "donat" in str(w.message).lower())
  for w in caught:  # the others are passed on
    if "donat" not in str(w.message).lower():
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  compilations, cache = _compilations[0], jitted._cache_size()
  times = []
  with jax.transfer_guard("disallow"):
    for _ in range(warmup):
      jax.block_until_ready(call())
    cpu_times = []
    for _ in range(steps):
      start, cpu_start = time.perf_counter(), time.process_time()
      out = call()
      out.block_until_ready()
      times.append(time.perf_counter() - start)
      cpu_times.append(time.process_time() - cpu_start)
  recompiles = max(_compilations[0] - compilations, jitted._cache_size() - cache)
  return Timing(compile_s, times, recompiles, donation_warnings=donation, cpu_times_s=cpu_times)


def cost(jitted: Any, *args: Any, source: str = "auto") -> Dict[str, Any]:
  """XLA's FLOP estimate of one call over all devices, where it came from, and one device's scratch memory.

  On CPUs and TPUs the estimate is the cost analysis of the compiled (optimised) program, so work XLA
  prunes (a teacher's unused tail) is not counted. On GPUs XLA runs convolutions as cuDNN custom calls,
  which the compiled program's analysis counts as zero FLOPs (a resnet8x4 step read 0.53 GFLOP there
  against 63 on the CPU), so there the estimate is that of the lowered, unoptimised program.
  `lower(...).compile()` after the jitted function has run reuses its executable (no new compilation).
  The cost analysis describes the per-device SPMD program, hence the factor `devices`. `source`
  ('compiled' or 'lowered') overrides the choice, e.g. to compute on a CPU the figure a GPU run reports.
  A program with kd_jax's oneDNN convolutions (custom calls, which XLA counts as zero) gets no figure.
  """
  lowered = jitted.lower(*args)
  compiled = lowered.compile()
  flops = temp_mb = None
  if source == "auto":
    source = "lowered" if jax.default_backend() == "gpu" else "compiled"
  try:
    temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2**20
  except Exception:
    pass
  if "kd_jax_onednn_conv" in compiled.as_text():
    # XLA's cost analysis counts a custom call as zero FLOPs: with --cpu-conv-kernels onednn it would
    # report the program without its convolutions, so no figure is given.
    return {"flops": None, "flops_source": "none: oneDNN custom calls are not in XLA's cost analysis",
            "xla_temp_mb": temp_mb}
  try:
    analysis = (lowered if source == "lowered" else compiled).cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0] if analysis else {}
    if analysis and analysis.get("flops", -1) >= 0:
      flops = float(analysis["flops"]) * jax.device_count()
  except Exception:  # some backends do not implement it
    pass
  return {"flops": flops, "flops_source": source if flops is not None else None, "xla_temp_mb": temp_mb}


def peak_rss_mb() -> float:
  """Peak resident set of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def peak_device_mb() -> Optional[float]:
  """The largest `peak_bytes_in_use` over the local devices, or None where the backend reports none."""
  peaks = []
  for device in jax.local_devices():
    try:
      stats = device.memory_stats()
    except Exception:
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(stats["peak_bytes_in_use"])
  return max(peaks) / 2**20 if peaks else None


def device_peak_tflops(dtype: str, override: Optional[float], kind: Optional[str] = None,
                       precision: Optional[str] = None) -> Tuple[Optional[float], str]:
  """Peak TFLOP/s of one device for `dtype` and where the number comes from.

  `kind` defaults to the first device's `device_kind`, `precision` to `jax_default_matmul_precision`.
  """
  if override is not None:
    return override, "--peak-tflops"
  kind = jax.devices()[0].device_kind if kind is None else kind
  if precision is None:
    precision = jax.config.jax_default_matmul_precision
  precision = str(precision or "default").lower()
  for pattern, peaks in PEAK_TFLOPS:
    if pattern.lower() in kind.lower():
      if dtype == "bfloat16":
        return peaks["bfloat16"], f"NVIDIA data sheet, {pattern} dense BF16"
      if precision in ("highest", "float32"):
        return peaks["fp32"], f"NVIDIA data sheet, {pattern} FP32 (matmul precision {precision})"
      return peaks["tf32"], f"NVIDIA data sheet, {pattern} dense TF32 (JAX default matmul precision)"
  return None, f"unknown for {kind!r}; pass --peak-tflops"


# ----------------------------------------------------------------------------------------------------------
# The benchmark


@dataclasses.dataclass
class Setup:
  """Everything shared by the measurements: the config and the training split each run is built from, the
  mesh, the teacher model and the device-resident batch."""

  args: argparse.Namespace
  config: Any                          # base_config() with the benchmark's settings; each run sets its loss
  dataset: kd_data.Dataset             # the pretend training split (`pretend_dataset`)
  mesh: Any
  teacher: Any
  batch: Dict[str, jax.Array]          # sharded over the mesh
  compiler_options: Optional[Dict[str, str]]  # every jitted program's, as the training loop passes them

  _teachers: Dict[str, Tuple[Teachers, Any]] = dataclasses.field(default_factory=dict)

  @property
  def inputs(self) -> jax.Array:
    """What the models read from the batch (the task's inputs: 'image', or SR's 'lr')."""
    return kd_tasks.get_task(self.config.task).inputs(self.batch)

  def teachers_for(self, name: str) -> Tuple[Teachers, Any]:
    """The teachers a distiller runs with and their (random, replicated) variables."""
    name = name if name in TEACHER_SETUPS else "single"
    if name not in self._teachers:
      self._teachers[name] = self._make_teachers(name)
    return self._teachers[name]

  def _make_teachers(self, name: str) -> Tuple[Teachers, Any]:
    image = jax.ShapeDtypeStruct((1,) + tuple(self.dataset.image_shape), np.float32)
    first = random_variables(self.teacher, image, self.args.seed + 1)
    if name == "ensemble_kd":
      second = random_variables(self.teacher, image, self.args.seed + 2)
      modules, variables, modes = (self.teacher,) * 2, (first, second), (False,) * 2
    elif name == "r2kd":
      modules, variables, modes = (self.teacher,) * 2, (first, prune_by_magnitude(first, 0.1)), (False, True)
    else:
      modules, variables, modes = (self.teacher,), (first,), (False,)
    teachers = Teachers(tuple(modules), (1.0,) * len(modules), tuple(modes))
    return teachers, sharding.replicate(tuple(variables), self.mesh)


def random_variables(module: Any, sample_images: Any, seed: int) -> Any:
  """Random variables of `module`'s shapes, drawn on the host (no init function to compile).

  Kernels are He-normal (std sqrt(2 / fan_in)), BatchNorm scales and running variances 1, biases and
  means 0, anything else N(0, 0.02²): activations stay O(1), so no overflow or denormals distort the timing.
  On CPU, compiling a model's `init` costs seconds to tens of seconds (one threefry per initialiser); the
  teacher has no optimizer state, so the benchmark skips that compilation. The student is initialised by
  the library's `kd_jax.train.run.init_state`, as a training run does. `sample_images` (an array or a
  `jax.ShapeDtypeStruct`) gives the input shape.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(functools.partial(module.init, train=False), jax.random.PRNGKey(0), sample_images)

  def draw(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "kernel":
      fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
      value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
    elif name in ("scale", "var"):
      value = np.ones(leaf.shape)
    elif name in ("bias", "mean"):
      value = np.zeros(leaf.shape)
    else:
      value = 0.02 * rng.standard_normal(leaf.shape)
    return value.astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def make_setup(args: argparse.Namespace) -> Setup:
  mesh = sharding.make_mesh()
  sharding.check_batch_size(args.batch, mesh, "--batch")
  batch_np = pretend_batch(args)
  config = bench_config(args)
  dataset = pretend_dataset(args, batch_np)
  # The teacher's kernels, as a training run builds its teachers (the students' come from build_run), and
  # its sizes from the task (classes, or the SR scale).
  task = kd_tasks.task_for(config, dataset)
  teacher = kd_models.create_model(args.teacher, dtype=args.dtype, kernels=backends.kernels_for(config),
                                   **task.model_kwargs(dataset))
  return Setup(args, config, dataset, mesh, teacher, sharding.shard_batch(batch_np, mesh),
               backends.compiler_options_for(config, mesh.devices.flat[0].platform))


def bench_config(args: argparse.Namespace) -> Any:
  """`base_config()` with the benchmark's task, student, dtype, kernels, batch, augmentation and seed. The
  default optimizer (SGD, momentum, weight decay, multistep schedule over config.epochs); each measured run
  sets config.loss (`build_run_for`). SR: the batch is already the patch (`data.tile_size` = --image-size,
  `data.patch_size` 0: no crop), flips and transposes as --flip, no crop padding."""
  config = base_config()
  config.task = args.task
  config.seed = args.seed  # the student's and the distillers' initialisation
  config.student.model = args.student
  config.compute_dtype = args.dtype  # compute in args.dtype, parameters in float32
  config.conv_backward, config.cpu_conv_kernels = args.conv, args.cpu_conv_kernels
  config.batch_size = config.eval_batch_size = args.batch
  config.data.crop_pad, config.data.flip = args.crop_pad, args.flip
  if args.task == "super_resolution":
    config.data.scale, config.data.tile_size, config.data.patch_size = args.scale, args.image_size, 0
  return config


def pretend_batch(args: argparse.Namespace) -> Dict[str, np.ndarray]:
  """The host copy of the batch every measured call gets. Classification: random normal images, random
  labels and indices. SR: random uint8 LR patches [B, s, s, C] and HR patches [B, s·scale, s·scale, C] in
  [0, 1], as `PatchPairs.get` gives them, and random indices."""
  rng = np.random.default_rng(args.seed)
  side, channels = args.image_size, args.channels
  if args.task == "super_resolution":
    hr_side = side * args.scale
    return {
        "lr": rng.integers(0, 256, (args.batch, side, side, channels), np.uint8).astype(np.float32) / 255.0,
        "hr": rng.integers(0, 256, (args.batch, hr_side, hr_side, channels), np.uint8).astype(np.float32) / 255.0,
        "index": rng.choice(args.train_examples, args.batch, replace=False).astype(np.int32),
    }
  return {
      "image": rng.standard_normal((args.batch, side, side, channels), np.float32),
      "label": rng.integers(0, args.num_classes, args.batch).astype(np.int32),
      "index": rng.choice(args.train_examples, args.batch, replace=False).astype(np.int32),
  }


def training_data(args: argparse.Namespace) -> kd_distillers.TrainingData:
  """Random stand-ins for the training split that `Distiller.prepare` reads (SR: no classes, labels 0, as a
  training run passes an SR split's)."""
  rng = np.random.default_rng(args.seed + 2)
  num_classes = args.num_classes if args.task == "classification" else 0
  if num_classes:
    labels = rng.integers(0, num_classes, args.train_examples).astype(np.int32)
  else:
    labels = np.zeros(args.train_examples, np.int32)
  logits = functools.lru_cache(None)(
      lambda: (3.0 * rng.standard_normal((args.train_examples, num_classes))).astype(np.float32))
  return kd_distillers.TrainingData(logits, labels, num_classes)


def pretend_dataset(args: argparse.Namespace, batch: Dict[str, np.ndarray]) -> kd_data.Dataset:
  """The training split the runs are built on: `--train-examples` examples. Its size sets the steps per
  epoch (the schedule, the distillers' epoch) and CRD's bank; its labels (`training_data`'s) are what CRD's
  `prepare` reads. Its images are never trained on (every measured call gets the benchmark `batch`), so
  every example is the batch's first: a broadcast view, which costs no memory (a CIFAR-sized array would
  add to the `peak_rss_mb` the benchmark reports). Validation and test splits are empty.

  SR: `kd_jax.data.super_resolution.sr_dataset` of one LR/HR pair (the batch's first patches as uint8,
  `tile` = --image-size, so it holds one tile), its training split's one tile then repeated
  `--train-examples` times (a broadcast view of the tile table); `task` 'super_resolution', `info['scale']`
  --scale."""
  if args.task == "super_resolution":
    to_uint8 = lambda x: np.round(x * 255.0).astype(np.uint8)
    dataset = sr_data.sr_dataset("random", [to_uint8(batch["lr"][0])], [to_uint8(batch["hr"][0])], [], [],
                                 scale=args.scale, tile=args.image_size, val_fraction=0.0, seed=args.seed)
    tiles = np.broadcast_to(dataset.train.tiles[:1], (args.train_examples, 3))
    return dataclasses.replace(dataset, train=dataclasses.replace(dataset.train, tiles=tiles))
  image = batch["image"][0]
  shape = tuple(int(d) for d in image.shape)
  mean, std = np.zeros(shape[-1], np.float32), np.ones(shape[-1], np.float32)
  empty = kd_data.Split(np.zeros((0,) + shape, np.float32), np.zeros((0,), np.int32), mean, std)
  train = kd_data.Split(np.broadcast_to(image.astype(np.float32), (args.train_examples,) + shape),
                        training_data(args).labels, mean, std)
  return kd_data.Dataset(name="random", train=train, val=empty, test=empty, num_classes=args.num_classes,
                         image_shape=shape)


def prepared_terms(setup: Setup, terms: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
  """`terms` (a config's `loss` section) with the constants each term's `prepare` fills from the training
  split, computed on `training_data` (random teacher logits, the pretend split's labels). In the config they
  are what a resumed run reads back, so `build_run` does not pass the teachers over the pretend split."""
  distiller = kd_distillers.from_config(terms)
  fields = distiller.prepared_fields(distiller.prepare(training_data(setup.args)))
  return {name: dict(spec, **fields.get(name, {})) for name, spec in terms.items()}


def build_run_for(setup: Setup, terms: Dict[str, Dict[str, Any]], teachers: Teachers,
                  teacher_variables: Any) -> Run:
  """`kd_jax.train.run.build_run` of the benchmark's config with loss `terms`, the given (random) teachers,
  the pretend split and the benchmark's mesh; nothing is stored on disk."""
  config = copy.deepcopy(setup.config)
  config.loss = prepared_terms(setup, terms)
  return build_run(config, setup.dataset, None, teachers=(teachers, teacher_variables), mesh=setup.mesh)


def profile_calls(call: Callable[[], jax.Array], directory: str, label: str, calls: int = 3) -> None:
  """`calls` more calls of an already compiled program under `jax.profiler.trace` into `directory/label`
  (nothing when `directory` is empty): where a step's time goes, kernel by kernel, after the timing."""
  if not directory:
    return
  with jax.profiler.trace(os.path.join(directory, label), create_perfetto_trace=True):
    for _ in range(calls):
      call().block_until_ready()


def build_step(setup: Setup, terms: Dict[str, Dict[str, Any]], teachers: Teachers,
               teacher_variables: Any) -> Tuple[Any, Callable[[], jax.Array], Dict[str, Any]]:
  """The training loop's step for the loss `terms`: `make_step` of the run `build_run_for` builds, on the
  run's initial state (`init_state`: initialised, with phase 0's optimizer, placed on the mesh).

  Returns the jitted function, `call()` (one step on the benchmark batch, returning the loss to wait on;
  the first call traces and compiles) and `{"state": ..., "teacher_variables": ...}`: the state the next
  call starts from and the teachers' variables as the run placed them.
  """
  run = build_run_for(setup, terms, teachers, teacher_variables)
  state = init_state(run)
  step_fn = make_step(run, state, 0)
  holder = {"state": state, "teacher_variables": run.teacher_variables}

  def call():
    holder["state"], metrics = step_fn(holder["state"], setup.batch, run.teacher_variables)
    return metrics["loss"]

  return step_fn, call, holder


def measure_step(setup: Setup, terms: Dict[str, Dict[str, Any]], teachers: Teachers,
                 teacher_variables: Any, label: str = "step") -> Tuple[Timing, Dict[str, Optional[float]]]:
  """The training loop's step for the loss `terms` (`build_step`), timed."""
  args = setup.args
  step_fn, call, holder = build_step(setup, terms, teachers, teacher_variables)
  first_inputs = jax.tree.leaves(holder["state"])
  timing = time_calls(call, step_fn, args.steps, args.warmup)
  timing.donated_fraction = sum(x.is_deleted() for x in first_inputs) / max(len(first_inputs), 1)
  profile_calls(call, args.profile, label)
  costs = cost(step_fn, holder["state"], setup.batch, holder["teacher_variables"], source=args.flops_source)
  return timing, costs


def measure_teacher_forward(setup: Setup, teachers: Teachers, teacher_variables: Any,
                            label: str = "teacher_forward") -> Tuple[Timing, Dict[str, Optional[float]]]:
  """The teachers' forward pass as the train step runs it (`Teachers.__call__`) on the task's inputs,
  returning their predictions (logits, or SR images)."""
  def forward(variables, images):
    out = teachers(variables, images)
    return tuple(o.prediction for o in (out if isinstance(out, tuple) else (out,)))

  fn = jax.jit(forward, compiler_options=setup.compiler_options)
  images = setup.inputs
  timing = time_calls(lambda: fn(teacher_variables, images)[0], fn, setup.args.steps, setup.args.warmup)
  profile_calls(lambda: fn(teacher_variables, images)[0], setup.args.profile, label)
  return timing, cost(fn, teacher_variables, images, source=setup.args.flops_source)


def _reason(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"[:400]


def _row_common(timing: Timing, costs: Dict[str, Optional[float]], peak: Optional[float], devices: int,
                batch: int) -> Dict[str, Any]:
  median = timing.median_s
  flops = costs["flops"]
  achieved = flops / median / 1e12 if flops is not None and median > 0 else None
  return {"median_s": median, "cpu_median_s": timing.cpu_median_s, "images_per_s": batch / median,
          "compile_s": timing.compile_s,
          "recompiles": timing.recompiles, "times_s": timing.times_s, "flops_per_step": flops,
          "flops_source": costs.get("flops_source"), "achieved_tflops": achieved,
          "peak_fraction": achieved / (peak * devices) if achieved is not None and peak else None,
          "xla_temp_mb": costs["xla_temp_mb"]}


RESULT_KEYS = ("distiller", "status", "reason", "teacher_setup", "student_step_s", "teacher_forward_s",
               "distill_step_s", "overhead", "student_images_per_s", "teacher_images_per_s",
               "distill_images_per_s", "compile_s", "recompiles", "donated_fraction", "peak_rss_mb",
               "peak_device_mb", "xla_temp_mb", "flops_per_step", "flops_source", "achieved_tflops",
               "peak_fraction", "distill_times_s", "student_cpu_s", "teacher_cpu_s", "distill_cpu_s")


def _skipped(name: str, reason: str) -> Dict[str, Any]:
  row = {k: None for k in RESULT_KEYS}
  row.update(distiller=name, status="skipped", reason=reason,
             teacher_setup=TEACHER_SETUPS.get(name, "one teacher"))
  return row


def _log(message: str) -> None:
  print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> Dict[str, Any]:
  """The whole benchmark; returns the JSON report. Bad arguments raise `KDJaxError` before any work."""
  validate_args(args)
  return _run(args)


def _run(args: argparse.Namespace) -> Dict[str, Any]:
  names = _distiller_list(args.distillers)
  hparams = distiller_hparams(args)
  supervised = SUPERVISED_TERM[args.task]  # the term of (a), and (c)'s first term
  baseline_key = f"student_{supervised}"
  skip = SKIP_ALWAYS[args.task]
  _install_compile_listener()
  setup = make_setup(args)
  devices = jax.device_count()
  peak, peak_source = device_peak_tflops(args.dtype, args.peak_tflops)
  device0 = jax.devices()[0]
  report: Dict[str, Any] = {
      "device": device0.device_kind, "devices": devices, "platform": device0.platform,
      "host": platform.node(), "task": args.task, "scale": args.scale, "teacher": args.teacher,
      "student": args.student, "batch": args.batch, "image_shape": [args.image_size, args.image_size, args.channels],
      "num_classes": args.num_classes if args.task == "classification" else None, "supervised_term": supervised,
      "train_examples": args.train_examples, "dtype": args.dtype, "conv_backward": args.conv,
      "cpu_conv_kernels": backends.cpu_conv_kernels_for(bench_config(args), device0.platform)[0],
      "cpu_conv_kernels_asked": args.cpu_conv_kernels, "compiler_options": setup.compiler_options,
      "steps": args.steps, "warmup": args.warmup,
      "crop_pad": args.crop_pad, "flip": args.flip, "weights": {supervised: args.ce_weight, "distiller": args.weight},
      "jax_version": jax.__version__, "backend_version": _backend_version(),
      "peak_tflops_per_device": peak, "peak_tflops_source": peak_source, "baselines": {}, "results": []}

  _log(f"{args.teacher} -> {args.student}, {_task_words(report)}batch {args.batch}, {devices} {device0.platform} "
       f"device(s) ({device0.device_kind}); (a) student with {supervised} alone")
  student_timing, student_costs = measure_step(setup, {supervised: {"weight": 1.0}}, Teachers(), (),
                                               label=baseline_key)
  if student_timing.recompiles:
    _log(f"warning: the {supervised}-only step recompiled {student_timing.recompiles} time(s) after its first call")
  report["baselines"][baseline_key] = dict(
      _row_common(student_timing, student_costs, peak, devices, args.batch),
      donated_fraction=student_timing.donated_fraction, donation_warnings=list(student_timing.donation_warnings))
  jax.clear_caches()

  teacher_cache: Dict[str, Dict[str, Any]] = {}
  for name in names:
    if name in skip:
      report["results"].append(_skipped(name, skip[name]))
      continue
    setup_key = name if name in TEACHER_SETUPS else "single"
    try:
      teachers, teacher_variables = setup.teachers_for(name)
      if setup_key not in teacher_cache:
        _log(f"(b) teacher forward ({TEACHER_SETUPS.get(name, 'one teacher')})")
        t_timing, t_costs = measure_teacher_forward(setup, teachers, teacher_variables,
                                                    label=f"teacher_forward_{setup_key}")
        teacher_cache[setup_key] = _row_common(t_timing, t_costs, peak, devices, args.batch)
        report["baselines"][f"teacher_forward/{setup_key}"] = teacher_cache[setup_key]
      teacher_row = teacher_cache[setup_key]
      _log(f"(c) {supervised} + {name}")
      terms = {supervised: {"weight": args.ce_weight}, name: {"weight": args.weight, **hparams.get(name, {})}}
      timing, costs = measure_step(setup, terms, teachers, teacher_variables, label=name)
    except Exception as e:  # a distiller that does not fit: report it, measure the others
      _log(f"{name}: skipped ({_reason(e)})")
      report["results"].append(_skipped(name, _reason(e)))
      jax.clear_caches()
      continue
    common = _row_common(timing, costs, peak, devices, args.batch)
    a, b, c = student_timing.median_s, teacher_row["median_s"], common["median_s"]
    row = {k: None for k in RESULT_KEYS}
    row.update(
        distiller=name, status="ok", reason=None, teacher_setup=TEACHER_SETUPS.get(name, "one teacher"),
        student_step_s=a, teacher_forward_s=b, distill_step_s=c, overhead=c / (a + b),
        student_images_per_s=args.batch / a, teacher_images_per_s=args.batch / b,
        distill_images_per_s=common["images_per_s"], compile_s=common["compile_s"],
        recompiles=common["recompiles"], donated_fraction=timing.donated_fraction,
        peak_rss_mb=peak_rss_mb(), peak_device_mb=peak_device_mb(), xla_temp_mb=common["xla_temp_mb"],
        flops_per_step=common["flops_per_step"], flops_source=common["flops_source"],
        achieved_tflops=common["achieved_tflops"], peak_fraction=common["peak_fraction"], distill_times_s=common["times_s"],
        student_cpu_s=student_timing.cpu_median_s, teacher_cpu_s=teacher_row["cpu_median_s"],
        distill_cpu_s=common["cpu_median_s"])
    if timing.donation_warnings:
      row["donation_warnings"] = list(timing.donation_warnings)
    if timing.recompiles:
      _log(f"warning: {supervised} + {name} recompiled {timing.recompiles} time(s) after its first call")
    report["results"].append(row)
    jax.clear_caches()
  report["peak_rss_mb"] = peak_rss_mb()
  report["peak_device_mb"] = peak_device_mb()
  return report


def _backend_version() -> Optional[str]:
  try:
    return str(jax.devices()[0].client.platform_version)
  except Exception:
    return None


# ----------------------------------------------------------------------------------------------------------
# Output


def _fmt(value: Optional[float], spec: str, scale: float = 1.0) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "—"
  return format(value * scale, spec)


def _task_words(report: Dict[str, Any]) -> str:
  """'' for classification (its header is unchanged); SR: the factor and the LR → HR patch sides."""
  if report.get("task", "classification") == "classification":
    return ""
  side, scale = report["image_shape"][0], report["scale"]
  return f"super-resolution ×{scale} ({side}×{side} LR → {side * scale}×{side * scale} HR patches), "


def format_table(report: Dict[str, Any]) -> str:
  """The report as Markdown: a header line, the baselines, one row per distiller."""
  lines = [f"{report['teacher']} → {report['student']}, {_task_words(report)}batch {report['batch']}, "
           f"{'×'.join(map(str, report['image_shape']))}, {report['dtype']}, conv backward "
           f"{report.get('conv_backward', 'auto')}, CPU conv kernels {report.get('cpu_conv_kernels', 'ynnpack')}, "
           f"{report['devices']} × "
           f"{report['device']} ({report['platform']}), jax {report['jax_version']}, median of "
           f"{report['steps']} steps. Peak: {_fmt(report['peak_tflops_per_device'], '.1f')} TFLOP/s per "
           f"device ({report['peak_tflops_source']}).", "",
           "| baseline | median ms | images/s | compile s | recompiles | GFLOP/step | TFLOP/s |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  baseline_labels = {"student_ce": "(a) student, CE alone", "student_supervised": "(a) student, supervised (L1) alone"}
  for key, row in report["baselines"].items():
    label = baseline_labels.get(key, f"(b) {key.replace('/', ', ')}")
    lines.append(f"| {label} | {_fmt(row['median_s'], '.2f', 1e3)} | {_fmt(row['images_per_s'], '.0f')} | "
                 f"{_fmt(row['compile_s'], '.1f')} | {row['recompiles']} | "
                 f"{_fmt(row['flops_per_step'], '.3g', 1e-9)} | {_fmt(row['achieved_tflops'], '.3g')} |")
  lines += ["",
            "| distiller | (a) student ms | (b) teacher ms | (c) distill ms | (c) images/s "
            "| overhead (c)/((a)+(b)) | compile s | recompiles | peak RSS MB | peak device MB | XLA temp MB "
            "| GFLOP/step | TFLOP/s | % of peak |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for row in report["results"]:
    if row["status"] != "ok":
      lines.append(f"| {row['distiller']} | skipped: {row['reason'].replace('|', '/')} |" + " |" * 12)
      continue
    lines.append(
        f"| {row['distiller']} | {_fmt(row['student_step_s'], '.2f', 1e3)} | "
        f"{_fmt(row['teacher_forward_s'], '.2f', 1e3)} | {_fmt(row['distill_step_s'], '.2f', 1e3)} | "
        f"{_fmt(row['distill_images_per_s'], '.0f')} | {_fmt(row['overhead'], '.2f')} | "
        f"{_fmt(row['compile_s'], '.1f')} | {row['recompiles']} | {_fmt(row['peak_rss_mb'], '.0f')} | "
        f"{_fmt(row['peak_device_mb'], '.0f')} | {_fmt(row['xla_temp_mb'], '.1f')} | "
        f"{_fmt(row['flops_per_step'], '.3g', 1e-9)} | {_fmt(row['achieved_tflops'], '.3g')} | "
        f"{_fmt(row['peak_fraction'], '.1f', 100)} |")
  notes = sorted({(r["distiller"], r["teacher_setup"]) for r in report["results"]
                  if r["distiller"] in TEACHER_SETUPS and r["status"] == "ok"})
  if notes:
    lines += [""] + [f"{name}: {what}." for name, what in notes]
  return "\n".join(lines)


def _finite(tree: Any) -> Any:
  """The report with non-finite floats as None (JSON has no NaN)."""
  if isinstance(tree, dict):
    return {k: _finite(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_finite(v) for v in tree]
  if isinstance(tree, float) and not math.isfinite(tree):
    return None
  return tree


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  try:
    report = run(args)
  except KDJaxError as e:
    print(f"bench.py: error: {e}", file=sys.stderr)
    return 2
  table = format_table(report)
  if args.json:
    print(table, file=sys.stderr)
    print(json.dumps(_finite(report), allow_nan=False))
  else:
    print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
