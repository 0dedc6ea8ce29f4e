"""What a run is made of, and the builders of its state and steps.

`build_run(config, dataset, workdir)` turns a config into a `Run`: the task, the trained networks, the
frozen teachers, the phases with their distillers and optimizers, the device mesh. Everything a compiled
step closes over is in it, built once. From a `Run`:

  * `init_state(run)`: the train state, initialised and placed on the mesh with phase 0's optimizer;
  * `with_fresh_optimizer(run, state, phase)`: the state with that phase's new optimizer, placed;
  * `make_step(run, phase, per_call)`: the jitted step of the run's scheme for that phase;
  * `model_variables(run, state, name)`: one trained network's variables, for evaluation and export.

The training loop (`kd_jax.train.loop`) and the benchmarks in `tools/` build their steps through these.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from kd_jax import backends
from kd_jax import data as kd_data
from kd_jax import distillers as kd_distillers
from kd_jax import models as kd_models
from kd_jax import tasks as kd_tasks
from kd_jax.compression.model import CompressedModel, compression_from_settings
from kd_jax.config import compression_enabled, peer_specs
from kd_jax.errors import KDJaxError
from kd_jax.models.discriminator import FeatureDiscriminator, TransferLayer
from kd_jax.train import distributed
from kd_jax.train import optim
from kd_jax.train import phases as kd_phases
from kd_jax.train import sharding
from kd_jax.train import teacher_cache as kd_teacher_cache
from kd_jax.train.checkpoint import read_export_info
from kd_jax.train.schemes import adversarial, distill, mutual
from kd_jax.train.step import TrainState
from kd_jax.train.teachers import (Teachers, calibrate_teachers, load_teachers, self_teacher, self_teachers,
                                   teacher_logits, teacher_pair_scores, teacher_workdirs)

SCHEMES = {"distill": distill, "mutual": mutual, "adversarial": adversarial}
STUDENT = "student"


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything a run's compiled steps close over (static), built once by `build_run`.

  Attributes:
    config, dataset, task: what the run learns from and how.
    models: the trained networks as `(name, module)`, the student first ('student', 'peer1', ...).
    teachers, teacher_variables: the frozen teachers (empty for schemes without them), placed on the mesh.
    phases, distillers: the phases and each phase's weighted sum of distillers.
    optimizers, schedules: per phase, the optimizers by name and the learning-rate schedule logged as `lr`.
    steps_per_epoch, total_steps: the run's length.
    mesh, compiler_options: where and how the steps compile.
    output_cache: the teacher-output cache (`config.teacher.cache`) or None.
    teacher_report: calibration and cache reports, for the results.
    discriminator, transfers, taps: the adversarial scheme's discriminator, its transfer layers by tap key
      and its taps (`adversarial.Tap`: which maps each discriminator compares); None / {} / () otherwise.
    kernels: the kernels every network and teacher of the run is built with (`kd_jax.backends.kernels_for`).
  """

  config: ml_collections.ConfigDict
  dataset: kd_data.Dataset
  task: kd_tasks.Task
  models: Tuple[Tuple[str, nn.Module], ...]
  teachers: Teachers
  teacher_variables: Any
  phases: Tuple[kd_phases.Phase, ...]
  distillers: Tuple[kd_distillers.WeightedSum, ...]
  optimizers: Tuple[Dict[str, optax.GradientTransformation], ...]
  schedules: Tuple[optax.Schedule, ...]
  steps_per_epoch: int
  total_steps: int
  mesh: Mesh
  compiler_options: Optional[Dict[str, str]]
  output_cache: Optional[kd_teacher_cache.TeacherCache] = None
  teacher_report: Dict[str, Any] = dataclasses.field(default_factory=dict)
  discriminator: Optional[FeatureDiscriminator] = None
  transfers: Dict[str, TransferLayer] = dataclasses.field(default_factory=dict)
  taps: Tuple[Any, ...] = ()
  kernels: backends.Kernels = backends.DEFAULT_KERNELS

  @property
  def scheme(self) -> str:
    return self.config.scheme

  @property
  def model_names(self) -> Tuple[str, ...]:
    return tuple(name for name, _ in self.models)

  def phase_at(self, step: int) -> int:
    return kd_phases.phase_at(self.phases, step, self.steps_per_epoch)

  def uses_cache(self, index: int) -> bool:
    return self.output_cache is not None and kd_teacher_cache.phase_uses_cache(self.phases[index],
                                                                               self.distillers[index])


