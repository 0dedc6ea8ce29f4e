"""`train_and_evaluate`: one run from a config to a results table, resumable from its workdir.

Read top to bottom: load the data, build the run (`kd_jax.train.run`), check the workdir's config, restore
or initialise the state, train the epochs (`train_epochs`: steps, metrics, evaluation, checkpoints,
preemption, non-finite losses), then evaluate, export and report every trained network.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from kd_jax import data as kd_data
from kd_jax.compression.model import CompressedModel, compact_export
from kd_jax.config import peer_specs, validate
from kd_jax.distillers import describe as describe_loss
from kd_jax.errors import KDJaxError, Preempted
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import distributed
from kd_jax.train import sharding
from kd_jax.train import workdir as kd_workdir
from kd_jax.train.run import (Run, build_run, check_inputs, host_batches, init_state, load_data, make_step,
                              model_variables, prepare_distiller, with_fresh_optimizer)
from kd_jax.train.step import CLASSIFICATION, TrainState, eval_step, predict_step
from kd_jax.train.workdir import prepare_workdir
from kd_jax.train.writers import MetricWriter, Progress

__all__ = ["StopRequest", "evaluate", "format_metric", "prepare_distiller", "prepare_workdir", "results_table",
           "train_and_evaluate"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       dataset: Optional[kd_data.Dataset] = None,
                       allow_config_change: bool = False) -> Dict[str, Any]:
  """Trains the networks of `config` (its scheme and task), evaluating on validation each epoch.

  Resumes from the newest checkpoint in `workdir`; a workdir whose checkpoints were trained with a config
  that differs in what it computes is refused unless `allow_config_change` (`kd_jax.train.workdir`).
  Returns (and writes to `results.json`, with `results.md` holding the table) the final validation and test
  metrics of every trained network; the test split is only reported, never used to choose anything.
  """
  validate(config)
  distributed.initialize(config)  # a no-op when single-process or already done (the CLI does it first)
  workdir, start_time, mesh = prepare_workdir(workdir), time.time(), sharding.make_mesh()
  check_inputs(config, mesh)  # bad input is reported as such before any comparison with the workdir
  manager = ckpt.checkpoint_manager(workdir, config.keep_checkpoints)
  changes = _check_workdir_config(workdir, config, manager, allow_config_change)
  # cpu_conv_kernels='auto' made concrete and recorded, so that a resume runs the kernels the run started with.
  pinned = kd_workdir.pin_cpu_conv_kernels(workdir, config, bool(manager.all_steps()), distributed.is_main_process())
  run = build_run(pinned, load_data(config, dataset), workdir, mesh=mesh)
  state = init_state(run)
  state, resumed_from = restore(run, manager, state)
  if distributed.is_main_process():
    kd_workdir.record_config(workdir, config, changes, resumed_from or 0)
  writer = MetricWriter(workdir, active=distributed.is_main_process(), resume_step=resumed_from)
  try:
    state, val = train_epochs(run, state, manager, writer, os.path.basename(workdir))
  finally:
    manager.wait_until_finished()
    writer.close()
  save_final(run, state, manager)
  evaluations = evaluate_networks(run, state, val)
  export_networks(run, state, workdir)
  return write_results(run, workdir, evaluations, int(jax.device_get(state.step)), time.time() - start_time)


# ---------------------------------------------------------------------------------------------------
# The workdir, the state and checkpoints.


def _check_workdir_config(workdir: str, config: ml_collections.ConfigDict, manager: ocp.CheckpointManager,
                          allow_change: bool) -> Dict[str, Any]:
  """The config the workdir's checkpoints were trained with (config.json, else the newest checkpoint's
  record) against `config`; see `kd_jax.train.workdir.check_config`."""
  if not manager.all_steps():
    return {}
  reference = kd_workdir.stored_config(workdir)
  if reference is None:
    reference = ckpt.stored_meta(manager).get("config")
  return kd_workdir.check_config(workdir, config, reference, allow_change)


def restore(run: Run, manager: ocp.CheckpointManager, state: TrainState):
  """`(state, resumed step or None)`: the newest readable checkpoint restored into `state`'s structure (with
  the optimizer of the phase its last step belongs to), or `state` itself for a fresh run. Says which
  checkpoint it resumed from."""

  def template(step: int) -> TrainState:
    return with_fresh_optimizer(run, state, run.phase_at(max(step - 1, 0)))

  restored, meta = ckpt.restore_latest(manager, template)
  if restored is None:
    return state, None
  step = int(jax.device_get(restored.step))
  if distributed.is_main_process():
    print(f"[kd_jax] resuming {manager.directory} from step {step} (epoch {meta.get('epoch')}, phase "
          f"{meta.get('phase')!r}) of {run.total_steps}", flush=True)
  return restored, step


def save(run: Run, manager: ocp.CheckpointManager, state: TrainState, epoch: int) -> None:
  step = int(jax.device_get(state.step))
  ckpt.save_checkpoint(manager, step, state, {
      "epoch": epoch, "phase": run.phases[run.phase_at(max(step - 1, 0))].name,
      "config": json.loads(run.config.to_json_best_effort())})


def save_final(run: Run, state: TrainState, manager: ocp.CheckpointManager) -> None:
  """Checkpoints the final state unless its step is saved already (a run resumed when it was complete)."""
  step = int(jax.device_get(state.step))
  if step not in manager.all_steps():
    save(run, manager, state, math.ceil(step / run.steps_per_epoch))
    manager.wait_until_finished()


class StopRequest:
  """Set by SIGTERM/SIGINT while training; the loop checkpoints at the next step boundary and stops.

  `install` sets the handlers (only in the main thread, Python's rule); `restore` puts the previous ones
  back. A second SIGINT while the first is being honoured interrupts at once, for a user who really wants
  out.
  """

  def __init__(self):
    self.signal_name: Optional[str] = None
    self._previous = {}

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_name = name
    print(f"\n[kd_jax] {name} received: checkpointing at the next step boundary, then stopping.", flush=True)

  def install(self) -> None:
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)

  def restore(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}


# ---------------------------------------------------------------------------------------------------
# Training epochs.


@dataclasses.dataclass
class _Epoch:
  """Metric sums of the current epoch (host floats), its step count and its start time."""
  sums: Dict[str, float] = dataclasses.field(default_factory=dict)
  count: int = 0
  clock: float = dataclasses.field(default_factory=time.perf_counter)

  def add(self, steps: List[Dict[str, Any]]) -> None:
    for m in steps:
      for k, v in m.items():
        self.sums[k] = self.sums.get(k, 0.0) + float(v)
    self.count += len(steps)


def _per_step(fetched: Sequence[Dict[str, Any]]) -> list:
  """Host metrics of several calls, one dict per step: a call of k steps returned arrays of length k."""
  steps = []
  for metrics in fetched:
    if np.ndim(next(iter(metrics.values()))) == 0:
      steps.append(metrics)
    else:
      steps.extend(dict(zip(metrics, values)) for values in zip(*metrics.values()))
  return steps


def check_finite(steps: List[Dict[str, Any]], first_step: int, manager: ocp.CheckpointManager) -> None:
  """Stops the run on the first non-finite metric; the last good checkpoint stays."""
  for offset, m in enumerate(steps):
    bad = sorted(k for k, v in m.items() if not math.isfinite(float(v)))
    if bad:
      raise KDJaxError(f"Non-finite {', '.join(bad)} at step {first_step + offset}; stopping. The last good "
                       f"checkpoint in {manager.directory} is kept; lower optim.lr or check the data.")


def _shown(run: Run, metrics: Dict[str, Any]) -> Dict[str, float]:
  """What the progress display shows: the loss and the task's headline metric on the training batch (per
  network under schemes that train several)."""
  keys = ["loss"] + [k for k in metrics if k.split("/")[-1] == run.task.headline]
  return {k.replace("/", " "): float(metrics[k]) for k in keys if k in metrics}


def train_epochs(run: Run, state: TrainState, manager: ocp.CheckpointManager, writer: MetricWriter,
                 name: str):
  """Trains from `state.step` to `run.total_steps`: `(final state, last validation metrics or None)`.

  One host transfer per logging interval (`config.log_every_steps`, and every epoch end); the loop never
  waits on the device otherwise. At each epoch end: training means, throughput and validation metrics are
  written, and a checkpoint is saved every `checkpoint_every_epochs`. A call of several steps
  (`config.steps_per_call`) never crosses an epoch end. SIGTERM/SIGINT checkpoint and raise `Preempted`.
  """
  config, main = run.config, distributed.is_main_process()
  rows = sharding.process_rows(config.batch_size, run.mesh)  # this process's share of each training batch
  step = int(jax.device_get(state.step))
  current = run.phase_at(max(step - 1, 0))
  steps: Dict[Any, Any] = {}  # (phase, steps per call) -> the jitted step
  progress = Progress(name, run.total_steps, step, run.steps_per_epoch, enabled=config.progress_bar and main)
  pending, pending_steps, epoch, val = [], 0, _Epoch(), None
  stop = StopRequest()
  # One stream of host batches, steps `step`, `step + 1`, ... in order (streamed data: decoded ahead by grain
  # workers); each call below takes its n. Phases and call sizes change only which step runs them, so the
  # stream needs no restart; a resumed run opens it at its first step.
  batches = host_batches(run, step, rows)
  try:
    stop.install()
    while step < run.total_steps:
      index = run.phase_at(step)
      if index != current:
        state, current = with_fresh_optimizer(run, state, index), index
      epoch_end = min(run.total_steps, (step // run.steps_per_epoch + 1) * run.steps_per_epoch)
      n = config.steps_per_call if epoch_end - step >= config.steps_per_call else 1
      if (index, n) not in steps:
        steps[index, n] = make_step(run, state, index, n)
      host = [next(batches) for _ in range(n)]
      state, metrics = steps[index, n](state, _device_batch(run, host), run.teacher_variables)
      pending.append(metrics)
      pending_steps += n
      step += n
      end_of_epoch = step % run.steps_per_epoch == 0 or step == run.total_steps
      boundary = pending_steps >= config.log_every_steps or end_of_epoch
      stopping = stop.signal_name is not None
      if jax.process_count() > 1:
        # A signal reaches the processes at different steps; they agree (any process signalled) at each
        # logging boundary, so all of them stop after the same step and meet in the same collectives.
        stopping = boundary and distributed.any_process(stopping)
      if boundary or stopping:
        fetched = _per_step(jax.device_get(pending))
        epoch.add(fetched)
        check_finite(fetched, step + 1 - len(fetched), manager)
        progress.update(len(fetched), _shown(run, fetched[-1]))
        pending, pending_steps = [], 0
      if end_of_epoch:
        val = end_epoch(run, state, epoch, step, index, writer)
        if math.ceil(step / run.steps_per_epoch) % config.checkpoint_every_epochs == 0 or step == run.total_steps:
          save(run, manager, state, math.ceil(step / run.steps_per_epoch))
        epoch = _Epoch()
      if stopping:
        if step not in manager.all_steps():
          save(run, manager, state, math.ceil(step / run.steps_per_epoch))
        manager.wait_until_finished()
        raise Preempted(step, os.path.dirname(str(manager.directory)),
                        stop.signal_name or "SIGTERM/SIGINT (on another process)")
  finally:
    stop.restore()
    progress.close()
    batches.close()
  return state, val


def _device_batch(run: Run, host: List[Dict[str, np.ndarray]]) -> Dict[str, jax.Array]:
  """This process's rows of one step's batch on the mesh, or of n steps' batches stacked (a call of n steps)."""
  if len(host) == 1:
    return sharding.shard_batch(host[0], run.mesh, global_batch_size=run.config.batch_size)
  return sharding.shard_batches(host, run.mesh, global_batch_size=run.config.batch_size)


