"""`distill`: frozen teachers, one student, a weighted sum of distillers (offline knowledge distillation).

One step, top to bottom: augment the batch once (teacher and student see the same view), run the frozen
teachers (or read their cached outputs), run the student in train mode, evaluate the distiller on both
outputs, differentiate with respect to the student's and the distiller's parameters, and apply one optax
update to both (the phase's optimizer, masked to its trainable groups).

Two variants, each one branch of the step: with DOT (`optim.name='dot'`) the task and distillation parts of
the loss are differentiated separately (`task_and_distillation_gradients`); with a self teacher
(`config.teacher.self`) the teacher is the student network with the weights kept in
`distiller_state['self_teacher']`, updated after every step (`kd_jax.train.teachers.SelfTeacher`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kd_jax.compression.model import CompressedModel
from kd_jax.data.augment import flip_decisions
from kd_jax.distillers import Context, CrossEntropy, Distiller, Supervised, WeightedSum, split_state
from kd_jax.errors import KDJaxError
from kd_jax.tasks import Task
from kd_jax.train.optim import DotGradients, takes_two_gradients
from kd_jax.train.step import (CLASSIFICATION, Metrics, TrainState, apply_train, apply_updates, jit_init,
                               learning_rate, merge, prepare_batch)
from kd_jax.train.teacher_cache import CacheLayout
from kd_jax.train.teachers import SelfTeacher, Teachers

# Under DOT the parameters only distillation terms reach: the distillers' own (`optim.dot`'s `distillation_only`).
DOT_DISTILLATION_ONLY = {"student": False, "distiller": True}
# The terms whose sum is DOT's task loss; every other term is distillation.
TASK_TERMS = (CrossEntropy, Supervised)
# Where a self teacher's variables live in the train state (beside the distillers' collections).
SELF_TEACHER = "self_teacher"


def initializer(student: nn.Module, distiller: Distiller, tx: optax.GradientTransformation,
                teachers: Teachers = Teachers(), task: Optional[Task] = None,
                self_teacher: Optional[SelfTeacher] = None):
  """The pure `(rng, sample_batch, teacher_variables) -> TrainState` that `create_train_state` jits (also
  what `jax.eval_shape` reads the state's structure from). A self teacher starts as the initial student."""
  task = task or CLASSIFICATION

  def init(rng, sample_batch, teacher_variables):
    student_rng, distiller_rng, state_rng = jax.random.split(rng, 3)
    inputs = task.inputs(sample_batch)
    variables = student.init(student_rng, inputs, train=False)
    student_out = student.apply(variables, inputs, train=False)
    if self_teacher is not None:
      teacher_variables = ({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})},)
    teacher_out = teachers(teacher_variables, task.teacher_inputs(sample_batch)) if distiller.needs_teacher else None
    distiller_params, distiller_state = split_state(
        distiller.init(distiller_rng, student_out, teacher_out, sample_batch))
    if self_teacher is not None:
      distiller_state = dict(distiller_state, **{SELF_TEACHER: teacher_variables[0]})
    trainable = {"student": variables["params"], "distiller": distiller_params}
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"],
        batch_stats=variables.get("batch_stats", {}), distiller_params=distiller_params,
        distiller_state=distiller_state, opt_state=tx.init(trainable), rng=state_rng)

  return init


def create_train_state(rng: jax.Array, student: nn.Module, distiller: Distiller,
                       tx: optax.GradientTransformation, sample_batch: Dict[str, jax.Array],
                       teachers: Teachers = Teachers(), teacher_variables: Any = (), *,
                       task: Optional[Task] = None, self_teacher: Optional[SelfTeacher] = None) -> TrainState:
  """Initialises the student, then the distiller from sample student/teacher outputs (jitted as a whole:
  run eagerly, every parameter initialiser would compile on its own)."""
  return jit_init(initializer(student, distiller, tx, teachers, task, self_teacher), rng, sample_batch,
                  teacher_variables)


def init_optimizer(state: TrainState, tx: optax.GradientTransformation) -> TrainState:
  """`state` with a fresh optimizer state for `tx` (each phase starts its own optimizer)."""
  return state.replace(opt_state=tx.init({"student": state.params, "distiller": state.distiller_params}))


def model_variables(state: TrainState, name: str = "student") -> Dict[str, Any]:
  """The student's variables, as `model.apply` takes them."""
  if name != "student":
    raise KeyError(f"The distill scheme trains only 'student', not {name!r}.")
  return {"params": state.params, "batch_stats": state.batch_stats}


def split_loss(distiller: Distiller, metrics: Metrics) -> Tuple[jax.Array, jax.Array]:
  """`(task, distillation)` = `(Σ_{i ∈ task} w_i·L_i, Σ_{i ∉ task} w_i·L_i)` of a `WeightedSum`, from the
  unweighted term losses it reports as `<term>/loss`; the task terms are the `TASK_TERMS` (`ce`,
  `supervised`), as DOT's reference splits `loss_ce` from `loss_kd` (mdistiller, `mdistiller/engine/trainer.py`,
  class `DOT`)."""
  if not isinstance(distiller, WeightedSum):
    raise KDJaxError("optim.name='dot' needs the loss as a weighted sum of terms (config.loss).")
  task = distillation = jnp.zeros((), jnp.float32)
  for name, weight, term in distiller.terms:
    if isinstance(term, TASK_TERMS):
      task = task + weight * metrics[f"{name}/loss"]
    else:
      distillation = distillation + weight * metrics[f"{name}/loss"]
  return task, distillation


