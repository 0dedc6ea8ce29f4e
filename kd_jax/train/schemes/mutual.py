"""`mutual`: K networks trained together, each distilling from the others (online distillation).

Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018, arXiv:1706.00384;
reference code YingZhangDUT/Deep-Mutual-Learning, TensorFlow): network k minimises

    L_k = CE(z_k, y) + 1/(K−1) · Σ_{j≠k} KL(p_j ‖ p_k)

with the peers' predictions p_j treated as constants. Here the per-pair objective is the run's weighted
sum of distillers with the peer as the teacher, averaged over the K−1 peers:
`L_k = 1/(K−1) · Σ_{j≠k} loss(out_k, stop_gradient(out_j))`; DML is `ce` + `kd` at T = 1 (`kd`'s T² factor
is then 1), and any teacher-reading distiller without trainable parts (DIST, DKD, ...) can replace `kd`.
Terms that read no teacher (`ce`) have the same value for every peer, so they count once.

Every network is run once per step, in train mode, on the same augmented batch; all K losses come from
that one forward pass and each network takes one update of its own optimizer (`config.student.optim`,
`config.peers[i].optim`). The paper's Algorithm 1 updates the networks one after another, recomputing the
predictions in between; the reference code computes every loss from one forward pass and applies all
updates together, as this does.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kd_jax.distillers import Context, Distiller
from kd_jax.errors import KDJaxError
from kd_jax.tasks import Task
from kd_jax.train.step import Metrics, TrainState, apply_train, apply_updates, jit_init, learning_rate, prepare_batch

Models = Tuple[Tuple[str, nn.Module], ...]


def check_distiller(distiller: Distiller, variables: Dict[str, Any]) -> None:
  """Peers share one distiller; trainable distiller parts would need one copy per ordered pair."""
  if jax.tree.leaves(variables):
    raise KDJaxError("config.scheme='mutual' trains the networks with distillers that own no parameters or "
                     "state (ce, kd, dkd, dist, ls_kd, ...); config.loss has terms that do: "
                     f"{', '.join(sorted(variables.get('params', {})) or sorted(variables))}.")


def create_train_state(rng: jax.Array, models: Models, distiller: Distiller,
                       txs: Dict[str, optax.GradientTransformation], sample_batch: Dict[str, jax.Array], *,
                       task: Task) -> TrainState:
  """Every network initialised from its own key (network k from the k-th of K+1 keys; the last seeds the
  steps), each with its own optimizer state."""

  def init(rng, sample_batch):
    keys = jax.random.split(rng, len(models) + 1)
    inputs = task.inputs(sample_batch)
    params, batch_stats, outs = {}, {}, []
    for key, (name, model) in zip(keys, models):
      variables = model.init(key, inputs, train=False)
      params[name], batch_stats[name] = variables["params"], variables.get("batch_stats", {})
      outs.append(model.apply(variables, inputs, train=False))
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
  results = []
  for k, out in enumerate(outs):
    peers = [jax.lax.stop_gradient(o) for j, o in enumerate(outs) if j != k]
    values, metrics = [], []
    for j, peer in enumerate(peers):
      pair_ctx = ctx if ctx.rng is None else Context(jax.random.fold_in(ctx.rng, k * len(outs) + j), ctx.train,
                                                      ctx.step, ctx.epoch, None, ctx.task)
      value, m, _ = distiller.loss({}, out, peer, batch, pair_ctx)
      values.append(value)
      metrics.append(m)
    mean = lambda xs: sum(xs) / len(xs)
    results.append((mean(values), jax.tree.map(lambda *xs: mean(xs), *metrics)))
  return results


def train_step(state: TrainState, batch: Dict[str, jax.Array], teacher_variables: Any = (), *,
               models: Models, distiller: Distiller, txs: Dict[str, optax.GradientTransformation],
               schedule: optax.Schedule, steps_per_epoch: int, task: Task, crop_pad: int = 0,
               flip: bool = False) -> Tuple[TrainState, Metrics]:
  """One step of every network (see the module docstring); `teacher_variables` is unused (no frozen
  teachers). Metrics: `loss` (the sum over networks) and, per network, `<name>/loss`, `<name>/<term>/...`
  and the task's training metrics."""
  del teacher_variables
  step_rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, distiller_rng = jax.random.split(step_rng)
  batch, _ = prepare_batch(augment_rng, batch, task, crop_pad, flip)
  inputs = task.inputs(batch)
  ctx = Context(rng=distiller_rng, train=True, step=state.step, epoch=state.step // steps_per_epoch + 1,
                task=task)
  names = [name for name, _ in models]

  def total_loss(params):
    outs, batch_stats = [], {}
    for name, model in models:
      out, batch_stats[name] = apply_train(model, params[name], state.batch_stats[name], inputs)
      outs.append(out)
    losses = peer_losses(distiller, outs, batch, ctx)
    # The peers are constants inside each L_k, so the gradient of the sum with respect to network k's
    # parameters is the gradient of L_k alone.
    return sum(value for value, _ in losses), (losses, batch_stats, [o.prediction for o in outs])

  grads, (losses, batch_stats, predictions) = jax.grad(total_loss, has_aux=True)(state.params)
  params, opt_state = {}, {}
  for name in names:
    params[name], opt_state[name] = apply_updates(txs[name], grads[name], state.opt_state[name],
                                                  state.params[name])
  metrics: Metrics = {"loss": sum(value for value, _ in losses), "lr": learning_rate(schedule, state.step)}
  for name, (value, term_metrics), prediction in zip(names, losses, predictions):
    metrics[f"{name}/loss"] = value
    metrics.update({f"{name}/{k}": v for k, v in term_metrics.items()})
    metrics.update({f"{name}/{k}": v for k, v in task.train_metrics(prediction, batch).items()})
  return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state), metrics
