"""`adversarial`: online distillation with feature-map discriminators (AFD).

Chung, Park, Kim & Kwak, "Feature-map-level Online Adversarial Knowledge Distillation", ICML 2020
(arXiv:2002.01775; no official code was released). K networks train together from scratch. Network k has
a discriminator D_k that reads last-stage feature maps (before pooling) and labels network k's own map
fake and its partner's map real; network k learns to fool D_k, and so learns the distribution of its
partner's maps rather than matching them point by point. The partners form a one-way ring (the paper's
cyclic learning, which needs K discriminators for K networks): network k's partner is network k−1, so
for K = 2 each network is the other's partner and for K = 3 knowledge flows 1→2→3→1.

With F_k the (transferred) feature map of network k and least-squares GAN losses:

    L_D  = Σ_k E[(1 − D_k(F_{k−1}))²] + E[D_k(F_k)²]          (every D_k; F detached)
    L_G  = w · Σ_k E[(1 − D_k(F_k))²]                         (every network, through F_k)
    L_k  = loss(out_k, stop_gradient(out_{k−1}))              (the config's distillers, e.g. CE + KD)

and three updates per step, in this order: the discriminators (their optimizer), the networks on L_G (an
adversarial optimizer per network), the networks on their logit losses L_k (their main optimizer), the
last from a fresh forward pass at the parameters the adversarial update left. The discriminators see the
real and the fake maps in two passes (BatchNorm statistics of each), as a PyTorch loop feeds them, and run
in train mode in the networks' update without updating their statistics there. When the networks' maps
have different channel counts (or `transfer_channels` is set), a 1×1 transfer layer per network maps its
map to a common width before any discriminator sees it; it is trained with its network's adversarial
update. The least-squares form, the optimizers and their learning rates are readings of the paper, not
code (none was published): every one is a config value (`config.discriminators`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kd_jax.distillers import Context, Distiller
from kd_jax.errors import KDJaxError
from kd_jax.models.discriminator import FeatureDiscriminator, TransferLayer
from kd_jax.tasks import Task
from kd_jax.train.schemes.mutual import Models, check_distiller, init_networks
from kd_jax.train.step import Metrics, TrainState, apply_train, apply_updates, jit_init, learning_rate, prepare_batch

DISCRIMINATORS = "discriminators"
TRANSFER = "transfer"
ADVERSARIAL = "/adversarial"  # suffix of each network's adversarial optimizer in `opt_state`


def partner(k: int, count: int) -> int:
  """The ring: network k's partner (the one whose maps D_k calls real, whose predictions k distils) is
  k − 1, cyclically."""
  return (k - 1) % count


def adversarial_trainables(params: Dict[str, Any], name: str) -> Dict[str, Any]:
  """What network `name`'s adversarial optimizer updates: the network and its transfer layer, if any."""
  parts = {"network": params[name]}
  if TRANSFER in params:
    parts[TRANSFER] = params[TRANSFER][name]
  return parts


def feature_map(out: Any, stage: int) -> jax.Array:
  if not out.stages:
    raise KDJaxError("config.scheme='adversarial' reads the networks' stage features, and a model has none.")
  return out.stages[stage]


def create_train_state(rng: jax.Array, models: Models, discriminator: FeatureDiscriminator,
                       transfer: Optional[TransferLayer], distiller: Distiller,
                       txs: Dict[str, optax.GradientTransformation], sample_batch: Dict[str, jax.Array], *,
                       task: Task, stage: int = -1) -> TrainState:
  """Networks, their transfer layers (if any) and one discriminator per network, each from its own key."""
  count = len(models)

  def init(rng, sample_batch):
    keys = jax.random.split(rng, 3 * count + 1)
    params, batch_stats, outs = init_networks(keys, models, task.inputs(sample_batch))
    maps = [feature_map(out, stage) for out in outs]
    if transfer is not None:
      params[TRANSFER] = {name: transfer.init(key, f)["params"]
                          for key, (name, _), f in zip(keys[count:2 * count], models, maps)}
      maps = [transfer.apply({"params": params[TRANSFER][name]}, f) for (name, _), f in zip(models, maps)]
    discs = {name: discriminator.init(key, f, train=False)
             for key, (name, _), f in zip(keys[2 * count:3 * count], models, maps)}
    params[DISCRIMINATORS] = {name: v["params"] for name, v in discs.items()}
    batch_stats[DISCRIMINATORS] = {name: v.get("batch_stats", {}) for name, v in discs.items()}
    check_distiller(distiller, distiller.init(keys[-1], outs[0], outs[1], sample_batch))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                       distiller_params={}, distiller_state={}, opt_state={}, rng=keys[-1])
    return init_optimizer(state, txs)

  return jit_init(init, rng, sample_batch)


def init_optimizer(state: TrainState, txs: Dict[str, optax.GradientTransformation]) -> TrainState:
  """Fresh states of every optimizer: per network its main and its adversarial one, and the
  discriminators'."""
  opt_state = {}
  for name, tx in txs.items():
    if name == DISCRIMINATORS:
      opt_state[name] = tx.init(state.params[DISCRIMINATORS])
    elif name.endswith(ADVERSARIAL):
      opt_state[name] = tx.init(adversarial_trainables(state.params, name[:-len(ADVERSARIAL)]))
    else:
      opt_state[name] = tx.init(state.params[name])
  return state.replace(opt_state=opt_state)


