"""The frozen teacher(s) of a run: loading exported models, the forward pass, optional calibration.

Several teachers (an ensemble, or dense guidance from teacher assistants) reach the distillers as a tuple
of `ModelOutput`s in the order of `config.teacher.workdir`, then `config.teacher.extra_workdirs`, then the
pruned copy of the first teacher if `config.teacher.pruned_copy_rate` > 0; a single teacher reaches them as
one `ModelOutput`.

A self teacher (`config.teacher.self`, `SelfTeacher`) is the student's own network with other weights: an
exponential moving average of its parameters, or a snapshot of them refreshed every few steps. Its variables
live in the train state, not here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kd_jax import backends
from kd_jax import models as kd_models
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.compression.pruning import prune_by_magnitude
from kd_jax.train import checkpoint as ckpt
from kd_jax.train.distributed import is_main_process

TeacherOutput = Union[None, ModelOutput, Tuple[ModelOutput, ...]]


@dataclasses.dataclass(frozen=True)
class Teachers:
  """Teacher modules and the temperature each one's logits are divided by (1.0 = as trained).

  A calibrated teacher (Guo et al. 2017 temperature scaling) has its fitted temperature here, so every
  logit distiller sees `z_t / T_cal` before applying its own softening temperature.
  """

  modules: Tuple[nn.Module, ...] = ()
  temperatures: Tuple[float, ...] = ()
  batch_statistics: Tuple[bool, ...] = ()  # run in train mode (BatchNorm on batch statistics, not updated)

  def __call__(self, variables: Sequence[Any], images: jax.Array) -> TeacherOutput:
    """All teachers on the same images, in eval mode unless `batch_statistics` says otherwise; constants
    for the gradient."""
    outs = []
    train_modes = self.batch_statistics or (False,) * len(self.modules)
    for module, temperature, train, v in zip(self.modules, self.temperatures, train_modes, variables):
      if train:
        out, _ = module.apply(v, images, train=True, mutable=["batch_stats"])
      else:
        # Distillers reduce the features; the barrier keeps those reductions from taking the teacher's
        # convolutions into YNNPACK on CPU (see the function).
        out = jax.tree_util.tree_map(backends.fusion_barrier, module.apply(v, images, train=False))
      if temperature != 1.0:
        out = out.replace(prediction=out.prediction / temperature)
      outs.append(jax.lax.stop_gradient(out))
    if not outs:
      return None
    return outs[0] if len(outs) == 1 else tuple(outs)


@dataclasses.dataclass(frozen=True)
class SelfTeacher:
  """Self-distillation: the teacher is the student network with averaged or earlier weights.

  With `v` the student's variables (parameters and BatchNorm statistics) after update k and `τ` the teacher's:

  - 'ema': `τ_k = d_k·τ_{k−1} + (1 − d_k)·v_k` with `d_k = min(d, 1 − 1/(k + 1))`, `τ_0 = v_0`: the plain
    average of `v_0 … v_k` until the exponential one, with its horizon of 1/(1 − d) updates, has that many to
    average (a mean teacher: Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017,
    arXiv:1703.01780; reference code CuriousAI/mean-teacher, `pytorch/main.py`, `update_ema_variables`,
    which averages parameters only and lets the teacher's own train-mode passes move its BatchNorm
    statistics; here the teacher runs in eval mode, so its statistics are averaged like its parameters).
  - 'snapshot': `τ_k = v_k` when k is a multiple of `snapshot_every`, else `τ_{k−1}`; `τ_0 = v_0`, so the
    first `snapshot_every` steps distil from the initial network.

  Area-wise RKD (Cho, Park, Lim, CSAM 30(5), 2023; no arXiv, no code) reports +0.5% "introducing the RKD
  method to self-KD" without saying what the teacher is; METHODS.md item 12 reads it [assume] as an earlier
  snapshot of the model, hence 'snapshot', with 'ema' as the smooth variant. Either teacher runs in eval
  mode under a stop-gradient, like a frozen teacher.
  """

  kind: str
  ema_decay: float = 0.999
  snapshot_every: int = 1

  def update(self, teacher: Any, student: Any, step: jax.Array) -> Any:
    """The teacher's variables once the student's are `student`, after update number `step` (1-based)."""
    if self.kind == "ema":
      d = jnp.minimum(self.ema_decay, 1.0 - 1.0 / (step.astype(jnp.float32) + 1.0))
      return jax.tree.map(lambda t, v: (d * t + (1.0 - d) * v).astype(t.dtype), teacher, student)
    refresh = step % self.snapshot_every == 0
    return jax.tree.map(lambda t, v: jnp.where(refresh, v, t), teacher, student)


def self_teacher(config: ml_collections.ConfigDict) -> Optional[SelfTeacher]:
  """The run's `SelfTeacher` (`config.teacher.self`), or None for runs with frozen teachers or none."""
  kind = config.teacher.get("self", "")
  if not kind:
    return None
  return SelfTeacher(kind, float(config.teacher.ema_decay), int(config.teacher.snapshot_every))