# ---------------------------------------------------------------------------------------------------
# Building a run from a config.


def load_data(config: ml_collections.ConfigDict, dataset: Optional[kd_data.Dataset] = None) -> kd_data.Dataset:
  """The config's dataset (or `dataset`, data a caller built), checked against the config's task."""
  if dataset is None and config.task == "super_resolution":
    d = config.data
    dataset = kd_data.load_sr_dataset(d.name, scale=d.scale, tile=d.tile_size, val_fraction=d.val_fraction,
                                      seed=config.seed, data_dir=d.data_dir, hr_dir=d.hr_dir, lr_dir=d.lr_dir,
                                      test_hr_dir=d.test_hr_dir, test_lr_dir=d.test_lr_dir)
  elif dataset is None and config.task == "regression":
    d = config.data
    dataset = kd_data.load_regression_dataset(d.name, data_dir=d.data_dir, labeled_fraction=d.labeled_fraction,
                                              val_fraction=d.val_fraction,
                                              seed=config.seed if d.split_seed < 0 else d.split_seed)
  elif dataset is None and config.task == "segmentation":
    d = config.data
    dataset = kd_data.load_segmentation_dataset(d.name, data_dir=d.data_dir, val_fraction=d.val_fraction,
                                                seed=config.seed)
  elif dataset is None and config.task == "rating":
    dataset = kd_data.load_rating_dataset(config.data.name, data_dir=config.data.data_dir,
                                          val_fraction=config.data.val_fraction, seed=config.seed)
  elif dataset is None:
    d = config.data
    dataset = kd_data.load_dataset(d.name, data_dir=d.data_dir or None, val_fraction=d.val_fraction,
                                   seed=config.seed, image_size=d.get("image_size", 224), flip=bool(d.flip),
                                   num_workers=d.get("num_workers", 0), prefetch=d.get("prefetch", 2))
  kd_tasks.task_for(config, dataset)
  if isinstance(dataset.train, kd_data.StreamingSplit):
    _check_streaming(config, dataset)
  return dataset


def _check_streaming(config: ml_collections.ConfigDict, dataset: kd_data.Dataset) -> None:
  """Streamed data arrive augmented and normalised from the host (`kd_jax.data.streaming`; `config.data.flip`
  is applied there and `step_function` leaves it out of the step): a padded crop on top of the random-resized
  crop is refused, and so is the teacher-output cache, which indexes in-memory images."""
  if config.data.crop_pad:
    raise KDJaxError(f"Dataset {dataset.name!r} is streamed: its training images are random-resized crops made on "
                     f"the host (kd_jax.data.streaming), not padded crops. Set config.data.crop_pad=0 (got "
                     f"{config.data.crop_pad}).")
  if config.teacher.cache:
    raise KDJaxError(f"config.teacher.cache stores teacher outputs of in-memory images; dataset {dataset.name!r} is "
                     "streamed with fresh random crops every step. Set config.teacher.cache=False.")


def sample_batch(config: ml_collections.ConfigDict, dataset: kd_data.Dataset) -> Dict[str, np.ndarray]:
  return kd_data.train_batch(dataset.train, config.batch_size, seed=config.seed, step=0)


def create_networks(config: ml_collections.ConfigDict, task: kd_tasks.Task, dataset: kd_data.Dataset,
                    kernels: backends.Kernels = backends.DEFAULT_KERNELS) -> Tuple[Tuple[str, nn.Module], ...]:
  """The trained networks: the student and, for schemes with several, `config.peers`, built with `kernels`."""
  sizes = task.model_kwargs(dataset)
  names = [(STUDENT, config.student.model)]
  if config.scheme != "distill":
    names += [(name, model) for name, model, _ in peer_specs(config)]
  networks = []
  for name, model in names:
    takes = kd_models.model_arguments(model)
    if not set(sizes) <= set(takes):
      raise KDJaxError(f"Model {model!r} ({name}) does not fit task {task.name!r}: it is built from "
                       f"{', '.join(takes)}, the task's data gives {', '.join(sizes)}. Choose a {task.name} model.")
    networks.append((name, kd_models.create_model(model, dtype=config.compute_dtype, kernels=kernels, **sizes)))
  return tuple(networks)


