"""`train_and_evaluate`: one run from a config to a results dict, resumable from its workdir."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from kd_jax import data as kd_data
from kd_jax import distillers as kd_distillers
from kd_jax import models as kd_models
from kd_jax.config import validate
from kd_jax.errors import KDJaxError, Preempted
from kd_jax.models import conv as kd_conv
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import distributed
from kd_jax.train import optim
from kd_jax.train import phases as kd_phases
from kd_jax.train import sharding
from kd_jax.train import teacher_cache as kd_teacher_cache
from kd_jax.train.step import TrainState, create_train_state, eval_step, train_step
from kd_jax.train.teachers import Teachers, calibrate_teachers, load_teachers, teacher_logits
from kd_jax.train.writers import MetricWriter


def prepare_workdir(workdir: str) -> str:
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise KDJaxError(f"Cannot create workdir {workdir!r}: {e.strerror}. Choose a writable directory.") from e
  if not os.access(workdir, os.W_OK):
    raise KDJaxError(f"Workdir {workdir!r} is not writable. Choose a writable directory.")
  return workdir


def evaluate(eval_fn, variables: Any, split: kd_data.Split, batch_size: int, mesh) -> Dict[str, float]:
  """Accuracy and mean NLL over a whole split (sums reduced on the host once)."""
  if len(split) == 0:
    return {}
  totals = None
  for batch in kd_data.eval_batches(split, batch_size):
    sums = eval_fn(variables, sharding.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  return {"accuracy": float(totals["correct"] / totals["count"]), "nll": float(totals["nll"] / totals["count"])}


def prepare_distiller(distiller: kd_distillers.WeightedSum, teachers: Teachers, teacher_variables: Any,
                      dataset: kd_data.Dataset, config: ml_collections.ConfigDict, workdir: str,
                      loss: Optional[ml_collections.ConfigDict] = None,
                      filename: str = "prepared.json",
                      teacher_cache: Optional[kd_teacher_cache.TeacherCache] = None) -> kd_distillers.WeightedSum:
  """Fills constants that depend on the whole training split (`Distiller.prepare`).

  The filled values are written to `<workdir>/<filename>` with the loss config they belong to (`loss`,
  default `config.loss`); a resumed run with the same loss config reads them back instead of recomputing,
  so it trains with the same ones. The teacher pass reads `teacher_cache` (its original view) when given.
  """
  path = os.path.join(workdir, filename)
  loss_config = json.loads(json.dumps((config.loss if loss is None else loss).to_dict()))
  if os.path.isfile(path):
    with open(path) as f:
      stored = json.load(f)
    if stored["loss"] == loss_config:
      return distiller.with_fields(stored["fields"])
  cache = {}

  def train_logits() -> np.ndarray:
    if "logits" not in cache:
      if teacher_cache is not None:
        logits = teacher_cache.logits(view=0)
      else:
        logits, _ = teacher_logits(teachers, teacher_variables,
                                   kd_data.eval_batches(dataset.train, config.eval_batch_size),
                                   kd_conv.compiler_options_for(config))
      cache["logits"] = logits[0] / teachers.temperatures[0]
    return cache["logits"]

  prepared = distiller.prepare(kd_distillers.TrainingData(
      train_logits, np.asarray(dataset.train.labels), dataset.num_classes))
  fields = distiller.prepared_fields(prepared)
  if fields and distributed.is_main_process():
    # Written whole, then renamed: another process of a multi-process run may be reading it already.
    with open(path + ".tmp", "w") as f:
      json.dump({"loss": loss_config, "fields": fields}, f, indent=2)
    os.replace(path + ".tmp", path)
  return prepared


def _union_of_terms(distillers: Sequence[kd_distillers.WeightedSum]) -> kd_distillers.WeightedSum:
  """Every phase's terms once, by name: the distiller whose `init` builds the run's shared variables."""
  terms: Dict[str, Tuple[str, float, kd_distillers.Distiller]] = {}
  for distiller in distillers:
    for name, weight, term in distiller.terms:
      if name in terms and type(terms[name][2]) is not type(term):
        raise KDJaxError(f"config.phases: term {name!r} is a {type(terms[name][2]).__name__} in one phase and a "
                         f"{type(term).__name__} in another; a name shared by phases shares its parameters, so "
                         "give different distillers different names.")
      terms.setdefault(name, (name, weight, term))
  return kd_distillers.WeightedSum(tuple(terms.values()))


def _scan_steps(step_fn, state: TrainState, batches: Dict[str, jax.Array], teacher_variables: Any):
  """`step_fn` applied once per leading index of `batches` (k stacked batches) in one program: k steps for
  one dispatch (config.steps_per_call). Returns the final state and the metrics stacked along axis 0."""
  return jax.lax.scan(lambda s, batch: step_fn(s, batch, teacher_variables), state, batches)


def _per_step(fetched: Sequence[Dict[str, Any]]) -> list:
  """Host metrics of several calls, one dict per step: a call of k steps returned arrays of length k."""
  steps = []
  for metrics in fetched:
    if np.ndim(next(iter(metrics.values()))) == 0:
      steps.append(metrics)
    else:
      steps.extend(dict(zip(metrics, values)) for values in zip(*metrics.values()))
  return steps


class StopRequest:
  """Set by SIGTERM/SIGINT while training; the loop checkpoints at the next step boundary and stops.

  `install` sets the handlers (only in the main thread, Python's rule); `restore` puts the previous ones back. A second SIGINT
  while the first is being honoured interrupts at once, for a user who really wants out.
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       dataset: Optional[kd_data.Dataset] = None) -> Dict[str, Any]:
  """Trains the student of `config` with its distillers, evaluating on validation each epoch.

  Resumes from the newest checkpoint in `workdir`. Returns (and writes to `results.json`) the final
  validation and test metrics; the test split is only reported, never used to choose anything.
  """
  validate(config)
  # The convolution backward is read when the steps are traced, all of which happens inside this call; the
  # caller's mode is restored afterwards.
  with kd_conv.conv_backward(kd_conv.conv_backward_for(config)):
    return _train_and_evaluate(config, workdir, dataset)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        dataset: Optional[kd_data.Dataset]) -> Dict[str, Any]:
  distributed.initialize(config)  # a no-op when single-process or already done (the CLI does it first)
  main_process = distributed.is_main_process()  # the one that writes files and shows progress
  workdir = prepare_workdir(workdir)
  start_time = time.time()
  if dataset is None:
    dataset = kd_data.load_dataset(config.data.name, data_dir=config.data.data_dir or None,
                                   val_fraction=config.data.val_fraction, seed=config.seed)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  compiler_options = kd_conv.compiler_options_for(config, mesh.devices.flat[0].platform)
  if len(dataset.train) < config.batch_size:
    raise KDJaxError(f"batch_size={config.batch_size} exceeds the {len(dataset.train)} training examples.")

  phases = kd_phases.resolve_phases(config)
  phase_distillers = [kd_distillers.from_config(phase.loss) for phase in phases]
  needs_teacher = any(d.needs_teacher for d in phase_distillers)
  student = kd_models.create_model(config.student.model, dataset.num_classes, dtype=config.compute_dtype)
  sample = kd_data.train_batch(dataset.train, config.batch_size, seed=config.seed, step=0)
  teachers, teacher_variables, teacher_report = Teachers(), (), {}
  output_cache = None  # the teacher-output cache of the training split (config.teacher.cache)
  if needs_teacher:
    teachers, teacher_variables = load_teachers(config, dataset.num_classes, sample["image"][:1])
    if config.teacher.cache:
      output_cache = kd_teacher_cache.open_for_run(config, teachers, teacher_variables, dataset, phases, phase_distillers,
                                            student, sample, workdir, mesh)
    if config.teacher.calibrate:
      teachers, teacher_report = calibrate_teachers(
          teachers, teacher_variables, dataset, config, workdir,
          logits=None if output_cache is None else kd_teacher_cache.calibration_logits(
              output_cache, config, teachers, teacher_variables, dataset, workdir, mesh))
    if output_cache is not None:
      teacher_report = dict(teacher_report, teacher_cache=output_cache.report())
    phase_distillers = [
        prepare_distiller(d, teachers, teacher_variables, dataset, config, workdir, phase.loss,
                          "prepared.json" if len(phases) == 1 else f"prepared-{phase.name}.json", output_cache)
        for d, phase in zip(phase_distillers, phases)]
    teacher_variables = sharding.place_params(teacher_variables, mesh, config.sharding.params,
                                              config.sharding.fsdp_min_size)

  steps_per_epoch = kd_data.steps_per_epoch(len(dataset.train), config.batch_size)
  total_steps = phases[-1].steps(steps_per_epoch)[1]
  if config.max_steps:
    total_steps = min(total_steps, config.max_steps)
  schedules = [optim.learning_rate_schedule(p.optim, steps_per_epoch, p.epochs * steps_per_epoch) for p in phases]

  try:
    state = create_train_state(jax.random.PRNGKey(config.seed), student, _union_of_terms(phase_distillers),
                               optax.identity(), {k: jnp.asarray(v) for k, v in sample.items()}, teachers,
                               teacher_variables)
  except KDJaxError:
    raise
  except ValueError as e:  # a distiller refusing these models' outputs (stage index, channel counts, ...)
    raise KDJaxError(f"config.loss does not fit the student {config.student.model!r} and its teacher(s): {e}") from e
  trainable = {"student": state.params, "distiller": state.distiller_params}
  txs = [kd_phases.masked_optimizer(optim.make_optimizer(p.optim, sched), trainable, p.trainable)
         for p, sched in zip(phases, schedules)]

  def with_fresh_optimizer(s: TrainState, index: int) -> TrainState:
    # Each phase starts its own optimizer, as the reference codes construct a new one per phase.
    opt_state = jax.jit(txs[index].init)({"student": s.params, "distiller": s.distiller_params})
    return s.replace(opt_state=opt_state)

  def shardings_for(index: int):  # the optimizer state's structure differs between phases
    return sharding.state_shardings(jax.eval_shape(lambda s: with_fresh_optimizer(s, index), state), mesh,
                                    config.sharding.params, config.sharding.fsdp_min_size)

  def placed_with_fresh_optimizer(s: TrainState, index: int) -> TrainState:
    return jax.device_put(with_fresh_optimizer(s, index), shardings_for(index))

  state = placed_with_fresh_optimizer(state, 0)
  manager = ckpt.checkpoint_manager(workdir, config.keep_checkpoints)

  def template(step: int) -> TrainState:
    # A checkpoint's optimizer state belongs to the phase of the last step it applied.
    return placed_with_fresh_optimizer(state, kd_phases.phase_at(phases, max(step - 1, 0), steps_per_epoch))

  restored, _ = ckpt.restore_latest(manager, template)
  if restored is not None:
    state = restored
  start_step = int(jax.device_get(state.step))
  current = kd_phases.phase_at(phases, max(start_step - 1, 0), steps_per_epoch)

  if main_process:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  def uses_cache(index: int) -> bool:
    return output_cache is not None and kd_teacher_cache.phase_uses_cache(phases[index], phase_distillers[index])

  def make_step_fn(index: int, per_call: int):
    phase = phases[index]
    phase_teachers = teachers
    if phase.teacher_batch_statistics:
      phase_teachers = dataclasses.replace(teachers, batch_statistics=(True,) * len(teachers.modules))
    step = functools.partial(
        train_step, student=student, teachers=phase_teachers, distiller=phase_distillers[index],
        tx=txs[index], schedule=schedules[index], steps_per_epoch=steps_per_epoch, crop_pad=config.data.crop_pad,
        flip=config.data.flip, student_train=phase.trains_student, phase_start=phase.steps(steps_per_epoch)[0],
        teacher_cache=output_cache.layout if uses_cache(index) else None)
    if per_call > 1:  # one call runs `per_call` steps over stacked batches; metrics come back stacked
      step = functools.partial(_scan_steps, step)
    return jax.jit(step, out_shardings=(shardings_for(index), sharding.replicated(mesh)), donate_argnums=(0,),
                   compiler_options=compiler_options)

  def host_batch(index: int, step: int) -> Dict[str, np.ndarray]:
    # Only this process's rows of the global batch kd_data.train_batch would give are read.
    indices = kd_data.batch_indices(len(dataset.train), config.batch_size, seed=config.seed, step=step)[rows]
    batch = dataset.train.get(indices)
    if uses_cache(index):  # gathered by example, so the batch stays a pure function of (seed, step)
      batch.update(output_cache.gather(indices))
    return batch

  step_fns: Dict[Tuple[int, int], Any] = {}  # (phase, steps per call) -> the jitted step
  eval_fn = jax.jit(functools.partial(eval_step, model=student), compiler_options=compiler_options)
  writer = MetricWriter(workdir, active=main_process)
  rows = sharding.process_rows(config.batch_size, mesh)  # this process's share of each training batch

  def student_variables(s: TrainState):
    return {"params": s.params, "batch_stats": s.batch_stats}

  def save(s: TrainState, epoch: int):
    step = int(jax.device_get(s.step))
    ckpt.save_checkpoint(manager, step, s, {
        "epoch": epoch, "phase": phases[kd_phases.phase_at(phases, max(step - 1, 0), steps_per_epoch)].name,
        "config": json.loads(config.to_json_best_effort())})

  per_call = config.steps_per_call
  pending, pending_steps, epoch_sums, epoch_count, val = [], 0, {}, 0, None
  bar = tqdm(total=total_steps, initial=start_step, disable=not (config.progress_bar and main_process), unit="step",
             desc=os.path.basename(workdir), dynamic_ncols=True, leave=False)
  stop = StopRequest()
  try:
    stop.install()
    step, epoch_clock = start_step, time.perf_counter()
    while step < total_steps:
      index = kd_phases.phase_at(phases, step, steps_per_epoch)
      if index != current:
        state, current = placed_with_fresh_optimizer(state, index), index
      # A call of several steps never crosses an epoch end (evaluation, checkpoints and phase changes happen
      # there); the last steps of an epoch that do not fill one run one per call.
      epoch_end = min(total_steps, (step // steps_per_epoch + 1) * steps_per_epoch)
      n = per_call if epoch_end - step >= per_call else 1
      if (index, n) not in step_fns:
        step_fns[index, n] = make_step_fn(index, n)
      if n == 1:
        batch = sharding.shard_batch(host_batch(index, step), mesh, global_batch_size=config.batch_size)
      else:
        batch = sharding.shard_batches([host_batch(index, s) for s in range(step, step + n)], mesh,
                                       global_batch_size=config.batch_size)
      state, metrics = step_fns[index, n](state, batch, teacher_variables)
      pending.append(metrics)
      pending_steps += n
      step += n - 1  # from here to the end of the iteration, `step` is the last step this call ran
      end_of_epoch = (step + 1) % steps_per_epoch == 0 or step + 1 == total_steps
      boundary = pending_steps >= config.log_every_steps or end_of_epoch
      stopping = stop.signal_name is not None
      if jax.process_count() > 1:
        # A signal reaches the processes at different steps; they agree (any process signalled) at each
        # logging boundary, so all of them stop after the same step and meet in the same collectives.
        stopping = boundary and distributed.any_process(stopping)
      if boundary or stopping:
        # One host transfer per logging interval; the loop never waits on the device otherwise.
        fetched = _per_step(jax.device_get(pending))
        for m in fetched:
          for k, v in m.items():
            epoch_sums[k] = epoch_sums.get(k, 0.0) + float(v)
        epoch_count += len(fetched)
        for offset, m in enumerate(fetched):
          bad = sorted(k for k, v in m.items() if not math.isfinite(float(v)))
          if bad:
            raise KDJaxError(f"Non-finite {', '.join(bad)} at step {step + 2 - len(fetched) + offset}; stopping. "
                             f"The last good checkpoint in {manager.directory} is kept; lower optim.lr or check "
                             "the data.")
        bar.update(len(fetched))
        bar.set_postfix(loss=f"{fetched[-1]['loss']:.3f}", acc=f"{fetched[-1]['accuracy']:.3f}")
        pending, pending_steps = [], 0
      if end_of_epoch:
        # The fetch above waited for the epoch's last step, so this is its training time, evaluation and
        # checkpoints excluded; an epoch that compiles a step (the first of a run or of a phase) includes it.
        train_seconds = time.perf_counter() - epoch_clock
        epoch = math.ceil((step + 1) / steps_per_epoch)
        scalars = {f"train/{k}": v / epoch_count for k, v in epoch_sums.items()}
        scalars["perf/step_ms"] = 1e3 * train_seconds / epoch_count
        scalars["perf/images_per_s"] = epoch_count * config.batch_size / train_seconds
        scalars["epoch"] = epoch
        scalars["phase"] = index
        val = evaluate(eval_fn, student_variables(state), dataset.val, config.eval_batch_size, mesh)
        scalars.update({f"val/{k}": v for k, v in val.items()})
        writer.write(step + 1, scalars)
        epoch_sums, epoch_count = {}, 0
        if epoch % config.checkpoint_every_epochs == 0 or step + 1 == total_steps:
          save(state, epoch)
        epoch_clock = time.perf_counter()
      if stopping:
        if (step + 1) not in manager.all_steps():
          save(state, math.ceil((step + 1) / steps_per_epoch))
        manager.wait_until_finished()
        raise Preempted(step + 1, workdir, stop.signal_name or "SIGTERM/SIGINT (on another process)")
      step += 1
  finally:
    stop.restore()
    bar.close()
    manager.wait_until_finished()
    writer.close()

  final_step = int(jax.device_get(state.step))
  if final_step not in manager.all_steps():
    save(state, math.ceil(final_step / steps_per_epoch))
    manager.wait_until_finished()
  variables = student_variables(state)
  if val is None:  # nothing trained in this call (the run was already complete)
    val = evaluate(eval_fn, variables, dataset.val, config.eval_batch_size, mesh)
  test = evaluate(eval_fn, variables, dataset.test, config.eval_batch_size, mesh)
  ckpt.export_model(workdir, variables, {
      "model": config.student.model, "num_classes": dataset.num_classes, "dataset": dataset.name,
      "image_shape": list(dataset.image_shape), "step": final_step})
  results = {"model": config.student.model, "loss": {k: dict(v) for k, v in config.loss.items()},
             "steps": final_step, "epochs": final_step / steps_per_epoch,
             "val_accuracy": val.get("accuracy"), "test_accuracy": test.get("accuracy"),
             "test_nll": test.get("nll"), "wall_time_s": time.time() - start_time,
             "devices": mesh.size, "processes": jax.process_count(), "workdir": workdir, **teacher_report}
  if config.phases:
    results["phases"] = [{"name": p.name, "epochs": p.epochs, "trainable": list(p.trainable),
                          "loss": {k: dict(v) for k, v in p.loss.items()}} for p in phases]
  if main_process:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  return results
