"""PyTorch eager reference for `tools/bench.py`: the same KD step, timed the same way, on the same machine.

Usage (torch is not a kd_jax dependency; on the project's CPU machine install the CPU wheel with
`pip install torch==2.13.0`):
  python tools/bench_torch.py --teacher resnet32x4 --student resnet8x4 --batch 64 --steps 10
  python tools/bench_torch.py --json          # one JSON object on stdout
  python tools/bench_torch.py --device cuda --dtype bfloat16 --channels-last   # a GPU, bf16 autocast, NHWC
  python tools/bench_torch.py --compile       # torch.compile (inductor) of each of the three programs
  python tools/bench_torch.py --teacher imagenet_resnet34 --student imagenet_resnet18 --image-size 224 \
      --num-classes 1000 --batch 128 --device cuda --dtype bfloat16 --channels-last --compile

The models are written here from the CIFAR ResNet description in kd_jax/models/resnet_cifar.py (stem 3x3
conv-BN-ReLU, three stages of BasicBlocks with a 1x1-conv-BN projection shortcut where the shape changes,
global average pool, linear head); `--check-params` (on by default) compares their parameter counts with
kd_jax's (resnet8x4 1,233,540 and resnet32x4 7,433,860 on CIFAR-100).

Measured, each as the median of `--steps` timed calls after `--warmup` untimed ones, on one random batch
(normal images, uniform labels) reused for every call:
  (a) student step with cross-entropy alone: forward (train mode), backward, SGD step;
  (b) teacher forward: eval mode under `torch.no_grad()`, logits only;
  (c) KD step: teacher forward as (b), student forward/backward on `ce_weight·CE + weight·T²·KL(p_t^T‖p_s^T)`
      (Hinton et al. 2015, arXiv:1503.02531; T = 4, batch-mean reduction, as kd_jax's `kd`), SGD step.
The optimizer is kd_jax's default: SGD, lr 0.05, momentum 0.9, weight decay 5e-4 added to the gradient.
On a GPU (`--device cuda`) every timed call ends with `torch.cuda.synchronize()`; cuDNN's autotuner
(`torch.backends.cudnn.benchmark`) is on and PyTorch's default TF32 setting for convolutions is kept (XLA's
default precision also uses TF32 for float32 convolutions on such GPUs). `--dtype bfloat16` runs the
forward passes under `torch.autocast` (parameters, gradients and the optimizer stay float32; the KD loss is
computed in float32), the counterpart of kd_jax's `config.dtype = 'bfloat16'`.
`--compile` wraps each program in `torch.compile` (TorchInductor, default mode; on CPU it needs a C++ compiler):
(a) and (c) compile the whole step (forward, backward and the SGD update, `optimizer.step` included), (b) the
teacher's forward. The compile time (`*_compile_s`: the first call, which traces and compiles, minus one
steady-state call) is reported apart from the steady-state median, and no recompilation is expected after it.
FLOPs per call come from `torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions, forward
and backward, counted on the eager model); achieved TFLOP/s = FLOPs / median time, and `mfu` = that over the
device's dense peak from tools/bench.py's `PEAK_TFLOPS` table (or `--peak-tflops`), TF32 peak for float32.
The ImageNet models `imagenet_resnet18/34/50` are torchvision's ResNets (7×7/2 stem, max pool, four stages;
parameter counts checked against kd_jax's), written here so that torchvision is not needed.
No data augmentation is timed (kd_jax's bench does its crop and flip inside the step; they are a small
elementwise cost, `--crop-pad 0 --no-flip` there removes them).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

try:
  import torch
  import torch.nn.functional as F
  from torch import nn
except ImportError:  # a tool, not a dependency
  sys.exit("bench_torch.py needs PyTorch: pip install torch==2.13.0 (the CPU wheel on the project machine).")

# name -> (blocks per stage, stem width, stage widths), as kd_jax.models.resnet_cifar's registry.
ARCHS: Dict[str, Tuple[int, int, Tuple[int, int, int]]] = {
    "resnet8": (1, 16, (16, 32, 64)), "resnet20": (3, 16, (16, 32, 64)), "resnet32": (5, 16, (16, 32, 64)),
    "resnet56": (9, 16, (16, 32, 64)), "resnet8x4": (1, 32, (64, 128, 256)),
    "resnet32x4": (5, 32, (64, 128, 256)),
}
# ImageNet ResNets (torchvision's layout): name -> (block kind, blocks per stage).
IMAGENET_ARCHS: Dict[str, Tuple[str, Tuple[int, int, int, int]]] = {
    "imagenet_resnet18": ("basic", (2, 2, 2, 2)), "imagenet_resnet34": ("basic", (3, 4, 6, 3)),
    "imagenet_resnet50": ("bottleneck", (3, 4, 6, 3)),
}
# kd_jax's trainable-parameter counts (python tools/param_counts.py): CIFAR models for 100 classes, ImageNet
# models for 1000 (equal to torchvision's).
KD_JAX_PARAMS = {"resnet8x4": 1_233_540, "resnet32x4": 7_433_860, "imagenet_resnet18": 11_689_512,
                 "imagenet_resnet34": 21_797_672, "imagenet_resnet50": 25_557_032}


class BasicBlock(nn.Module):
  def __init__(self, c_in: int, c_out: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c_out)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(c_out)
    self.downsample = None
    if stride != 1 or c_in != c_out:
      self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetCIFAR(nn.Module):
  def __init__(self, blocks: int, stem: int, widths: Sequence[int], num_classes: int):
    super().__init__()
    self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(stem)
    layers, c_in = [], stem
    for s, width in enumerate(widths):
      for b in range(blocks):
        layers.append(BasicBlock(c_in, width, 2 if (s > 0 and b == 0) else 1))
        c_in = width
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(c_in, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.layers(F.relu(self.bn1(self.conv1(x))))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, c_in: int, width: int, stride: int):
    super().__init__()
    c_out = width * self.expansion
    self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride on the 3x3, as torchvision (v1.5)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(c_out)
    self.downsample = None
    if stride != 1 or c_in != c_out:
      self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetImageNet(nn.Module):
  """torchvision's ResNet layout: 7x7/2 conv-BN-ReLU, 3x3/2 max pool, four stages (64-128-256-512 wide)."""

  def __init__(self, kind: str, blocks: Sequence[int], num_classes: int):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    layers, c_in = [], 64
    for s, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
      for b in range(n):
        stride = 2 if (s > 0 and b == 0) else 1
        if kind == "basic":
          layers.append(BasicBlock(c_in, width, stride))
          c_in = width
        else:
          layers.append(Bottleneck(c_in, width, stride))
          c_in = width * Bottleneck.expansion
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(c_in, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    x = self.layers(x)
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_model(name: str, num_classes: int) -> nn.Module:
  if name in IMAGENET_ARCHS:
    kind, blocks = IMAGENET_ARCHS[name]
    return ResNetImageNet(kind, blocks, num_classes)
  if name not in ARCHS:
    raise SystemExit(f"bench_torch.py: unknown model {name!r}; defined here: {', '.join(list(ARCHS) + list(IMAGENET_ARCHS))}.")
  blocks, stem, widths = ARCHS[name]
  return ResNetCIFAR(blocks, stem, widths, num_classes)


def param_count(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
  """T²·KL(p_t^T ‖ p_s^T), mean over the batch."""
  log_p_s = F.log_softmax(student_logits / temperature, dim=1)
  log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
  kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()
  return temperature ** 2 * kl


def peak_tflops_table() -> Tuple[Tuple[str, Dict[str, float]], ...]:
  """tools/bench.py's PEAK_TFLOPS, read from its source (importing it would import JAX)."""
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py")) as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PEAK_TFLOPS":
      return ast.literal_eval(node.value)
  return ()


def peak_tflops(device_name: str, dtype: str) -> Optional[float]:
  """Dense peak TFLOP/s of `device_name` for `dtype` (TF32 for float32, PyTorch's default for convolutions on
  such GPUs), or None where the table has no entry (CPUs)."""
  for name, peaks in peak_tflops_table():
    if name in device_name:
      return peaks["bfloat16" if dtype == "bfloat16" else "tf32"]
  return None


def count_flops(call: Callable[[], object]) -> Optional[float]:
  """FLOPs of one `call()` (matrix products and convolutions, forward and backward) as PyTorch counts them."""
  try:
    from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  with FlopCounterMode(display=False) as counter:
    call()
  return float(counter.get_total_flops())


def time_calls(call: Callable[[], None], steps: int, warmup: int,
               sync: Callable[[], None] = lambda: None) -> Tuple[float, List[float], float]:
  """Median wall time of `call()` followed by `sync()` (eager CPU ops are synchronous; CUDA ops are not, so
  `sync` waits for the device), every timed call's wall time, and the median process CPU time per call."""
  for _ in range(warmup):
    call()
  sync()
  times, cpu_times = [], []
  for _ in range(steps):
    start, cpu_start = time.perf_counter(), time.process_time()
    call()
    sync()
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
  return statistics.median(times), times, statistics.median(cpu_times)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  models = sorted(ARCHS) + sorted(IMAGENET_ARCHS)
  parser.add_argument("--teacher", default="resnet32x4", choices=models)
  parser.add_argument("--student", default="resnet8x4", choices=models)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--num-classes", type=int, default=100)
  parser.add_argument("--steps", type=int, default=10, help="timed calls per measurement (median reported)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
  parser.add_argument("--temperature", type=float, default=4.0)
  parser.add_argument("--ce-weight", type=float, default=1.0)
  parser.add_argument("--weight", type=float, default=1.0, help="weight of the KD term")
  parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="bfloat16: forward passes under torch.autocast (mixed precision)")
  parser.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster on GPUs)")
  parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
  parser.add_argument("--compile", action="store_true",
                      help="torch.compile (inductor) each program; compile time reported apart from the step time")
  parser.add_argument("--compile-mode", default="default", choices=("default", "reduce-overhead", "max-autotune"),
                      help="torch.compile mode (with --compile)")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="peak TFLOP/s of the device for this dtype (overrides tools/bench.py's table)")
  parser.add_argument("--check-params", action=argparse.BooleanOptionalAction, default=True,
                      help="fail if the parameter counts differ from kd_jax's (100 classes only)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
  return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Dict[str, object]:
  torch.manual_seed(args.seed)
  if args.threads:
    torch.set_num_threads(args.threads)
  device = torch.device(args.device)
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
  memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
  student = make_model(args.student, args.num_classes).to(device, memory_format=memory_format)
  teacher = make_model(args.teacher, args.num_classes).to(device, memory_format=memory_format).eval()
  autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  counts = {args.student: param_count(student), args.teacher: param_count(teacher)}
  if args.check_params:
    for name, count in counts.items():
      if (name in IMAGENET_ARCHS) != (args.num_classes == 1000):
        continue  # kd_jax's counts are for 100 CIFAR classes and 1000 ImageNet classes
      if name in KD_JAX_PARAMS and count != KD_JAX_PARAMS[name]:
        raise SystemExit(f"bench_torch.py: {name} has {count:,} parameters here, kd_jax has "
                         f"{KD_JAX_PARAMS[name]:,}: the architectures differ.")
  images = torch.randn(args.batch, 3, args.image_size, args.image_size)  # NCHW, PyTorch's layout
  images = images.to(device).contiguous(memory_format=memory_format)
  labels = torch.randint(0, args.num_classes, (args.batch,)).to(device)
  optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
  student.train()

  def student_ce_step() -> None:
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      logits = student(images)
    F.cross_entropy(logits.float(), labels).backward()
    optimizer.step()

  def teacher_forward() -> torch.Tensor:
    with torch.no_grad(), autocast():
      return teacher(images).float()

  def kd_step() -> None:
    teacher_logits = teacher_forward()
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      logits = student(images).float()
    loss = (args.ce_weight * F.cross_entropy(logits, labels)
            + args.weight * kd_loss(logits, teacher_logits, args.temperature))
    loss.backward()
    optimizer.step()

  report: Dict[str, object] = {
      "framework": "pytorch eager", "torch_version": torch.__version__, "threads": torch.get_num_threads(),
      "host": platform.node(), "cpu_count": os.cpu_count(), "teacher": args.teacher, "student": args.student,
      "params": counts, "batch": args.batch, "image_shape": [args.image_size, args.image_size, 3],
      "num_classes": args.num_classes, "steps": args.steps, "warmup": args.warmup, "dtype": args.dtype,
      "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
      "channels_last": args.channels_last}
  programs = (("student_step_s", student_ce_step), ("teacher_forward_s", teacher_forward),
              ("distill_step_s", kd_step))
  # FLOPs on the eager programs, before any timing; the optimizer's elementwise update is not counted.
  flops = {key: count_flops(fn) for key, fn in programs}
  optimizer.zero_grad(set_to_none=True)
  peak = args.peak_tflops or peak_tflops(str(report["device"]), args.dtype)
  report.update({"compiled": bool(args.compile), "compile_mode": args.compile_mode if args.compile else None,
                 "peak_tflops": peak})
  if args.compile:
    report["framework"] = "pytorch compile (inductor)"
  for key, fn in programs:
    name = key[:-2]
    if args.compile:
      fn = torch.compile(fn, mode=args.compile_mode)
      start = time.perf_counter()
      fn()  # traces and compiles (the backward and optimizer graphs too)
      sync()
      first = time.perf_counter() - start
    median, times, cpu = time_calls(fn, args.steps, args.warmup, sync)
    report[key] = median
    report[name + "_times_s"] = times
    report[name + "_cpu_s"] = cpu
    if args.compile:
      report[name + "_compile_s"] = max(first - median, 0.0)
    report[name + "_flops"] = flops[key]
    achieved = flops[key] / median / 1e12 if flops[key] and median > 0 else None
    report[name + "_tflops"] = achieved
    report[name + "_mfu"] = achieved / peak if achieved is not None and peak else None
  return report


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  report = run(args)
  mode = f"compiled ({args.compile_mode})" if args.compile else "eager"
  table = (f"PyTorch {report['torch_version']} {mode} on {report['device']}, {report['threads']} threads, "
           f"{args.teacher} → {args.student}, batch {args.batch}, {args.dtype}"
           f"{', channels-last' if args.channels_last else ''}, median of {args.steps} steps\n\n"
           "| (a) student CE step | (b) teacher forward | (c) KD step |\n|---:|---:|---:|\n"
           f"| {report['student_step_s'] * 1e3:.3g} ms | {report['teacher_forward_s'] * 1e3:.3g} ms | "
           f"{report['distill_step_s'] * 1e3:.3g} ms |")
  names = ("student_step", "teacher_forward", "distill_step")
  if args.compile:
    table += "\n| " + " | ".join(f"compile {report[n + '_compile_s']:.3g} s" for n in names) + " |"
  table += "\n| " + " | ".join(
      "—" if report[n + "_tflops"] is None else f"{report[n + '_tflops']:.3g} TFLOP/s"
      + ("" if report[n + "_mfu"] is None else f", MFU {100 * report[n + '_mfu']:.1f}%") for n in names) + " |"
  if args.json:
    print(table, file=sys.stderr)
    print(json.dumps(report))
  else:
    print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