def quantizes_in(config: ml_collections.ConfigDict, phase: kd_phases.Phase) -> bool:
  """Whether the student trains with fake quantisation in `phase` (config.compression.quant_begin_epoch)."""
  return phase.start_epoch >= config.compression.quant_begin_epoch


def _compressed_networks(config: ml_collections.ConfigDict, networks, phases, steps_per_epoch: int):
  """`networks` (every trained network: the student and, under 'mutual'/'adversarial', its peers), each
  wrapped in a `CompressedModel` when config.compression asks for pruning or quantisation-aware training
  (quantising as the last phase does, for evaluation and export)."""
  if not compression_enabled(config):
    return networks
  pruning, quant = compression_from_settings(config.compression.to_dict(), steps_per_epoch)
  starts = [p.start_epoch for p in phases]
  if quant is not None and config.compression.quant_begin_epoch not in starts:
    raise KDJaxError(f"compression.quant_begin_epoch={config.compression.quant_begin_epoch} is not the start of a "
                     f"phase (phases start at epochs {', '.join(map(str, starts))}): quantisation-aware training "
                     "switches on at a phase boundary; give it a phase of its own in config.phases.")
  quantize = quantizes_in(config, phases[-1])
  return tuple((name, CompressedModel(model, pruning, quant, quantize=quantize)) for name, model in networks)


def _distill_optimizers(phases, steps_per_epoch: int, trainable_tree: Optional[Dict[str, Any]]):
  """Per phase: the student's and distillers' optimizer (masked to the phase's trainable groups; the tree
  of `{'student', 'distiller'}` parameter shapes is needed only where a phase freezes some)."""
  schedules = [optim.learning_rate_schedule(p.optim, steps_per_epoch, p.epochs * steps_per_epoch) for p in phases]
  optimizers = [{STUDENT: kd_phases.masked_optimizer(optim.make_optimizer(p.optim, s, distill.DOT_DISTILLATION_ONLY),
                                                     trainable_tree, p.trainable)}
                for p, s in zip(phases, schedules)]
  return tuple(optimizers), tuple(schedules)


def _network_optimizers(config: ml_collections.ConfigDict, steps_per_epoch: int, total: int):
  """One optimizer per network (config.optim with its overrides); under 'adversarial' also each network's
  adversarial optimizer and the discriminators'. The first network's schedule is the one logged."""
  overrides = {STUDENT: config.student.optim, **{name: optim_ for name, _, optim_ in peer_specs(config)}}
  txs, schedules = {}, {}
  for name, extra in overrides.items():
    settings = optim.with_overrides(config.optim, extra, f"the optimizer of {name}")
    schedules[name] = optim.learning_rate_schedule(settings, steps_per_epoch, total)
    txs[name] = optim.make_optimizer(settings, schedules[name])
  if config.scheme == "adversarial":
    feature = optim.with_overrides(config.optim, config.discriminators.network_optim,
                                   "config.discriminators.network_optim")
    for name in overrides:
      txs[name + adversarial.ADVERSARIAL] = optim.make_optimizer(
          feature, optim.learning_rate_schedule(feature, steps_per_epoch, total))
    disc = optim.with_overrides(config.optim, config.discriminators.optim, "config.discriminators.optim")
    txs[adversarial.DISCRIMINATORS] = optim.make_optimizer(disc, optim.learning_rate_schedule(disc, steps_per_epoch,
                                                                                                total))
  return (txs,), (schedules[STUDENT],)


