"""Optimizers and learning-rate schedules, expressed in epochs and converted to steps."""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import ml_collections
import optax

from kd_jax.errors import KDJaxError


def with_overrides(optim: ml_collections.ConfigDict, overrides: Optional[Mapping[str, Any]],
                   where: str = "optim overrides") -> ml_collections.ConfigDict:
  """A copy of `optim` with `overrides` (a phase's, a network's, the discriminators') applied; an unknown key
  raises `KDJaxError` naming `where` and listing the valid keys."""
  merged = ml_collections.ConfigDict(optim.to_dict())
  for key, value in dict(overrides or {}).items():
    if key not in merged:
      raise KDJaxError(f"{where}: unknown optim key {key!r}. Valid keys: {', '.join(sorted(merged.keys()))}.")
    merged[key] = tuple(value) if isinstance(value, list) else value
  return merged


def learning_rate_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int,
                           total_steps: int) -> optax.Schedule:
  """The lr as a function of the step.

  - multistep: `lr · gamma^k` after the k-th milestone epoch (the CIFAR KD papers: ×0.1 at 150/180/210).
  - cosine: `lr · ½(1 + cos(π t / total))`, decaying to 0 at the last step.
  - constant.
  A linear warm-up from 0 over `warmup_epochs` precedes any of them.
  """
  warmup = int(optim.warmup_epochs * steps_per_epoch)
  if optim.schedule == "multistep":
    boundaries = {int(m * steps_per_epoch): optim.gamma for m in optim.milestones}
    main = optax.piecewise_constant_schedule(optim.lr, boundaries)
  elif optim.schedule == "cosine":
    main = optax.cosine_decay_schedule(optim.lr, max(total_steps - warmup, 1))
  else:
    main = optax.constant_schedule(optim.lr)
  if warmup <= 0:
    return main
  ramp = optax.linear_schedule(0.0, optim.lr, warmup)
  if optim.schedule == "multistep":
    # Milestones are absolute epochs, so the main schedule keeps counting from step 0.
    return lambda step: jnp.where(step < warmup, ramp(step), main(step))
  return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(optim: ml_collections.ConfigDict, schedule: optax.Schedule,
                   distillation_only: Any = None) -> optax.GradientTransformation:
  """SGD (momentum, optional Nesterov) with PyTorch-style coupled weight decay, DOT, or AdamW.

  'dot' is `dot(schedule, optim.momentum, optim.dot_delta, optim.weight_decay, distillation_only)`: its
  `update` takes `DotGradients`, and `distillation_only` marks the parameters only distillation terms reach
  (see `dot`); the other optimizers ignore it.
  """
  if optim.name == "dot":
    return dot(schedule, optim.momentum, optim.dot_delta, optim.weight_decay, distillation_only)
  if optim.name == "sgd":
    return optax.chain(
        optax.add_decayed_weights(optim.weight_decay),  # g += wd·θ before momentum, as torch.optim.SGD
        optax.sgd(schedule, momentum=optim.momentum or None, nesterov=optim.nesterov),
    )
  return optax.adamw(schedule, weight_decay=optim.weight_decay)


# ---------------------------------------------------------------------------------------------------
# DOT: separate momenta for the task and the distillation gradients.


class DotGradients(NamedTuple):
  """The two gradients DOT's `update` takes, each a tree shaped like the parameters: of the task loss (the
  supervised terms) and of the distillation loss (every other term)."""

  task: Any
  distillation: Any


class DotState(NamedTuple):
  """DOT's state: updates applied so far (the schedule's step) and the two momentum buffers."""

  count: jax.Array
  task_momentum: Any
  distillation_momentum: Any


class DotTransformation(optax.GradientTransformation):
  """An optax transformation whose `update` takes `DotGradients` instead of one gradient tree (how the
  train step knows to differentiate the two parts of the loss separately: `takes_two_gradients`)."""

  __slots__ = ()


def takes_two_gradients(tx: optax.GradientTransformation) -> bool:
  """True for DOT (`update` takes `DotGradients`), False for optimizers that take one gradient tree."""
  return isinstance(tx, DotTransformation)


def _flags(prefix: Any, params: Any) -> Any:
  """A tree of booleans shaped like `params` from `prefix`, a tree of booleans that is a prefix of it."""
  if prefix is None:
    return jax.tree.map(lambda _: False, params)
  return jax.tree.map(lambda flag, sub: jax.tree.map(lambda _: bool(flag), sub), prefix, params)


