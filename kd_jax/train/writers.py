"""Where a run reports: metrics (a JSON-lines file and TensorBoard) and progress on the terminal or log."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Mapping, Optional, TextIO

from tqdm.auto import tqdm


def _summary_writer_class():
  """tensorboardX's `SummaryWriter`, imported without PyTorch.

  tensorboardX's writer module imports torch, where it is installed, only to accept torch tensors, which
  kd_jax never passes; that import alone adds about 200 MiB of resident memory and a second of start-up
  to every kd_jax process (docs/benchmarks.md, "Peak memory"). A None entry in `sys.modules` makes that
  `import torch` fail as if torch were absent, which tensorboardX handles; the entry is removed right after,
  so torch stays importable (`kd_jax.torch_io`). Where torch is already imported nothing is saved or changed.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    if "torch" in sys.modules and sys.modules["torch"] is None:
      del sys.modules["torch"]
  return SummaryWriter


SummaryWriter = _summary_writer_class()


class MetricWriter:
  """Appends `{step, **scalars}` to `<workdir>/metrics.jsonl` and to TensorBoard under `<workdir>/tb`.

  `resume_step`: the step of the checkpoint a run resumed from. Records after it were written by the
  attempt that crashed after that checkpoint; they are dropped from `metrics.jsonl` (the resumed run
  writes those steps again) and TensorBoard is told to hide them (`purge_step`), so each shows one curve.
  """

  def __init__(self, workdir: str, active: bool = True, resume_step: Optional[int] = None):
    # `active=False` (processes other than 0 of a multi-process run) writes nothing, not even an empty file.
    self._active = active
    self._path = os.path.join(workdir, "metrics.jsonl")
    if active and resume_step is not None:
      self._truncate_after(resume_step)
    purge = None if resume_step is None else resume_step + 1
    self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=purge) if active else None

  def _truncate_after(self, step: int) -> None:
    if not os.path.isfile(self._path):
      return
    with open(self._path) as f:
      lines = f.readlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
      with open(self._path + ".tmp", "w") as f:
        f.writelines(kept)
      os.replace(self._path + ".tmp", self._path)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._active:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self._path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in scalars.items():
      self._tb.add_scalar(key, float(value), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Training progress: a progress bar on a terminal, one plain line per logging interval otherwise.

  A cluster job's output file would keep every redrawn frame of a bar, so when stdout or stderr is not a
  terminal (or `interactive=False`) each `update` prints one line: run, step/total, epoch and the shown
  metrics. `enabled=False` shows nothing.
  """

  def __init__(self, name: str, total: int, initial: int, steps_per_epoch: int, *, enabled: bool = True,
               interactive: Optional[bool] = None, stream: Optional[TextIO] = None):
    self._name, self._total, self._spe, self._enabled = name, total, steps_per_epoch, enabled
    self._stream = stream or sys.stdout
    if interactive is None:
      interactive = sys.stdout.isatty() and sys.stderr.isatty()
    self._bar = None
    if enabled and interactive:
      self._bar = tqdm(total=total, initial=initial, unit="step", desc=name, dynamic_ncols=True, leave=False)
    self._step, self._start = initial, time.time()

  def update(self, steps: int, shown: Mapping[str, float]) -> None:
    self._step += steps
    if self._bar is not None:
      self._bar.update(steps)
      self._bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
    elif self._enabled:
      epoch = -(-self._step // self._spe)
      values = " ".join(f"{k} {v:.4g}" for k, v in shown.items())
      print(f"[{self._name}] step {self._step}/{self._total} epoch {epoch} {values} "
            f"({time.time() - self._start:.0f} s)", file=self._stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