def _adversarial_modules(config, networks, task, sample: Dict[str, np.ndarray], kernels: backends.Kernels,
                         teachers: Teachers, teacher_variables: Any):
  """The discriminator, the taps (`adversarial.make_taps`: which maps each discriminator compares) and the
  transfer layers. In the ring, where the networks' maps at a tap differ in width (or `transfer_channels` is
  set), every network's map there goes through a 1×1 transfer layer to a common width (`transfer_channels`,
  else the widest); with a teacher, the student's map goes to the teacher's width where they differ."""
  d = config.discriminators
  stages = tuple(d.stages) or (d.stage,)
  taps = adversarial.make_taps([name for name, _ in networks], stages, tuple(d.teacher_stages), tuple(d.pools))
  inputs = task.inputs({k: jnp.asarray(v[:1]) for k, v in sample.items()})
  outs = {}
  for name, model in networks:
    outs[name] = jax.eval_shape(lambda m=model: m.apply(m.init(jax.random.PRNGKey(0), inputs, train=False), inputs))
  teacher_out = None
  if teachers.modules:
    teacher_out = jax.eval_shape(lambda: teachers(teacher_variables, task.teacher_inputs(
        {k: jnp.asarray(v[:1]) for k, v in sample.items()})))
    teacher_out = teacher_out[0] if isinstance(teacher_out, tuple) else teacher_out
    outs["teacher"] = teacher_out

  def width(owner, stage):
    out = outs[owner]
    if not out.stages:
      raise KDJaxError(f"config.scheme='adversarial' reads stage feature maps, and the {owner} network has none.")
    if not -len(out.stages) <= stage < len(out.stages):
      raise KDJaxError(f"config.discriminators: stage {stage} does not exist in the {owner} network, which has "
                       f"{len(out.stages)} stages.")
    return out.stages[stage].shape[-1]

  transfers = {}
  if teacher_out is not None:
    if d.transfer_channels:
      raise KDJaxError("config.discriminators.transfer_channels sets the common width of the ring's networks; "
                       "with a teacher the student's maps are mapped to the teacher's width: set it to 0.")
    for t in taps:
      target = width("teacher", t.real_stage)
      if width(t.network, t.stage) != target:
        transfers[t.key] = TransferLayer(target, dtype=config.compute_dtype, kernels=kernels)
  else:
    for j in range(len(taps) // len(networks)):
      slot = taps[j::len(taps) // len(networks)]
      widths = [width(t.network, t.stage) for t in slot]
      channels = d.transfer_channels or (max(widths) if len(set(widths)) > 1 else 0)
      if channels:
        transfers.update({t.key: TransferLayer(channels, dtype=config.compute_dtype, kernels=kernels) for t in slot})
  disc = FeatureDiscriminator(tuple(d.widths), dtype=config.compute_dtype, kernels=kernels)
  return disc, transfers, taps


def prepare_distiller(distiller: kd_distillers.WeightedSum, teachers: Teachers, teacher_variables: Any,
                      dataset: kd_data.Dataset, config: ml_collections.ConfigDict, workdir: Optional[str],
                      loss: Optional[ml_collections.ConfigDict] = None,
                      filename: str = "prepared.json",
                      teacher_cache: Optional[kd_teacher_cache.TeacherCache] = None) -> kd_distillers.WeightedSum:
  """Fills constants that depend on the whole training split (`Distiller.prepare`).

  The filled values are written to `<workdir>/<filename>` with the loss config they belong to (`loss`,
  default `config.loss`); a resumed run with the same loss config reads them back instead of recomputing,
  so it trains with the same ones. The teacher pass reads `teacher_cache` (its original view) when given.
  `workdir=None` (a benchmark) stores nothing. `teacher_variables=None` (a self teacher, which has no
  outputs before training) refuses a distiller that asks for the teacher's outputs.
  """
  path = os.path.join(workdir, filename) if workdir else None
  loss_config = json.loads(json.dumps((config.loss if loss is None else loss).to_dict()))
  if path and os.path.isfile(path):
    with open(path) as f:
      stored = json.load(f)
    if stored["loss"] == loss_config:
      return distiller.with_fields(stored["fields"])
  cache = {}

  def train_logits() -> np.ndarray:
    if teacher_variables is None:
      raise KDJaxError(_NO_TEACHER_YET)
    if "logits" not in cache:
      if teacher_cache is not None:
        logits = teacher_cache.logits(view=0)
      else:
        logits, _ = teacher_logits(teachers, teacher_variables,
                                   kd_data.eval_batches(dataset.train, config.eval_batch_size),
                                   backends.compiler_options_for(config))
      cache["logits"] = logits[0] / teachers.temperatures[0]
    return cache["logits"]

  rated, pair_scores = None, None
  if dataset.task == "rating":  # what the recommender distillers rank unrated items by
    rated, scores = kd_data.rated_matrix(dataset), {}

    def pair_scores(k: int) -> np.ndarray:
      if not 0 <= k < len(teachers.modules):
        raise KDJaxError(f"A term of config.loss ranks items by teacher {k}, but the run has {len(teachers.modules)} "
                         "teacher(s), numbered from 0 in the order config.teacher.workdir, "
                         "config.teacher.extra_workdirs: add the missing run to config.teacher.extra_workdirs or "
                         "change the term's `teacher` key.")
      if teacher_variables is None:
        raise KDJaxError(_NO_TEACHER_YET)
      if k not in scores:
        scores[k] = teacher_pair_scores(teachers, teacher_variables, k, dataset.info["num_users"],
                                        dataset.info["num_items"],
                                        compiler_options=backends.compiler_options_for(config))
      return scores[k]

  labels = getattr(dataset.train, "labels", None)
  prepared = distiller.prepare(kd_distillers.TrainingData(
      train_logits, np.asarray(labels if labels is not None else np.zeros(len(dataset.train), np.int32)),
      dataset.num_classes, rated, pair_scores))
  fields = distiller.prepared_fields(prepared)
  if fields and path and distributed.is_main_process():
    # Written whole, then renamed: another process of a multi-process run may be reading it already.
    with open(path + ".tmp", "w") as f:
      json.dump({"loss": loss_config, "fields": fields}, f, indent=2)
    os.replace(path + ".tmp", path)
  return prepared


_NO_TEACHER_YET = ("A term of config.loss fixes constants from a frozen teacher's outputs on the training split before "
                   "training (Distiller.prepare), and this run has none then (a self teacher, config.teacher.self, or "
                   "the mutual scheme's peers): use a frozen teacher (config.teacher.workdir) under "
                   "config.scheme='distill' for that term.")


def _union_of_terms(distillers: Sequence[kd_distillers.WeightedSum]) -> kd_distillers.WeightedSum:
  """Every phase's terms once, by name: the distiller whose `init` builds the run's shared variables."""
  terms: Dict[str, Tuple[str, float, kd_distillers.Distiller]] = {}
  picks: Dict[str, Any] = {}
  for distiller in distillers:
    for name, pick in distiller.teacher_picks:
      picks.setdefault(name, pick)
    for name, weight, term in distiller.terms:
      if name in terms and type(terms[name][2]) is not type(term):
        raise KDJaxError(f"config.phases: term {name!r} is a {type(terms[name][2]).__name__} in one phase and a "
                         f"{type(term).__name__} in another; a name shared by phases shares its parameters, so "
                         "give different distillers different names.")
      terms.setdefault(name, (name, weight, term))
  return kd_distillers.WeightedSum(tuple(terms.values()), tuple(picks.items()))


def _prepared_without_teachers(config, dataset, phases, distillers, workdir):
  """The distillers of a run with no frozen teacher, prepared where the data give them constants of their own:
  a recommender term learns each user's rated items (to draw only unrated ones) under the mutual scheme or
  with no teacher at all (BD, DUET's preference teacher). Other tasks' terms prepare only from teachers."""
  if dataset.task != "rating":
    return distillers
  return [prepare_distiller(d, Teachers(), None, dataset, config, workdir, phase.loss,
                            "prepared.json" if len(phases) == 1 else f"prepared-{phase.name}.json")
          for d, phase in zip(distillers, phases)]


def _teachers_for(config, task, dataset, phases, distillers, networks, sample, workdir, mesh, kernels):
  """Frozen teachers (loaded, optionally cached and calibrated) and the distillers prepared with them."""
  teachers, teacher_variables, report, cache = Teachers(), (), {}, None
  if not any(d.needs_teacher for d in distillers):
    if config.teacher.self:
      raise KDJaxError(f"config.teacher.self={config.teacher.self!r} makes the student its own teacher, but no term "
                       "of config.loss reads a teacher: add a distillation term (e.g. area_rkd) or set "
                       "config.teacher.self=''.")
    return (teachers, teacher_variables, report, cache,
            _prepared_without_teachers(config, dataset, phases, distillers, workdir))
  if config.teacher.self:  # the student's module; its variables live in the train state
    teachers = self_teachers(networks[0][1])
    return teachers, (), report, cache, [
        prepare_distiller(d, teachers, None, dataset, config, workdir, phase.loss,
                          "prepared.json" if len(phases) == 1 else f"prepared-{phase.name}.json")
        for d, phase in zip(distillers, phases)]
  teachers, teacher_variables = load_teachers(config, task.model_kwargs(dataset),
                                              task.teacher_inputs({k: v[:1] for k, v in sample.items()}), kernels)
  for teacher_workdir in teacher_workdirs(config):
    task.check_teacher(read_export_info(teacher_workdir), dataset, teacher_workdir)
  if config.teacher.cache:
    if task.name != "classification":
      raise KDJaxError(f"config.teacher.cache caches image classifiers' outputs; task {task.name!r} runs its "
                       "teachers live: set config.teacher.cache=False.")
    cache = kd_teacher_cache.open_for_run(config, teachers, teacher_variables, dataset, phases, distillers,
                                          networks[0][1], sample, workdir, mesh)
  if config.teacher.calibrate:
    teachers, report = calibrate_teachers(
        teachers, teacher_variables, dataset, config, workdir,
        logits=None if cache is None else kd_teacher_cache.calibration_logits(
            cache, config, teachers, teacher_variables, dataset, workdir, mesh))
  if cache is not None:
    report = dict(report, teacher_cache=cache.report())
  distillers = [prepare_distiller(d, teachers, teacher_variables, dataset, config, workdir, phase.loss,
                                  "prepared.json" if len(phases) == 1 else f"prepared-{phase.name}.json", cache)
                for d, phase in zip(distillers, phases)]
  return teachers, teacher_variables, report, cache, distillers


def check_inputs(config: ml_collections.ConfigDict, mesh: Mesh):
  """The checks of a config that need no data and no files (batch sizes against the mesh, phases,
  distillers and their hyper-parameters): `(phases, each phase's distiller)`; `KDJaxError` on bad input."""
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  phases = kd_phases.resolve_phases(config)
  return phases, [kd_distillers.from_config(phase.loss) for phase in phases]


def build_run(config: ml_collections.ConfigDict, dataset: kd_data.Dataset, workdir: Optional[str] = None, *,
              teachers: Optional[Tuple[Teachers, Any]] = None, mesh: Optional[Mesh] = None) -> Run:
  """Everything the config's steps need: task, networks, teachers, phases, distillers, optimizers, mesh.

  `teachers` (modules and variables) replaces loading them from `config.teacher.workdir` (benchmarks use
  random teachers); `workdir=None` keeps nothing on disk (prepared constants, caches, calibration plots).
  """
  task = kd_tasks.task_for(config, dataset)
  mesh = mesh or sharding.make_mesh()
  phases, distillers = check_inputs(config, mesh)
  if len(dataset.train) < config.batch_size:
    raise KDJaxError(f"batch_size={config.batch_size} exceeds the {len(dataset.train)} training examples.")
  kernels = backends.kernels_for(config)
  networks = create_networks(config, task, dataset, kernels)
  sample = sample_batch(config, dataset)
  steps_per_epoch = kd_data.steps_per_epoch(len(dataset.train), config.batch_size)
  networks = _compressed_networks(config, networks, phases, steps_per_epoch)
  total_steps = phases[-1].steps(steps_per_epoch)[1]
  if config.max_steps:
    total_steps = min(total_steps, config.max_steps)
  if config.scheme == "adversarial" and teacher_workdirs(config):
    # Adversarial distillation from a frozen teacher: its discriminators read the teacher whatever the loss.
    frozen, frozen_variables = load_teachers(config, task.model_kwargs(dataset),
                                             task.teacher_inputs({k: v[:1] for k, v in sample.items()}), kernels)
    teacher_parts = (frozen, frozen_variables, {}, None, distillers)
  elif config.scheme != "distill":
    teacher_parts = (Teachers(), (), {}, None, _prepared_without_teachers(config, dataset, phases, distillers, workdir))
  elif teachers is not None:
    teacher_parts = (teachers[0], teachers[1], {}, None,
                     [prepare_distiller(d, teachers[0], teachers[1], dataset, config, None, p.loss)
                      for d, p in zip(distillers, phases)])
  else:
    teacher_parts = _teachers_for(config, task, dataset, phases, distillers, networks, sample, workdir, mesh,
                                  kernels)
  frozen, frozen_variables, report, cache, distillers = teacher_parts
  frozen_variables = sharding.place_params(frozen_variables, mesh, config.sharding.params,
                                           config.sharding.fsdp_min_size)
  disc, transfers, taps = None, {}, ()
  if config.scheme == "adversarial":
    disc, transfers, taps = _adversarial_modules(config, networks, task, sample, kernels, frozen, frozen_variables)
  run = Run(config=config, dataset=dataset, task=task, models=networks, teachers=frozen,
            teacher_variables=frozen_variables, phases=phases, distillers=tuple(distillers), optimizers=(),
            schedules=(), steps_per_epoch=steps_per_epoch, total_steps=total_steps, mesh=mesh,
            compiler_options=backends.compiler_options_for(config, mesh.devices.flat[0].platform),
            output_cache=cache, teacher_report=report, discriminator=disc, transfers=transfers, taps=taps,
            kernels=kernels)
  if config.scheme == "distill":
    trainable_tree = None
    if any(not set(p.trainable) >= set(kd_phases.ALL_TRAINABLE) for p in phases):
      # A phase that freezes some parameters masks its optimizer by parameter path: trace the state's shapes.
      init = distill.initializer(networks[0][1], _union_of_terms(distillers), optax.identity(), frozen, task,
                                 self_teacher(config))
      shapes = _fitting(config, lambda: jax.eval_shape(init, jax.random.PRNGKey(0), _device_sample(config, dataset),
                                                       frozen_variables))
      trainable_tree = {STUDENT: shapes.params, "distiller": shapes.distiller_params}
    optimizers, schedules = _distill_optimizers(phases, steps_per_epoch, trainable_tree)
  else:
    optimizers, schedules = _network_optimizers(config, steps_per_epoch, total_steps)
  return dataclasses.replace(run, optimizers=optimizers, schedules=schedules)


# ---------------------------------------------------------------------------------------------------
# The state and the steps of a run.


def _fitting(config: ml_collections.ConfigDict, build):
  """`build()`, with a distiller's refusal of these models' outputs (stage index, channel counts, ...) as a
  config error."""
  try:
    return build()
  except KDJaxError:
    raise
  except ValueError as e:
    others = "its teacher(s)" if config.scheme == "distill" else "its peers"
    raise KDJaxError(f"config.loss does not fit the student {config.student.model!r} and {others}: {e}") from e


def _device_sample(config: ml_collections.ConfigDict, dataset: kd_data.Dataset) -> Dict[str, jax.Array]:
  return {k: jnp.asarray(v) for k, v in sample_batch(config, dataset).items()}


def _initial_state(run: Run) -> TrainState:
  """The unplaced initial state. Under 'distill' its optimizer state is a placeholder (`optax.identity`)
  that `with_fresh_optimizer` replaces; the other schemes start with phase 0's optimizers."""
  config = run.config
  rng = jax.random.PRNGKey(config.seed)
  sample = _device_sample(config, run.dataset)
  if config.scheme == "distill":
    return _fitting(config, lambda: distill.create_train_state(
        rng, run.models[0][1], _union_of_terms(run.distillers), optax.identity(), sample, run.teachers,
        run.teacher_variables, task=run.task, self_teacher=self_teacher(config)))
  if config.scheme == "mutual":
    return _fitting(config, lambda: mutual.create_train_state(rng, run.models, run.distillers[0], run.optimizers[0],
                                                              sample, task=run.task))
  return _fitting(config, lambda: adversarial.create_train_state(
      rng, run.models, run.discriminator, run.transfers, run.distillers[0], run.optimizers[0], sample, task=run.task,
      taps=run.taps, teachers=run.teachers, teacher_variables=run.teacher_variables))


def _fresh_optimizer(run: Run, state: TrainState, index: int) -> TrainState:
  if run.scheme == "distill":
    return distill.init_optimizer(state, run.optimizers[index][STUDENT])
  if run.scheme == "adversarial":
    return adversarial.init_optimizer(state, run.optimizers[index], run.taps)
  return mutual.init_optimizer(state, run.optimizers[index])


def state_shardings(run: Run, state: TrainState, index: int) -> Any:
  """Where each leaf of a state with phase `index`'s optimizer lives (the optimizer's structure differs
  between phases)."""
  shapes = jax.eval_shape(lambda s: _fresh_optimizer(run, s, index), state)
  return sharding.state_shardings(shapes, run.mesh, run.config.sharding.params, run.config.sharding.fsdp_min_size)


def with_fresh_optimizer(run: Run, state: TrainState, index: int) -> TrainState:
  """`state` with phase `index`'s new optimizer (each phase starts its own, as the reference codes build a
  new one per phase), placed on the mesh."""
  fresh = jax.jit(lambda s: _fresh_optimizer(run, s, index))(state)
  return jax.device_put(fresh, state_shardings(run, state, index))


def init_state(run: Run) -> TrainState:
  """The initial state, placed on the mesh with phase 0's optimizer."""
  return with_fresh_optimizer(run, _initial_state(run), 0)


def model_variables(run: Run, state: TrainState, name: str = STUDENT) -> Dict[str, Any]:
  """Network `name`'s variables (`{'params', 'batch_stats'}`), as `model.apply` takes them."""
  return SCHEMES[run.scheme].model_variables(state, name)


def _scan_steps(step_fn, state: TrainState, batches: Dict[str, jax.Array], teacher_variables: Any):
  """`step_fn` applied once per leading index of `batches` (k stacked batches) in one program: k steps for
  one dispatch (config.steps_per_call). Returns the final state and the metrics stacked along axis 0."""
  return jax.lax.scan(lambda s, batch: step_fn(s, batch, teacher_variables), state, batches)


def step_function(run: Run, index: int):
  """Phase `index`'s step of the run's scheme with its static arguments bound:
  `(state, batch, teacher_variables) -> (state, metrics)`."""
  config, phase = run.config, run.phases[index]
  streamed = isinstance(run.dataset.train, kd_data.StreamingSplit)  # flipped on the host already
  common = dict(steps_per_epoch=run.steps_per_epoch, crop_pad=config.data.crop_pad,
                flip=config.data.flip and not streamed,
                task=run.task)
  if run.scheme == "distill":
    teachers = run.teachers
    if phase.teacher_batch_statistics:
      teachers = dataclasses.replace(teachers, batch_statistics=(True,) * len(teachers.modules))
    student = run.models[0][1]
    if isinstance(student, CompressedModel):
      student = dataclasses.replace(student, quantize=quantizes_in(config, phase))
    return functools.partial(
        distill.train_step, student=student, teachers=teachers, distiller=run.distillers[index],
        tx=run.optimizers[index][STUDENT], schedule=run.schedules[index], student_train=phase.trains_student,
        phase_start=phase.steps(run.steps_per_epoch)[0],
        teacher_cache=run.output_cache.layout if run.uses_cache(index) else None,
        self_teacher=self_teacher(config), **common)
  if run.scheme == "mutual":
    return functools.partial(mutual.train_step, models=run.models, distiller=run.distillers[index],
                             txs=run.optimizers[index], schedule=run.schedules[index], update=config.mutual_update,
                             **common)
  return functools.partial(adversarial.train_step, models=run.models, discriminator=run.discriminator,
                           transfers=run.transfers, taps=run.taps, teachers=run.teachers,
                           distiller=run.distillers[index], txs=run.optimizers[index], schedule=run.schedules[index],
                           weight=config.discriminators.weight, **common)


def make_step(run: Run, state: TrainState, index: int, per_call: int = 1):
  """Phase `index`'s step jitted over the mesh (state donated and kept in its shardings, metrics
  replicated); with `per_call` > 1 one call runs that many steps over stacked batches."""
  step = step_function(run, index)
  if per_call > 1:
    step = functools.partial(_scan_steps, step)
  return jax.jit(step, out_shardings=(state_shardings(run, state, index), sharding.replicated(run.mesh)),
                 donate_argnums=(0,), compiler_options=run.compiler_options)


def host_batch(run: Run, index: int, step: int, rows: slice) -> Dict[str, np.ndarray]:
  """This process's `rows` of the training batch of global step `step` (a pure function of (seed, step)),
  with the teacher-output cache's rows where phase `index` reads it."""
  indices = kd_data.batch_indices(len(run.dataset.train), run.config.batch_size, seed=run.config.seed,
                                  step=step)[rows]
  batch = run.dataset.train.get(indices)
  if run.uses_cache(index):  # gathered by example, so the batch stays a pure function of (seed, step)
    batch.update(run.output_cache.gather(indices))
  return batch


def host_batches(run: Run, start: int, rows: slice) -> Iterator[Dict[str, np.ndarray]]:
  """This process's `rows` of the training batches of steps `start`, `start + 1`, ..., `run.total_steps - 1`, in
  order; close it when done. Streamed data come from the split's grain workers, decoded ahead
  (`kd_jax.data.streaming.train_batches`); in-memory data are `host_batch` step by step. Either way a batch is a
  pure function of (seed, step), so the stream of a resumed run is the tail of an uninterrupted run's."""
  train = run.dataset.train
  if isinstance(train, kd_data.StreamingSplit):
    return kd_data.streaming.train_batches(train, run.config.batch_size, seed=run.config.seed, start=start,
                                           stop=run.total_steps, rows=rows)
  return (host_batch(run, run.phase_at(step), step, rows) for step in range(start, run.total_steps))
