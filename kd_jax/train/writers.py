"""Metric sinks: a JSON-lines file (one record per evaluation) and TensorBoard event files."""

from __future__ import annotations

import json
import os
from typing import Mapping

from tensorboardX import SummaryWriter


class MetricWriter:
  """Appends `{step, **scalars}` to `<workdir>/metrics.jsonl` and to TensorBoard under `<workdir>/tb`."""

  def __init__(self, workdir: str, active: bool = True):
    # `active=False` (processes other than 0 of a multi-process run) writes nothing, not even an empty file.
    self._active = active
    self._path = os.path.join(workdir, "metrics.jsonl")
    self._tb = SummaryWriter(os.path.join(workdir, "tb")) if active else None

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