def end_epoch(run: Run, state: TrainState, epoch: _Epoch, step: int, phase: int,
              writer: MetricWriter) -> Dict[str, Dict[str, float]]:
  """Writes the epoch's training means, throughput and every network's validation metrics at `step`;
  returns the validation metrics by network."""
  # The metrics were fetched at this epoch's last step, so this is its training time, evaluation and
  # checkpoints excluded; an epoch that compiles a step (the first of a run or of a phase) includes it.
  seconds = time.perf_counter() - epoch.clock
  scalars = {f"train/{k}": v / epoch.count for k, v in epoch.sums.items()}
  scalars["perf/step_ms"] = 1e3 * seconds / epoch.count
  scalars["perf/images_per_s"] = epoch.count * run.config.batch_size / seconds
  scalars["epoch"] = math.ceil(step / run.steps_per_epoch)
  scalars["phase"] = phase
  val = {name: evaluate_network(run, state, name, run.dataset.val) for name in run.model_names}
  for name, metrics in val.items():
    prefix = "val" if name == run.model_names[0] else f"val/{name}"
    scalars.update({f"{prefix}/{k}": v for k, v in metrics.items()})
  writer.write(step, scalars)
  return val


# ---------------------------------------------------------------------------------------------------
# Evaluation, export and results.