def model_variables(state: TrainState, name: str) -> Dict[str, Any]:
  return {"params": state.params[name], "batch_stats": state.batch_stats[name]}


def train_step(state: TrainState, batch: Dict[str, jax.Array], teacher_variables: Any = (), *,
               models: Models, discriminator: FeatureDiscriminator, transfer: Optional[TransferLayer],
               distiller: Distiller, txs: Dict[str, optax.GradientTransformation], schedule: optax.Schedule,
               steps_per_epoch: int, task: Task, stage: int = -1, weight: float = 1.0, crop_pad: int = 0,
               flip: bool = False) -> Tuple[TrainState, Metrics]:
  """One AFD step (see the module docstring). Metrics: `loss` (the networks' logit losses summed),
  `discriminator_loss`, `generator_loss` (L_G, weighted), and per network its logit loss, terms and the
  task's training metrics."""
  del teacher_variables
  names = [name for name, _ in models]
  count = len(names)
  step_rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, distiller_rng = jax.random.split(step_rng)
  batch, _ = prepare_batch(augment_rng, batch, task, crop_pad, flip)
  inputs = task.inputs(batch)

  # The networks at θ, kept differentiable (a VJP) for their adversarial update.
  def maps_of(trainables):
    maps, stats = {}, {}
    for name, model in models:
      out, stats[name] = apply_train(model, trainables[name]["network"], state.batch_stats[name], inputs)
      f = feature_map(out, stage)
      if transfer is not None:
        f = transfer.apply({"params": trainables[name][TRANSFER]}, f)
      maps[name] = f
    return maps, stats

  trainables = {name: adversarial_trainables(state.params, name) for name in names}
  maps, maps_vjp, stats = jax.vjp(maps_of, trainables, has_aux=True)

  # 1. Discriminators: D_k calls its partner's map real and network k's map fake.
  fixed = jax.lax.stop_gradient(maps)

  def discriminator_loss(disc_params):
    total, new_stats = 0.0, {}
    for k, name in enumerate(names):
      real, fake = fixed[names[partner(k, count)]], fixed[name]
      s_real, s = apply_train(discriminator, disc_params[name], state.batch_stats[DISCRIMINATORS][name], real)
      s_fake, new_stats[name] = apply_train(discriminator, disc_params[name], s, fake)
      total = total + jnp.mean((1.0 - s_real) ** 2) + jnp.mean(s_fake ** 2)
    return total, new_stats

  (d_loss, disc_stats), d_grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
      state.params[DISCRIMINATORS])
  disc_params, disc_opt = apply_updates(txs[DISCRIMINATORS], d_grads, state.opt_state[DISCRIMINATORS],
                                        state.params[DISCRIMINATORS])

  # 2. Networks (and transfer layers) fool the updated discriminators: their adversarial optimizers.
  def generator_loss(maps):
    total = 0.0
    for name in names:
      scores, _ = apply_train(discriminator, disc_params[name], disc_stats[name], maps[name])
      total = total + jnp.mean((1.0 - scores) ** 2)
    return weight * total

  g_loss, map_grads = jax.value_and_grad(generator_loss)(maps)
  (adv_grads,) = maps_vjp(map_grads)
  opt_state = dict(state.opt_state, **{DISCRIMINATORS: disc_opt})
  moved = {}
  for name in names:
    moved[name], opt_state[name + ADVERSARIAL] = apply_updates(
        txs[name + ADVERSARIAL], adv_grads[name], state.opt_state[name + ADVERSARIAL], trainables[name])

  # 3. Networks on their logit losses, each distilling from its partner: their main optimizers.
  ctx = Context(rng=distiller_rng, train=True, step=state.step, epoch=state.step // steps_per_epoch + 1,
                task=task)

  def logit_losses(params):
    outs, new_stats = [], {}
    for name, model in models:
      out, new_stats[name] = apply_train(model, params[name], stats[name], inputs)
      outs.append(out)
    results = []
    for k, out in enumerate(outs):
      peer = jax.lax.stop_gradient(outs[partner(k, count)])
      value, term_metrics, _ = distiller.loss({}, out, peer, batch, Context(
          jax.random.fold_in(ctx.rng, k), ctx.train, ctx.step, ctx.epoch, None, task))
      results.append((value, term_metrics))
    return sum(v for v, _ in results), (results, new_stats, [o.prediction for o in outs])

  net_params = {name: moved[name]["network"] for name in names}
  grads, (results, net_stats, predictions) = jax.grad(logit_losses, has_aux=True)(net_params)
  params = dict(state.params)
  if transfer is not None:
    params[TRANSFER] = {name: moved[name][TRANSFER] for name in names}
  params[DISCRIMINATORS] = disc_params
  for name in names:
    params[name], opt_state[name] = apply_updates(txs[name], grads[name], state.opt_state[name], net_params[name])
  batch_stats = dict(net_stats, **{DISCRIMINATORS: disc_stats})

  metrics: Metrics = {"loss": sum(v for v, _ in results), "discriminator_loss": d_loss, "generator_loss": g_loss,
                      "lr": learning_rate(schedule, state.step)}
  for name, (value, term_metrics), prediction in zip(names, results, predictions):
    metrics[f"{name}/loss"] = value
    metrics.update({f"{name}/{k}": v for k, v in term_metrics.items()})
    metrics.update({f"{name}/{k}": v for k, v in task.train_metrics(prediction, batch).items()})
  return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state), metrics