def task_and_distillation_gradients(loss_fn: Callable[[Any], Tuple[jax.Array, Tuple[Any, ...]]], trainable: Any,
                                    distiller: Distiller) -> Tuple[jax.Array, Tuple[Any, ...], DotGradients]:
  """`(loss, aux, DotGradients)` for DOT: one forward pass (`jax.vjp`) and two backward passes through it,
  with cotangents (1, 0) and (0, 1) on `split_loss`'s two parts, as the reference's
  `loss_kd.backward(retain_graph=True)` then `loss_ce.backward()`. `loss_fn(trainable) -> (loss, (metrics,
  ...))`; `loss` is the weighted sum itself, as the step logs it."""

  def parts(trainable):
    loss, aux = loss_fn(trainable)
    return split_loss(distiller, aux[0]), (loss, aux)

  (task, distillation), backward, (loss, aux) = jax.vjp(parts, trainable, has_aux=True)
  one, zero = jnp.ones_like(task), jnp.zeros_like(task)
  grads = DotGradients(task=backward((one, zero))[0], distillation=backward((zero, one))[0])
  metrics = dict(aux[0], **{"dot/task_loss": task, "dot/distillation_loss": distillation})
  return loss, (metrics,) + tuple(aux[1:]), grads


def train_step(state: TrainState, batch: Dict[str, jax.Array], teacher_variables: Any, *,
               student: nn.Module, teachers: Teachers, distiller: Distiller,
               tx: optax.GradientTransformation, schedule: optax.Schedule, steps_per_epoch: int,
               crop_pad: int = 0, flip: bool = False, student_train: bool = True,
               phase_start: int = 0, teacher_cache: Optional[CacheLayout] = None,
               task: Optional[Task] = None,
               self_teacher: Optional[SelfTeacher] = None) -> Tuple[TrainState, Metrics]:
  """One optimisation step; pure, meant to be jitted once with everything after `*` bound.

  `student_train=False` runs the student in eval mode (a phase that freezes it must not move its BatchNorm
  statistics either); `phase_start` is the first global step of the current phase, from which the
  distillers' `ctx.step`/`ctx.epoch` and the schedule count. With `teacher_cache` the batch carries the
  teacher's cached outputs (`kd_jax.train.teacher_cache`, gathered on the host by 'index') and the teacher
  does not run, except inside `ctx.forward`. With `self_teacher` the teacher is `teachers` (the student's
  module) on the variables in `state.distiller_state['self_teacher']`, and `teacher_variables` is unused.
  """
  task = task or CLASSIFICATION
  own_state = {k: v for k, v in state.distiller_state.items() if k != SELF_TEACHER}
  if self_teacher is not None:
    teacher_variables = (state.distiller_state[SELF_TEACHER],)
  step_rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, distiller_rng = jax.random.split(step_rng)
  batch, cached = prepare_batch(augment_rng, batch, task, crop_pad, flip)
  inputs = task.inputs(batch)
  if not distiller.needs_teacher:
    teacher_out = None
  elif teacher_cache is not None:
    if crop_pad:
      raise KDJaxError("The teacher-output cache holds uncropped views only; it cannot serve crop_pad > 0 "
                       "(config.data.crop_pad).")
    # The cache holds both flip views; pick the one the augmentation chose.
    mirror = flip_decisions(augment_rng, inputs.shape[0]) if flip else None
    teacher_out = teacher_cache.outputs(cached, teachers.temperatures, mirror)
  else:
    teacher_out = teachers(teacher_variables, task.teacher_inputs(batch))
  phase_step = state.step - phase_start

  def loss_fn(trainable):
    student_out, batch_stats = apply_train(student, trainable["student"], state.batch_stats, inputs,
                                           student_train)
    # Each extra student pass (ctx.forward) updates the running statistics again, in call order, after the
    # main pass: what every train-mode forward of the PyTorch references does.
    latest_stats = [batch_stats]

    def forward(other_inputs, mask=None):
      student_view, teacher_view = task.views(other_inputs)
      other_out, latest_stats[0] = apply_train(student, trainable["student"], latest_stats[0], student_view,
                                               student_train, mask)
      return other_out, teachers(teacher_variables, teacher_view)

    ctx = Context(rng=distiller_rng, train=True, step=phase_step, epoch=phase_step // steps_per_epoch + 1,
                  forward=forward, task=task, kernels=getattr(student, "kernels", None))
    loss, metrics, new_distiller_state = distiller.loss(
        {"params": trainable["distiller"], **own_state}, student_out, teacher_out, batch, ctx)
    return loss, (metrics, latest_stats[0], new_distiller_state, student_out.prediction)

  trainable = {"student": state.params, "distiller": state.distiller_params}
  if takes_two_gradients(tx):  # DOT: the task and distillation gradients, each with its own momentum
    loss, (metrics, batch_stats, distiller_state, prediction), grads = task_and_distillation_gradients(
        loss_fn, trainable, distiller)
  else:
    (loss, (metrics, batch_stats, distiller_state, prediction)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(trainable)
  trainable, opt_state = apply_updates(tx, grads, state.opt_state, trainable)
  if isinstance(student, CompressedModel):  # pruned weights back to zero; the schedule's next masks
    trainable["student"], batch_stats = student.after_update(trainable["student"], batch_stats, state.step)
  distiller_state = merge(own_state, distiller_state)
  if self_teacher is not None:
    distiller_state[SELF_TEACHER] = self_teacher.update(
        state.distiller_state[SELF_TEACHER], {"params": trainable["student"], "batch_stats": batch_stats},
        state.step + 1)
  new_state = state.replace(
      step=state.step + 1, params=trainable["student"], batch_stats=batch_stats,
      distiller_params=trainable["distiller"], distiller_state=distiller_state, opt_state=opt_state)
  metrics = dict(metrics, loss=loss, lr=learning_rate(schedule, phase_step),
                 **task.train_metrics(prediction, batch))
  return new_state, metrics