def evaluate(eval_fn, variables: Any, split, batch_size: int, mesh, task=None, predict_fn=None) -> Dict[str, float]:
  """The task's metrics over a whole split (sums reduced on the host once); {} for an empty split.

  With `predict_fn` (`predict_step` jitted, for tasks with `split_metric_names`) the real rows' predictions are
  gathered in the split's order and `task.split_metrics` adds the metrics that need all of them at once."""
  task = task or CLASSIFICATION
  if len(split) == 0:
    return {}
  totals, predictions = None, []
  for batch in kd_data.eval_batches(split, batch_size, multiple=mesh.size):
    placed = sharding.shard_batch(batch, mesh)
    sums = eval_fn(variables, placed)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if predict_fn is not None:
      predictions.append(np.asarray(jax.device_get(predict_fn(variables, placed)))[batch["mask"] > 0])
  results = task.metrics(jax.device_get(totals))
  if predict_fn is not None:
    results.update(task.split_metrics(np.concatenate(predictions), split))
  return results


@functools.lru_cache(maxsize=32)
def _eval_fn(model, task, compiler_options_items):
  return jax.jit(functools.partial(eval_step, model=model, task=task),
                 compiler_options=dict(compiler_options_items) if compiler_options_items else None)


@functools.lru_cache(maxsize=32)
def _predict_fn(model, task, compiler_options_items, mesh):
  # Replicated output: every process holds the whole batch's predictions.
  return jax.jit(functools.partial(predict_step, model=model, task=task), out_shardings=sharding.replicated(mesh),
                 compiler_options=dict(compiler_options_items) if compiler_options_items else None)


