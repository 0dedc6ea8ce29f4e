"""The train state and the pieces every scheme's step is made of; the evaluation step.

A scheme (`kd_jax.train.schemes`: `distill`, `mutual`, `adversarial`) decides what one training step does;
each is a pure function `(state, batch, teacher_variables) -> (state, metrics)` once its static arguments
are bound, built from the helpers here: `prepare_batch` (split off cached teacher outputs, augment jointly),
`apply_train` (a model in train mode, its BatchNorm statistics returned), `apply_updates` (one optax update
of one parameter group) and `merge`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from kd_jax.errors import KDJaxError
from kd_jax.tasks import Task, get_task
from kd_jax.train.teacher_cache import BATCH_PREFIX

Metrics = Dict[str, jax.Array]
CLASSIFICATION = get_task("classification")


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue bit-exactly from a checkpoint; one structure for every scheme.

  Frozen teachers are not here: their variables are an input of the step, never optimised.

  Attributes:
    step: updates applied so far.
    params: the trained networks' parameters. Under `distill` the student's tree; under the schemes that
      train several networks (`mutual`, `adversarial`) a dict by name ('student', 'peer1', ...; the
      discriminators under 'discriminators').
    batch_stats: their BatchNorm statistics, with the same layout.
    distiller_params: trainable parts of the distillers (regressors, connectors, ...).
    distiller_state: other distiller collections (their BatchNorm statistics, memory banks, ...).
    opt_state: the optimizer state: under `distill` one optimizer over `{'student', 'distiller'}`; under
      the other schemes a dict of one state per optimizer, by name.
    rng: the run's key; each step folds its step number into it.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  distiller_params: Any
  distiller_state: Any
  opt_state: optax.OptState
  rng: jax.Array


INIT_CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_init(init, *args):
  """`init(*args)` jitted once. On CPU compiled with LLVM's optimisations off: an initialiser runs once,
  and optimising it took most of a small run's start-up (docs/benchmarks.md). Draws from a normal
  distribution may then differ from the optimised program's by rounding in the last place."""
  options = INIT_CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
  return jax.jit(init, compiler_options=options)(*args)


def prepare_batch(rng: jax.Array, batch: Dict[str, jax.Array], task: Task, crop_pad: int,
                  flip: bool) -> Tuple[Dict[str, jax.Array], Dict[str, jax.Array]]:
  """`(augmented batch, cached teacher outputs)`: the teacher-output cache's rows (keys under
  `BATCH_PREFIX`) split off, and the rest augmented once by the task so every model sees the same view."""
  cached = {k: v for k, v in batch.items() if k.startswith(BATCH_PREFIX)}
  batch = {k: v for k, v in batch.items() if not k.startswith(BATCH_PREFIX)}
  return task.augment(rng, batch, crop_pad=crop_pad, flip=flip), cached


def apply_train(model: nn.Module, params: Any, batch_stats: Any, inputs: Any, train: bool = True,
                batch_mask: Optional[jax.Array] = None):
  """`(output, new batch_stats)` of `model` in train mode (eval mode, statistics unchanged, if not `train`).

  `batch_mask` ([B] bool, optional): in train mode every BatchNorm computes its batch statistics (and
  updates its running ones) from the rows where it is True only, so the pass equals a forward of that
  subset alone on those rows; the other rows still pass through, normalised with the subset's statistics.
  """
  if batch_mask is not None and train:
    with batch_statistics_over(batch_mask):
      return apply_train(model, params, batch_stats, inputs, train)
  out, updates = model.apply({"params": params, "batch_stats": batch_stats}, inputs, train=train,
                             mutable=["batch_stats"])
  return out, (updates.get("batch_stats", {}) if train else batch_stats)


def batch_statistics_over(batch_mask: jax.Array):
  """A context in which every `nn.BatchNorm` call takes its batch statistics over the rows of `batch_mask`
  ([B] bool) only (Flax's `mask` argument, given through a method interceptor so that no model needs to
  thread it). A static shape stands in for the subset a PyTorch reference forwards on its own."""

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      x = args[0]
      if x.shape[:1] != batch_mask.shape:
        raise KDJaxError(f"batch_mask has {batch_mask.shape[0]} rows but BatchNorm "
                         f"{'/'.join(context.module.path)} normalises an input of shape {x.shape}: the mask "
                         f"must have one entry per example of the batch.")
      kwargs = dict(kwargs, mask=jnp.reshape(batch_mask, (-1,) + (1,) * (x.ndim - 1)))
    return next_fun(*args, **kwargs)

  return nn.intercept_methods(interceptor)


def apply_updates(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any) -> Tuple[Any, Any]:
  """One optax update: `(new params, new optimizer state)`."""
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def merge(old: Any, new: Any) -> Any:
  """`old` with the leaves that `new` updates replaced, so the state keeps one structure across steps."""
  flat = traverse_util.flatten_dict(old)
  flat.update(traverse_util.flatten_dict(new))
  return traverse_util.unflatten_dict(flat)


def learning_rate(schedule: optax.Schedule, step: jax.Array) -> jax.Array:
  return jnp.asarray(schedule(step), jnp.float32)


def eval_step(variables: Any, batch: Dict[str, jax.Array], *, model: nn.Module,
              task: Optional[Task] = None) -> Metrics:
  """The task's sums (not means) over the real examples of a batch (`Task.eval_sums`): for classification
  the correct predictions, the cross-entropy and the count.

  The last batch of a split is padded; `batch['mask']` marks real examples. Summing lets the host add
  batches exactly and divide once.
  """
  task = task or CLASSIFICATION
  out = model.apply(variables, task.inputs(batch), train=False)
  return task.eval_sums(out.prediction, batch)


def predict_step(variables: Any, batch: Dict[str, jax.Array], *, model: nn.Module, task: Task) -> jax.Array:
  """The model's predictions on an evaluation batch (padded rows included; `batch['mask']` marks the real
  ones), for the tasks whose metrics need a whole split's predictions (`Task.split_metrics`)."""
  return model.apply(variables, task.inputs(batch), train=False).prediction
