"""The train state and the pure train/eval steps.

One training step, top to bottom: augment the batch once (teacher and student see the same view), run the
frozen teacher, run the student in train mode, evaluate the distiller on both outputs, differentiate with
respect to the student's and the distiller's parameters, apply the optax update.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from kd_jax.data import augment
from kd_jax.data.augment import flip_decisions
from kd_jax.distillers import Context, Distiller, split_state
from kd_jax.errors import KDJaxError
from kd_jax.train.teacher_cache import BATCH_PREFIX, CacheLayout
from kd_jax.train.teachers import Teachers

Metrics = Dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue bit-exactly from a checkpoint.

  The teacher is not here: its variables are an input of the step, never optimised.
  """

  step: jax.Array
  params: Any              # student parameters
  batch_stats: Any         # student BatchNorm statistics
  distiller_params: Any    # trainable parts of the distillers (regressors, connectors, ...)
  distiller_state: Any     # other distiller collections (their BatchNorm statistics, memory banks, ...)
  opt_state: optax.OptState
  rng: jax.Array


INIT_CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def create_train_state(rng: jax.Array, student: nn.Module, distiller: Distiller,
                       tx: optax.GradientTransformation, sample_batch: Dict[str, jax.Array],
                       teachers: Teachers = Teachers(), teacher_variables: Any = ()) -> TrainState:
  """Initialises the student, then the distiller from sample student/teacher outputs.

  Jitted as a whole: run eagerly, every parameter initialiser would compile on its own (seconds each). On
  CPU the program is compiled with LLVM's optimisations off (`INIT_CPU_COMPILER_OPTIONS`): it runs once,
  and optimising it took most of a small run's start-up (compile time at XLA's default level and at level
  0: cnn_tiny 2.4 and 0.4 s, resnet8x4 5.1 and 1.1 s, 2-core AMD EPYC). Draws from a normal distribution
  may then differ from the optimised program's by rounding: a few units in the last place in some
  elements (4% of resnet8x4's, at most 3 ulp).
  """

  def init(rng, sample_batch, teacher_variables):
    student_rng, distiller_rng, state_rng = jax.random.split(rng, 3)
    images = sample_batch["image"]
    variables = student.init(student_rng, images, train=False)
    student_out = student.apply(variables, images, train=False)
    teacher_out = teachers(teacher_variables, images) if distiller.needs_teacher else None
    distiller_params, distiller_state = split_state(
        distiller.init(distiller_rng, student_out, teacher_out, sample_batch))
    trainable = {"student": variables["params"], "distiller": distiller_params}
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"],
        batch_stats=variables.get("batch_stats", {}), distiller_params=distiller_params,
        distiller_state=distiller_state, opt_state=tx.init(trainable), rng=state_rng)

  options = INIT_CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
  return jax.jit(init, compiler_options=options)(rng, sample_batch, teacher_variables)


def train_step(state: TrainState, batch: Dict[str, jax.Array], teacher_variables: Any, *,
               student: nn.Module, teachers: Teachers, distiller: Distiller,
               tx: optax.GradientTransformation, schedule: optax.Schedule, steps_per_epoch: int,
               crop_pad: int = 0, flip: bool = False, student_train: bool = True,
               phase_start: int = 0, teacher_cache: Optional[CacheLayout] = None) -> Tuple[TrainState, Metrics]:
  """One optimisation step; pure, meant to be jitted once with everything after `*` bound.

  `student_train=False` runs the student in eval mode (a phase that freezes it must not move its BatchNorm
  statistics either); `phase_start` is the first global step of the current phase, from which the
  distillers' `ctx.step`/`ctx.epoch` and the schedule count. With `teacher_cache` the batch carries the
  teacher's cached outputs (`kd_jax.train.teacher_cache`, gathered on the host by 'index') and the teacher
  does not run, except inside `ctx.forward`.
  """
  step_rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, distiller_rng = jax.random.split(step_rng)
  cached = {k: v for k, v in batch.items() if k.startswith(BATCH_PREFIX)}
  batch = {k: v for k, v in batch.items() if not k.startswith(BATCH_PREFIX)}
  images = batch["image"]
  if crop_pad or flip:
    images = augment(augment_rng, images, pad=crop_pad, flip=flip)
  if not distiller.needs_teacher:
    teacher_out = None
  elif teacher_cache is not None:
    if crop_pad:
      raise KDJaxError("The teacher-output cache holds uncropped views only; it cannot serve crop_pad > 0 "
                       "(config.data.crop_pad).")
    # The cache holds both flip views; pick the one `augment` chose.
    mirror = flip_decisions(augment_rng, images.shape[0]) if flip else None
    teacher_out = teacher_cache.outputs(cached, teachers.temperatures, mirror)
  else:
    teacher_out = teachers(teacher_variables, images)
  phase_step = state.step - phase_start
  batch = dict(batch, image=images)  # distillers see the view the models saw

  def loss_fn(trainable):
    student_variables = {"params": trainable["student"], "batch_stats": state.batch_stats}
    student_out, new_student = student.apply(student_variables, images, train=student_train,
                                             mutable=["batch_stats"])

    def forward(other_images):
      other_out, _ = student.apply(student_variables, other_images, train=student_train, mutable=["batch_stats"])
      return other_out, teachers(teacher_variables, other_images)

    ctx = Context(rng=distiller_rng, train=True, step=phase_step, epoch=phase_step // steps_per_epoch + 1,
                  forward=forward)
    loss, metrics, new_distiller_state = distiller.loss(
        {"params": trainable["distiller"], **state.distiller_state}, student_out, teacher_out, batch, ctx)
    batch_stats = new_student.get("batch_stats", {}) if student_train else state.batch_stats
    return loss, (metrics, batch_stats, new_distiller_state, student_out.logits)

  trainable = {"student": state.params, "distiller": state.distiller_params}
  (loss, (metrics, batch_stats, distiller_state, logits)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(trainable)
  updates, opt_state = tx.update(grads, state.opt_state, trainable)
  trainable = optax.apply_updates(trainable, updates)
  new_state = state.replace(
      step=state.step + 1, params=trainable["student"], batch_stats=batch_stats,
      distiller_params=trainable["distiller"],
      distiller_state=_merge(state.distiller_state, distiller_state), opt_state=opt_state)
  metrics = dict(metrics, loss=loss, lr=jnp.asarray(schedule(phase_step), jnp.float32),
                 accuracy=jnp.mean(jnp.argmax(logits, -1) == batch["label"]))
  return new_state, metrics


def _merge(old: Any, new: Any) -> Any:
  """`old` with the leaves that `new` updates replaced, so the state keeps one structure across steps."""
  flat = traverse_util.flatten_dict(old)
  flat.update(traverse_util.flatten_dict(new))
  return traverse_util.unflatten_dict(flat)


def eval_step(variables: Any, batch: Dict[str, jax.Array], *, model: nn.Module) -> Metrics:
  """Sums (not means) of correct predictions, cross-entropy and counts over the real examples of a batch.

  The last batch of a split is padded; `batch['mask']` marks real examples. Summing lets the host add
  batches exactly and divide once.
  """
  out = model.apply(variables, batch["image"], train=False)
  mask = batch["mask"]
  log_p = jax.nn.log_softmax(out.logits.astype(jnp.float32))
  nll = -jnp.take_along_axis(log_p, batch["label"][:, None], axis=-1)[:, 0]
  return {"correct": jnp.sum((jnp.argmax(out.logits, -1) == batch["label"]) * mask),
          "nll": jnp.sum(nll * mask), "count": jnp.sum(mask)}