def self_teachers(student: nn.Module) -> Teachers:
  """The `Teachers` of a self-distillation run: the student's module in eval mode, temperature 1."""
  return Teachers((student,), (1.0,), (False,))


def teacher_workdirs(config: ml_collections.ConfigDict) -> Tuple[str, ...]:
  return tuple(w for w in (config.teacher.workdir, *config.teacher.extra_workdirs) if w)


def load_teachers(config: ml_collections.ConfigDict, model_kwargs: Union[int, Mapping[str, Any]],
                  sample_inputs: Any, kernels: Optional[backends.Kernels] = None) -> Tuple[Teachers, Tuple[Any, ...]]:
  """Teacher modules (uncalibrated) and their frozen variables, from the runs' exported models.

  `model_kwargs` is what the task's models are built with (`Task.model_kwargs(dataset)`; an int is a
  class count); each exported model must have been trained with the same values. The modules are built with
  `kernels` (default: `kd_jax.backends.kernels_for(config)`).
  """
  kernels = backends.kernels_for(config) if kernels is None else kernels
  model_kwargs = {"num_classes": model_kwargs} if isinstance(model_kwargs, int) else dict(model_kwargs)
  workdirs = teacher_workdirs(config)
  if not config.teacher.workdir:
    raise KDJaxError("The loss uses a teacher but config.teacher.workdir is empty: point it at a finished "
                     "kd_jax run (e.g. the teacher run of `python -m kd_jax`), or use only 'ce' in config.loss.")
  modules, variables = [], []
  for i, workdir in enumerate(workdirs):
    info = ckpt.read_export_info(workdir)
    name = (config.teacher.model if i == 0 else "") or info["model"]
    for key, value in model_kwargs.items():
      if key in info and info[key] != value:
        what = "classes" if key == "num_classes" else key
        raise KDJaxError(f"The teacher in {workdir!r} has {info[key]} {what} but dataset "
                         f"{config.data.name!r} has {value}.")
    module = ckpt.as_exported(kd_models.create_model(name, dtype=config.get("compute_dtype", "float32"),
                                                     kernels=kernels, **model_kwargs,
                                                     **ckpt.architecture_kwargs(info)), info)
    modules.append(module)
    variables.append(ckpt.load_exported_model(workdir, module, sample_inputs))
  train_modes = [False] * len(modules)
  if config.teacher.pruned_copy_rate:
    # R2KD: a copy of the first teacher with the smallest-magnitude weights of every kernel zeroed, no
    # fine-tuning, run with batch statistics as in the reference code (Seonghak35/R2KD, arXiv:2311.13934).
    modules.append(modules[0])
    variables.append(prune_by_magnitude(variables[0], config.teacher.pruned_copy_rate))
    train_modes.append(True)
  return Teachers(tuple(modules), (1.0,) * len(modules), tuple(train_modes)), tuple(variables)