def evaluate_network(run: Run, state: TrainState, name: str, split) -> Dict[str, float]:
  model = dict(run.models)[name]
  options = tuple(sorted((run.compiler_options or {}).items()))
  predict = _predict_fn(model, run.task, options, run.mesh) if run.task.split_metric_names else None
  return evaluate(_eval_fn(model, run.task, options), model_variables(run, state, name), split,
                  run.config.eval_batch_size, run.mesh, run.task, predict)


def evaluate_networks(run: Run, state: TrainState,
                      val: Optional[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
  """`{network: {'val': metrics, 'test': metrics}}`; validation from the last epoch end when there was one
  in this call."""
  return {name: {"val": (val or {}).get(name) or evaluate_network(run, state, name, run.dataset.val),
                 "test": evaluate_network(run, state, name, run.dataset.test)} for name in run.model_names}


def export_networks(run: Run, state: TrainState, workdir: str) -> None:
  """Every trained network's variables and description: the student in `<workdir>/model` (what
  `config.teacher.workdir` reads), the others in `<workdir>/networks/<name>/model`."""
  step = int(jax.device_get(state.step))
  for name in run.model_names:
    info = {"model": _model_name(run.config, name), "dataset": run.dataset.name, "task": run.task.name,
            "image_shape": list(run.dataset.image_shape), "step": step, "network": name,
            **run.task.model_kwargs(run.dataset), **run.task.export_info(run.dataset)}
    module, variables = dict(run.models)[name], model_variables(run, state, name)
    if isinstance(module, CompressedModel):  # load_model and teacher runs rebuild the wrapper from `info`
      variables, record = compact_export(module, jax.device_get(variables), run.config.compression.to_dict())
      info.update(record)
    target = workdir if name == run.model_names[0] else os.path.join(workdir, "networks", name)
    ckpt.export_model(target, variables, info)


def _model_name(config: ml_collections.ConfigDict, name: str) -> str:
  if name == "student":
    return config.student.model
  return {peer: model for peer, model, _ in peer_specs(config)}[name]


def results_table(rows: Sequence[Dict[str, Any]], metrics: Sequence[str]) -> str:
  """A Markdown table, one row per trained network: its model, the loss, validation and test metrics."""
  head = ["network", "model", "loss"] + [f"val {m}" for m in metrics] + [f"test {m}" for m in metrics] + ["steps"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (2 * len(metrics) + 1)]
  for r in rows:
    values = [format_metric(r[split].get(m), m) for split in ("val", "test") for m in metrics]
    lines.append(f"| {r['network']} | {r['model']} | {describe_loss(r['loss'])} | " + " | ".join(values) +
                 f" | {r['steps']} |")
  return "\n".join(lines)


def format_metric(value: Optional[float], metric: str) -> str:
  """A metric as results tables show it: accuracy in percent, PSNR in dB with two decimals."""
  if value is None:
    return "—"
  if metric == "accuracy":
    return f"{100 * value:.2f}"
  return f"{value:.2f}" if metric == "psnr" else f"{value:.4f}"


def write_results(run: Run, workdir: str, evaluations: Dict[str, Dict[str, Dict[str, float]]], step: int,
                  seconds: float) -> Dict[str, Any]:
  """The results dict (`results.json`) and table (`results.md`). Top-level `val_<metric>`/`test_<metric>`
  are the student's (the first network's); `networks` has every network's."""
  config, student = run.config, run.model_names[0]
  loss = {k: dict(v) for k, v in config.loss.items()}
  rows = [{"network": name, "model": _model_name(config, name), "loss": loss, "steps": step,
           "val": evaluations[name]["val"], "test": evaluations[name]["test"]} for name in run.model_names]
  results = {"model": config.student.model, "task": run.task.name, "scheme": run.scheme, "loss": loss,
             "steps": step, "epochs": step / run.steps_per_epoch}
  for split in ("val", "test"):
    results.update({f"{split}_{k}": v for k, v in evaluations[student][split].items()})
  results.setdefault("val_" + run.task.headline, None)
  results.setdefault("test_" + run.task.headline, None)
  results.update({"headline": run.task.headline, "wall_time_s": seconds, "devices": run.mesh.size,
                  "processes": jax.process_count(), "workdir": workdir, "networks": rows, **run.teacher_report})
  if config.phases:
    results["phases"] = [{"name": p.name, "epochs": p.epochs, "trainable": list(p.trainable),
                          "loss": {k: dict(v) for k, v in p.loss.items()}} for p in run.phases]
  metric_names = list(dict.fromkeys(list(evaluations[student]["test"]) or [run.task.headline]))
  results["table"] = results_table(rows, metric_names)
  if distributed.is_main_process():
    # results.json marks a finished run (pipelines skip such stages): written whole, then renamed.
    _write_atomically(os.path.join(workdir, "results.md"), results["table"] + "\n")
    _write_atomically(os.path.join(workdir, "results.json"), json.dumps(results, indent=2))
  return results


def _write_atomically(path: str, text: str) -> None:
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
