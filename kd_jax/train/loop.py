"""`train_and_evaluate`: one run from a config to a results dict, resumable from its workdir."""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from kd_jax import data as kd_data
from kd_jax import distillers as kd_distillers
from kd_jax import models as kd_models
from kd_jax.config import validate
from kd_jax.errors import KDJaxError
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import optim
from kd_jax.train import sharding
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
                      dataset: kd_data.Dataset, config: ml_collections.ConfigDict,
                      workdir: str) -> kd_distillers.WeightedSum:
  """Fills constants that need a teacher pass over the training data (`Distiller.prepare`).

  The filled values are written to `<workdir>/prepared.json` with the loss config they belong to; a resumed
  run with the same loss config reads them back instead of recomputing, so it trains with the same ones.
  """
  path = os.path.join(workdir, "prepared.json")
  loss_config = json.loads(json.dumps(config.loss.to_dict()))
  if os.path.isfile(path):
    with open(path) as f:
      stored = json.load(f)
    if stored["loss"] == loss_config:
      return distiller.with_fields(stored["fields"])
  cache = {}

  def train_logits() -> np.ndarray:
    if "logits" not in cache:
      logits, _ = teacher_logits(teachers, teacher_variables,
                                 kd_data.eval_batches(dataset.train, config.eval_batch_size))
      cache["logits"] = logits[0] / teachers.temperatures[0]
    return cache["logits"]

  prepared = distiller.prepare(train_logits)
  fields = distiller.prepared_fields(prepared)
  if fields:
    with open(path, "w") as f:
      json.dump({"loss": loss_config, "fields": fields}, f, indent=2)
  return prepared


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       dataset: Optional[kd_data.Dataset] = None) -> Dict[str, Any]:
  """Trains the student of `config` with its distillers, evaluating on validation each epoch.

  Resumes from the newest checkpoint in `workdir`. Returns (and writes to `results.json`) the final
  validation and test metrics; the test split is only reported, never used to choose anything.
  """
  validate(config)
  workdir = prepare_workdir(workdir)
  start_time = time.time()
  if dataset is None:
    dataset = kd_data.load_dataset(config.data.name, data_dir=config.data.data_dir or None,
                                   val_fraction=config.data.val_fraction, seed=config.seed)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  if len(dataset.train) < config.batch_size:
    raise KDJaxError(f"batch_size={config.batch_size} exceeds the {len(dataset.train)} training examples.")

  distiller = kd_distillers.from_config(config.loss)
  student = kd_models.create_model(config.student.model, dataset.num_classes)
  sample = kd_data.train_batch(dataset.train, config.batch_size, seed=config.seed, step=0)
  teachers, teacher_variables, teacher_report = Teachers(), (), {}
  if distiller.needs_teacher:
    teachers, teacher_variables = load_teachers(config, dataset.num_classes, sample["image"][:1])
    if config.teacher.calibrate:
      teachers, teacher_report = calibrate_teachers(teachers, teacher_variables, dataset, config, workdir)
    distiller = prepare_distiller(distiller, teachers, teacher_variables, dataset, config, workdir)
    teacher_variables = sharding.replicate(teacher_variables, mesh)

  steps_per_epoch = kd_data.steps_per_epoch(len(dataset.train), config.batch_size)
  total_steps = config.epochs * steps_per_epoch
  if config.max_steps:
    total_steps = min(total_steps, config.max_steps)
  schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch, config.epochs * steps_per_epoch)
  tx = optim.make_optimizer(config.optim, schedule)

  try:
    state = create_train_state(jax.random.PRNGKey(config.seed), student, distiller, tx,
                               {k: jnp.asarray(v) for k, v in sample.items()}, teachers, teacher_variables)
  except KDJaxError:
    raise
  except ValueError as e:  # a distiller refusing these models' outputs (stage index, channel counts, ...)
    raise KDJaxError(f"config.loss does not fit the student {config.student.model!r} and its teacher(s): {e}") from e
  state = sharding.replicate(state, mesh)
  manager = ckpt.checkpoint_manager(workdir, config.keep_checkpoints)
  restored, _ = ckpt.restore_latest(manager, state)
  if restored is not None:
    state = restored
  start_step = int(jax.device_get(state.step))

  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))

  step_fn = jax.jit(
      functools.partial(train_step, student=student, teachers=teachers, distiller=distiller, tx=tx,
                        schedule=schedule, steps_per_epoch=steps_per_epoch, crop_pad=config.data.crop_pad,
                        flip=config.data.flip),
      out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)), donate_argnums=(0,))
  eval_fn = jax.jit(functools.partial(eval_step, model=student))
  writer = MetricWriter(workdir)

  def student_variables(s: TrainState):
    return {"params": s.params, "batch_stats": s.batch_stats}

  def save(s: TrainState, epoch: int):
    ckpt.save_checkpoint(manager, int(jax.device_get(s.step)), s,
                         {"epoch": epoch, "config": json.loads(config.to_json_best_effort())})

  pending, epoch_sums, epoch_count, val = [], {}, 0, None
  bar = tqdm(total=total_steps, initial=start_step, disable=not config.progress_bar, unit="step",
             desc=os.path.basename(workdir), dynamic_ncols=True, leave=False)
  try:
    for step in range(start_step, total_steps):
      batch = kd_data.train_batch(dataset.train, config.batch_size, seed=config.seed, step=step)
      state, metrics = step_fn(state, sharding.shard_batch(batch, mesh), teacher_variables)
      pending.append(metrics)
      end_of_epoch = (step + 1) % steps_per_epoch == 0 or step + 1 == total_steps
      if len(pending) >= config.log_every_steps or end_of_epoch:
        # One host transfer per logging interval; the loop never waits on the device otherwise.
        fetched = jax.device_get(pending)
        for m in fetched:
          for k, v in m.items():
            epoch_sums[k] = epoch_sums.get(k, 0.0) + float(v)
        epoch_count += len(fetched)
        bad = [k for k, v in fetched[-1].items() if not math.isfinite(float(v))]
        if bad:
          raise KDJaxError(f"Non-finite {', '.join(bad)} at step {step + 1}; stopping. The last good "
                           f"checkpoint in {manager.directory} is kept; lower optim.lr or check the data.")
        bar.update(len(fetched))
        bar.set_postfix(loss=f"{fetched[-1]['loss']:.3f}", acc=f"{fetched[-1]['accuracy']:.3f}")
        pending = []
      if end_of_epoch:
        epoch = math.ceil((step + 1) / steps_per_epoch)
        scalars = {f"train/{k}": v / epoch_count for k, v in epoch_sums.items()}
        scalars["epoch"] = epoch
        val = evaluate(eval_fn, student_variables(state), dataset.val, config.eval_batch_size, mesh)
        scalars.update({f"val/{k}": v for k, v in val.items()})
        writer.write(step + 1, scalars)
        epoch_sums, epoch_count = {}, 0
        if epoch % config.checkpoint_every_epochs == 0 or step + 1 == total_steps:
          save(state, epoch)
  finally:
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
             "devices": mesh.size, "workdir": workdir, **teacher_report}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results