def teacher_logits(teachers: Teachers, variables: Sequence[Any], batches,
                   compiler_options: Optional[Dict[str, str]] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Each teacher's (uncalibrated) logits over `batches` (padded eval batches): [K, N, C] and labels [N].

  `compiler_options`: XLA options for the forward pass (`kd_jax.backends.compiler_options_for`)."""
  forward = jax.jit(lambda v, x: tuple(m.apply(vi, x, train=False).logits for m, vi in zip(teachers.modules, v)),
                    compiler_options=compiler_options)
  logits, labels = [], []
  for batch in batches:
    keep = batch["mask"] > 0
    logits.append(np.stack([np.asarray(z)[keep] for z in forward(variables, batch["image"])]))
    labels.append(batch["label"][keep])
  return np.concatenate(logits, axis=1), np.concatenate(labels)


def teacher_pair_scores(teachers: Teachers, variables: Sequence[Any], index: int, num_users: int, num_items: int,
                        chunk: int = 65536, compiler_options: Optional[Dict[str, str]] = None) -> np.ndarray:
  """Teacher `index`'s prediction for every (user, item) pair of a rating task: [num_users, num_items] float32,
  computed in chunks of `chunk` pairs (the last padded), user-major. What the recommender distillers rank
  the unrated items of every user by (`kd_jax.distillers.TrainingData.teacher_scores`)."""
  module, v = teachers.modules[index], variables[index]
  forward = jax.jit(lambda v, users, items: module.apply(v, {"user": users, "item": items}, train=False).prediction,
                    compiler_options=compiler_options)
  total = num_users * num_items
  scores = np.empty(total, np.float32)
  for start in range(0, total, chunk):
    pairs = np.arange(start, start + chunk) % total  # the last chunk wraps around: one compiled shape
    out = np.asarray(forward(v, (pairs // num_items).astype(np.int32), (pairs % num_items).astype(np.int32)))
    stop = min(start + chunk, total)
    scores[start:stop] = out[:stop - start]
  return scores.reshape(num_users, num_items) / teachers.temperatures[index]


def calibrate_teachers(teachers: Teachers, variables: Sequence[Any], dataset, config: ml_collections.ConfigDict,
                       workdir: str, logits: Optional[np.ndarray] = None) -> Tuple[Teachers, dict]:
  """Fits each teacher's temperature on the validation split and reports ECE/ACE before and after.

  Kim et al., "The Role of Teacher Calibration in Knowledge Distillation", 2025, arXiv:2508.20224: a
  teacher with lower calibration error makes a better teacher. Temperature scaling (Guo et al. 2017) is
  fitted by NLL on `config.teacher.calibration_split`: the validation split by default (held out from the
  teacher), or the training split (which the teacher has fitted, so it looks over-confident there); never
  the test split. `logits` ([K, N, C], raw, in split order) skips the teacher pass when the teacher-output
  cache already holds them. Writes `teacher_calibration.json` and
  reliability diagrams (`calibration/teacher<k>_{before,after}.png`) into `workdir` (process 0 only; every
  process of a multi-process run fits the same temperatures from the same logits).

  A temperature fitted at the bound of its search range (`calibration.TemperatureAtBoundError`: the teacher
  classifies the whole split correctly, so the NLL wants T → 0 and one-hot targets; or its logits carry no
  information) is never applied. `config.teacher.calibration_at_bound` = 'error' (default) stops the run
  with a `KDJaxError` saying why and what to do, before anything is written; 'keep_one' keeps that teacher
  at T = 1 and its report says so (`temperature` 1.0, `fitted_temperature` the bound, `kept_uncalibrated`
  with the reason), which reaches results.json.
  """
  from kd_jax import calibration
  from kd_jax import data as kd_data

  split_name = config.teacher.calibration_split
  at_bound = config.teacher.get("calibration_at_bound", "error")
  split = getattr(dataset, split_name)
  if len(split) == 0:
    raise KDJaxError(f"config.teacher.calibrate fits the temperature on the {split_name!r} "
                     "split, which is empty; set config.data.val_fraction > 0.")
  if logits is None:
    logits, labels = teacher_logits(teachers, variables, kd_data.eval_batches(split, config.eval_batch_size),
                                    backends.compiler_options_for(config))
  else:
    labels = np.asarray(split.labels)
  workdirs = teacher_workdirs(config)
  # Every temperature is fitted (and every refusal raised) before anything is written.
  temperatures, reports = [], []
  for k, z in enumerate(logits[:len(workdirs)]):
    report = {"teacher": workdirs[k], "split": split_name, "examples": int(len(labels))}
    try:
      t = float(calibration.fit_temperature(z, labels, at_bound="raise"))
    except calibration.TemperatureAtBoundError as e:
      if at_bound != "keep_one":
        raise KDJaxError(_at_bound_message(k, workdirs[k], split_name, e)) from e
      # The bound is an artefact of the search range, not a calibration: the teacher stays as trained.
      t = 1.0
      report.update(fitted_temperature=e.temperature, kept_uncalibrated=(
          f"the temperature fitted on the {split_name!r} split is at the {e.bound} bound of the search range "
          f"(T = {e.temperature:.4g}; the teacher classifies {e.accuracy:.1%} of its {e.num_examples} examples "
          "correctly), which carries no calibration; config.teacher.calibration_at_bound='keep_one' kept T = 1"))
    report["temperature"] = t
    temperatures.append(t)
    reports.append(report)
  writes = is_main_process()
  if writes:
    os.makedirs(os.path.join(workdir, "calibration"), exist_ok=True)
  for k, (z, report) in enumerate(zip(logits, reports)):
    for when, temperature in (("before", 1.0), ("after", report["temperature"])):
      metrics = calibration.calibration_metrics(z, labels, temperature=temperature)
      report.update({f"{name}_{when}": value for name, value in metrics.items()})
      if writes:
        calibration.reliability_diagram(
            calibration.softmax(z, temperature), labels,
            os.path.join(workdir, "calibration", f"teacher{k}_{when}.png"),
            title=f"teacher {k}, {when} temperature scaling (T={temperature:.3f})")
  # A pruned copy of the first teacher shares its temperature.
  temperatures += temperatures[:1] * (len(teachers.modules) - len(workdirs))
  if writes:
    with open(os.path.join(workdir, "teacher_calibration.json"), "w") as f:
      json.dump(reports, f, indent=2)
  return dataclasses.replace(teachers, temperatures=tuple(temperatures)), {"teacher_calibration": reports}


def _at_bound_message(k: int, workdir: str, split_name: str, error) -> str:
  """The run-level refusal of a temperature fitted at a search bound: why, and the config keys that help."""
  if error.bound == "lower" and error.accuracy == 1.0:
    why = (f"the teacher classifies all {error.num_examples} examples of that split correctly, so the NLL keeps "
           "falling as T → 0, and dividing its logits by that T would turn its soft targets into one-hot labels "
           "(KD would silently become cross-entropy on the teacher's argmax)")
  elif error.bound == "lower":
    why = (f"the NLL still falls there although the teacher classifies {error.accuracy:.1%} of the "
           f"{error.num_examples} examples of that split correctly (logits on a very small scale, or ties?), and "
           "dividing its logits by that T would make its soft targets nearly one-hot")
  else:
    why = ("the teacher's logits carry no information about that split's labels (an untrained teacher, or one "
           "trained on other labels?), so the NLL keeps falling as T → ∞, and dividing by that T would make "
           "its soft targets uniform")
  return (f"config.teacher.calibrate: teacher {k} ({workdir}): the temperature that minimises the NLL on the "
          f"{split_name!r} split is at the {error.bound} bound of the search range (T = {error.temperature:.4g}): "
          f"{why}. That split gives temperature scaling no information. Calibrate on a larger or different "
          "split (raise config.data.val_fraction, or config.teacher.calibration_split='train' if the teacher "
          "makes mistakes there), turn calibration off (config.teacher.calibrate=False), or set "
          "config.teacher.calibration_at_bound='keep_one' to keep T = 1 for such a teacher and record why in "
          "the results.")