def dot(learning_rate: Union[float, optax.Schedule], momentum: float, delta: float, weight_decay: float = 0.0,
        distillation_only: Any = None) -> optax.GradientTransformation:
  """DOT, the Distillation-Oriented Trainer: SGD with one momentum buffer per loss part.

  Zhao, Cui, Song, Liang, "DOT: A Distillation-Oriented Trainer", ICCV 2023, arXiv:2307.08436; reference code
  megvii-research/mdistiller, `mdistiller/engine/dot.py` (the optimizer) and the `DOT` trainer of
  `mdistiller/engine/trainer.py` (β = SOLVER.MOMENTUM, Δ = SOLVER.DOT.DELTA, default 0.075). With `g_t`, `g_d`
  the task and distillation gradients of a parameter θ, lr η and weight decay λ, a parameter both reach
  (the student's) updates as

      b_t ← (β − Δ)·b_t + g_t + λ·θ        (the task buffer, with the weight decay)
      b_d ← (β + Δ)·b_d + g_d              (the distillation buffer: the larger momentum)
      θ   ← θ − η·b_t − η·b_d

  and a parameter only distillation terms reach (`distillation_only`: a distiller's regressor, connector,
  ...; the reference sees no task gradient for it) as

      b_d ← β·b_d + g_d + λ'·θ,   θ ← θ − η·b_d,   λ' = 0 at the first update, λ after

  as the reference: one buffer with the mean momentum ((β − Δ) + (β + Δ))/2 = β, weight decay added to it,
  except at the first update, where the reference copies the gradient alone into the new buffer. Buffers
  start at zero (the reference's first-update copy `b = g` is the same). No dampening, no Nesterov (the
  reference has neither). With Δ = 0 and `g_t + g_d` the total gradient it is SGD with momentum β and coupled
  weight decay (`make_optimizer` with name 'sgd').

  The reference decides per step which parameters have a task or distillation gradient (`grad is None`);
  here the split is static: every parameter gets both buffers except the `distillation_only` ones. A student
  parameter that no distillation term reaches (FitNet's layers after its hint, say) therefore gets a zero
  distillation gradient and task momentum β − Δ, where the reference would give it β; under logit
  distillation (what DOT's experiments use) every student parameter gets both gradients, as here.

  Args:
    learning_rate: η, a float or a schedule of the update count.
    momentum: β.
    delta: Δ; both β − Δ and β + Δ must lie in [0, 1).
    weight_decay: λ, coupled (added to the gradient, as torch.optim.SGD).
    distillation_only: a tree of booleans, a prefix of the parameters (e.g. `{'student': False,
      'distiller': True}`), True where only distillation terms reach; None = no such parameter.
  """
  task_m, distill_m = momentum - delta, momentum + delta
  if not (0.0 <= task_m < 1.0 and 0.0 <= distill_m < 1.0):
    raise KDJaxError(f"DOT needs both momenta in [0, 1): optim.momentum - optim.dot_delta = {task_m:g} and "
                     f"optim.momentum + optim.dot_delta = {distill_m:g}. Lower optim.dot_delta (the reference uses "
                     "0.075 with momentum 0.9).")
  lr = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)

  def init(params):
    return DotState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params),
                    jax.tree.map(jnp.zeros_like, params))

  def update(grads: DotGradients, state: DotState, params=None):
    if params is None:
      raise ValueError("DOT adds weight decay to its buffers: call update(grads, state, params).")
    treedef = jax.tree.structure(params)
    leaves = lambda tree: treedef.flatten_up_to(tree)
    step_lr = jnp.asarray(lr(state.count), jnp.float32)
    # The reference adds no weight decay to a distillation-only parameter's first update.
    only_decay = jnp.where(state.count == 0, 0.0, weight_decay)
    updates, task_bufs, distill_bufs = [], [], []
    for only, g_t, g_d, b_t, b_d, p in zip(leaves(_flags(distillation_only, params)), leaves(grads.task),
                                           leaves(grads.distillation), leaves(state.task_momentum),
                                           leaves(state.distillation_momentum), leaves(params)):
      if only:
        b_d = momentum * b_d + g_d + (only_decay * p).astype(p.dtype)
        updates.append(-step_lr * b_d)
      else:
        b_t = task_m * b_t + g_t + weight_decay * p
        b_d = distill_m * b_d + g_d
        updates.append(-step_lr * b_t - step_lr * b_d)
      task_bufs.append(b_t)
      distill_bufs.append(b_d)
    unflatten = treedef.unflatten
    new_state = DotState(state.count + 1, unflatten(task_bufs), unflatten(distill_bufs))
    return unflatten([u.astype(p.dtype) for u, p in zip(updates, leaves(params))]), new_state

  return DotTransformation(init, update)
