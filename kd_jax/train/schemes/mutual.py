"""`mutual`: K networks trained together, each distilling from the others (online distillation).

Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018, arXiv:1706.00384;
reference code YingZhangDUT/Deep-Mutual-Learning, TensorFlow, `train_models.py`): network k minimises

    L_k = CE(z_k, y) + 1/(K−1) · Σ_{j≠k} KL(p_j ‖ p_k)

with the other networks' predictions p_j treated as constants. Here the per-pair objective is the run's
weighted sum of distillers with the other network as the teacher, averaged over the K−1 others:
`L_k = 1/(K−1) · Σ_{j≠k} loss(out_k, stop_gradient(out_j))`; DML is `ce` + `kd` at T = 1 (`kd`'s T² factor
is then 1), and any teacher-reading distiller without trainable parts (DIST, DKD, ...) can replace `kd`.
Terms that read no teacher (`ce`) have the same value for every pair, so they count once.

`update='sequential'` (the default) follows the paper's Algorithm 1 and the reference code: the networks
are updated one after another within a step, each against the others' predictions at their current
parameters, so network 2 sees network 1's prediction after network 1's update. Every network runs in train
mode; a network's BatchNorm statistics move only with its own update, as the reference's per-network update
ops do. (The reference's input queue also hands each network's update its own batch; here all updates of a
step read the same batch.) `update='simultaneous'` computes every loss from one forward pass and applies all
updates together, as many re-implementations do. Each network has its own optimizer
(`config.student.optim`, `config.peers[i].optim`).

Each network runs forward once with its VJP kept; a network's prediction is recomputed (without gradient)
after its update only where a later network reads it, so a sequential step costs 2K − 1 forward passes.

Distillers that score inputs beyond the batch (BD, `kd_jax.distillers.recommender`, on sampled items) get
`ctx.forward`: network k on those inputs with gradient, the other network detached at its current parameters
(after its update, in a sequential step); network k's gradient then also flows through that extra pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kd_jax.distillers import Context, Distiller
from kd_jax.errors import KDJaxError
from kd_jax.tasks import Task
from kd_jax.compression.model import CompressedModel
from kd_jax.train.step import Metrics, TrainState, apply_train, apply_updates, jit_init, learning_rate, prepare_batch

Models = Tuple[Tuple[str, nn.Module], ...]


def check_distiller(distiller: Distiller, variables: Dict[str, Any]) -> None:
  """Peers share one distiller; trainable distiller parts would need one copy per ordered pair."""
  if jax.tree.leaves(variables):
    raise KDJaxError("config.scheme='mutual' trains the networks with distillers that own no parameters or "
                     "state (ce, kd, dkd, dist, ls_kd, ...); config.loss has terms that do: "
                     f"{', '.join(sorted(variables.get('params', {})) or sorted(variables))}.")


def init_networks(keys: Sequence[jax.Array], models: Models, inputs: Any):
  """`(params, batch_stats, outputs)`: each network initialised from its key (the k-th for network k) and
  applied once in eval mode to `inputs`."""
  params, batch_stats, outs = {}, {}, []
  for key, (name, model) in zip(keys, models):
    variables = model.init(key, inputs, train=False)
    params[name], batch_stats[name] = variables["params"], variables.get("batch_stats", {})
    outs.append(model.apply(variables, inputs, train=False))
  return params, batch_stats, outs


def create_train_state(rng: jax.Array, models: Models, distiller: Distiller,
                       txs: Dict[str, optax.GradientTransformation], sample_batch: Dict[str, jax.Array], *,
                       task: Task) -> TrainState:
  """Every network initialised from its own key (network k from the k-th of K+1 keys; the last seeds the
  steps), each with its own optimizer state."""

  def init(rng, sample_batch):
    keys = jax.random.split(rng, len(models) + 1)
    params, batch_stats, outs = init_networks(keys, models, task.inputs(sample_batch))
    check_distiller(distiller, distiller.init(keys[-1], outs[0], outs[1], sample_batch))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      distiller_params={}, distiller_state={},
                      opt_state={name: txs[name].init(params[name]) for name, _ in models}, rng=keys[-1])

  return jit_init(init, rng, sample_batch)


def init_optimizer(state: TrainState, txs: Dict[str, optax.GradientTransformation]) -> TrainState:
  return state.replace(opt_state={name: tx.init(state.params[name]) for name, tx in txs.items()})


def model_variables(state: TrainState, name: str) -> Dict[str, Any]:
  return {"params": state.params[name], "batch_stats": state.batch_stats[name]}


def peer_losses(distiller: Distiller, outs: Sequence[Any], batch: Dict[str, jax.Array], ctx: Context):
  """`(L_k, metrics_k)` for every network k: the distiller with each other network as the (detached)
  teacher, averaged over them."""
  return [network_loss(distiller, outs, k, batch, ctx) for k in range(len(outs))]


def network_loss(distiller: Distiller, outs: Sequence[Any], k: int, batch: Dict[str, jax.Array], ctx: Context,
                 forwards: Optional[Sequence[Any]] = None):
  """`(L_k, metrics)`: network k's output against every other output of `outs` (detached), averaged.

  `forwards[j]` (optional) is the pair's `ctx.forward`: network k (with gradient) and network j (detached) on
  other inputs, for distillers that score more than the batch (a recommender's sampled items)."""
  values, metrics = [], []
  others = [(j, jax.lax.stop_gradient(o)) for j, o in enumerate(outs) if j != k]
  for n, (j, other) in enumerate(others):
    pair_ctx = ctx if ctx.rng is None else dataclasses.replace(
        ctx, rng=jax.random.fold_in(ctx.rng, k * len(outs) + n), forward=None)
    if forwards is not None:
      pair_ctx = dataclasses.replace(pair_ctx, forward=forwards[j])
    value, m, _ = distiller.loss({}, outs[k], other, batch, pair_ctx)
    values.append(value)
    metrics.append(m)
  mean = lambda xs: sum(xs) / len(xs)
  return mean(values), jax.tree.map(lambda *xs: mean(xs), *metrics)


def pair_forwards(models: Models, k: int, own_params: Any, params: Dict[str, Any], batch_stats: Dict[str, Any]):
  """For network k: `forwards[j](inputs) -> (network k's output with gradient through own_params,
  network j's output at params[j], detached)`, both in train mode with their statistics discarded."""
  name_k, model_k = models[k]

  def forward(j):
    name_j, model_j = models[j]

    def run(inputs, mask=None):
      out, _ = apply_train(model_k, own_params, batch_stats[name_k], inputs, batch_mask=mask)
      other, _ = apply_train(model_j, params[name_j], batch_stats[name_j], inputs, batch_mask=mask)
      return out, jax.lax.stop_gradient(other)

    return run

  return [forward(j) for j in range(len(models))]


UPDATES = ("sequential", "simultaneous")


def train_step(state: TrainState, batch: Dict[str, jax.Array], teacher_variables: Any = (), *,
               models: Models, distiller: Distiller, txs: Dict[str, optax.GradientTransformation],
               schedule: optax.Schedule, steps_per_epoch: int, task: Task, crop_pad: int = 0,
               flip: bool = False, update: str = "sequential") -> Tuple[TrainState, Metrics]:
  """One step of every network (see the module docstring); `teacher_variables` is unused (no frozen
  teachers). Metrics: `loss` (the sum over networks) and, per network, `<name>/loss`, `<name>/<term>/...`
  and the task's training metrics."""
  del teacher_variables
  if update not in UPDATES:
    raise KDJaxError(f"mutual update must be one of {', '.join(UPDATES)}, got {update!r}.")
  step_rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, distiller_rng = jax.random.split(step_rng)
  batch, _ = prepare_batch(augment_rng, batch, task, crop_pad, flip)
  inputs = task.inputs(batch)
  ctx = Context(rng=distiller_rng, train=True, step=state.step, epoch=state.step // steps_per_epoch + 1,
                task=task, kernels=getattr(models[0][1], "kernels", None))
  names = [name for name, _ in models]

  # Every network once, in train mode, keeping what its own gradient needs.
  outs, pullbacks, batch_stats = [], [], {}
  for name, model in models:
    out, pullback, batch_stats[name] = jax.vjp(
        lambda p, model=model, name=name: apply_train(model, p, state.batch_stats[name], inputs),
        state.params[name], has_aux=True)
    outs.append(out)
    pullbacks.append(pullback)

  params, opt_state, results = {}, {}, []
  for k, name in enumerate(names):
    # The others at their current parameters (those updated earlier in a sequential step: after the update).
    current = {n: params.get(n, state.params[n]) if update == "sequential" else state.params[n] for n in names}

    def loss_k(out, own_params, k=k):
      forwards = pair_forwards(models, k, own_params, current, state.batch_stats)
      return network_loss(distiller, outs[:k] + [out] + outs[k + 1:], k, batch, ctx, forwards)

    # Gradients through the output (pulled back through the kept VJP) and, for terms that call ctx.forward,
    # directly through the parameters (zero otherwise).
    (value, term_metrics), (out_grad, forward_grads) = jax.value_and_grad(loss_k, argnums=(0, 1), has_aux=True)(
        outs[k], state.params[name])
    (grads,) = pullbacks[k](out_grad)
    grads = jax.tree.map(jnp.add, grads, forward_grads)
    params[name], opt_state[name] = apply_updates(txs[name], grads, state.opt_state[name], state.params[name])
    if isinstance(models[k][1], CompressedModel):  # pruned weights back to zero; the schedule's next masks
      params[name], batch_stats[name] = models[k][1].after_update(params[name], batch_stats[name], state.step)
    results.append((value, term_metrics, outs[k].prediction))
    if update == "sequential" and k + 1 < len(names):
      # The networks after this one learn from its prediction after its update (statistics not kept).
      outs[k], _ = apply_train(dict(models)[name], params[name], state.batch_stats[name], inputs)

  metrics: Metrics = {"loss": sum(value for value, _, _ in results), "lr": learning_rate(schedule, state.step)}
  for name, (value, term_metrics, prediction) in zip(names, results):
    metrics[f"{name}/loss"] = value
    metrics.update({f"{name}/{k}": v for k, v in term_metrics.items()})
    metrics.update({f"{name}/{k}": v for k, v in task.train_metrics(prediction, batch).items()})
  return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state), metrics
