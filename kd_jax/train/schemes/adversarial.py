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

Two generalisations share the step:
  * With a frozen teacher (`config.teacher.workdir`, no peers) the single trained network's partner is the
    teacher: its discriminators call the teacher's maps real, and its losses read the teacher's outputs.
    This is adversarial feature distillation from a pretrained teacher, as in adversarial multi-scale
    feature distillation for super-resolution (Jo, Park & Hong, "Face Super-Resolution using Adversarial
    Distillation of Multi-Scale Facial Region Dictionary", J. Broadcast Eng. 26(5), 2021).
  * Several taps (multi-scale): one discriminator per (stage, pool factor) of `config.discriminators.stages`
    × `pools`, each reading that stage's map average-pooled by that factor; the losses above sum over taps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kd_jax.distillers import Context, Distiller
from kd_jax.errors import KDJaxError
from kd_jax.models.discriminator import FeatureDiscriminator, TransferLayer
from kd_jax.tasks import Task
from kd_jax.train.schemes.mutual import Models, check_distiller, init_networks
from kd_jax.compression.model import CompressedModel
from kd_jax.train.step import Metrics, TrainState, apply_train, apply_updates, jit_init, learning_rate, prepare_batch
from kd_jax.train.teachers import Teachers

DISCRIMINATORS = "discriminators"
TRANSFER = "transfer"
ADVERSARIAL = "/adversarial"  # suffix of each network's adversarial optimizer in `opt_state`
Transfers = Mapping[str, TransferLayer]


@dataclasses.dataclass(frozen=True)
class Tap:
  """One discriminator's view: network `network`'s stage `stage` (fake) against its partner's stage
  `real_stage` (real: the partner network's or the teacher's), both average-pooled by `pool`; stored under
  `key` in the discriminators' (and transfer layers') parameters."""
  key: str
  network: str
  stage: int
  real_stage: int
  pool: int = 1


def make_taps(names: Sequence[str], stages: Sequence[int], real_stages: Sequence[int] = (),
              pools: Sequence[int] = (1,)) -> Tuple[Tap, ...]:
  """Every network's taps, network by network, each over `stages` × `pools`. A network with one tap keys it
  by its own name (the AFD layout); otherwise `<name>_stage<s>_pool<p>`."""
  real_stages = tuple(real_stages) or tuple(stages)
  if len(real_stages) != len(stages):
    raise KDJaxError(f"config.discriminators.teacher_stages {tuple(real_stages)} must pair one teacher stage with "
                     f"each of config.discriminators.stages {tuple(stages)}.")
  if not stages or not pools or any(int(p) < 1 for p in pools):
    raise KDJaxError(f"config.discriminators needs at least one stage and pool factors >= 1; got stages "
                     f"{tuple(stages)}, pools {tuple(pools)}.")
  single = len(stages) * len(pools) == 1
  return tuple(Tap(name if single else f"{name}_stage{s}_pool{p}", name, int(s), int(r), int(p))
               for name in names for s, r in zip(stages, real_stages) for p in pools)


def partner(k: int, count: int) -> int:
  """The ring: network k's partner (the one whose maps D_k calls real, whose predictions k distils) is
  k − 1, cyclically."""
  return (k - 1) % count


def adversarial_trainables(params: Dict[str, Any], name: str, taps: Sequence[Tap] = ()) -> Dict[str, Any]:
  """What network `name`'s adversarial optimizer updates: the network and its taps' transfer layers."""
  parts = {"network": params[name]}
  own = {t.key: params[TRANSFER][t.key] for t in taps if t.network == name and t.key in params.get(TRANSFER, {})}
  if own:
    parts[TRANSFER] = own
  return parts


def feature_map(out: Any, stage: int, pool: int = 1) -> jax.Array:
  """Stage `stage` of a model output, average-pooled by `pool` (non-overlapping windows) when > 1."""
  if not out.stages:
    raise KDJaxError("config.scheme='adversarial' reads the networks' stage features, and a model has none.")
  f = out.stages[stage]
  if pool > 1 and f.ndim == 4:
    f = nn.avg_pool(f, (pool, pool), strides=(pool, pool))
  return f


def _slot_keys(base: jax.Array, taps: Sequence[Tap], names: Sequence[str]) -> Dict[str, jax.Array]:
  """A key per tap from its network's base key (`base[k]` for network k): the network's first tap gets the
  base key itself (so a one-tap run initialises as AFD always has), later ones keys folded from it."""
  keys, seen = {}, {}
  for tap in taps:
    j = seen.get(tap.network, 0)
    seen[tap.network] = j + 1
    k = list(names).index(tap.network)
    keys[tap.key] = base[k] if j == 0 else jax.random.fold_in(base[k], j)
  return keys


def _real_maps(taps: Sequence[Tap], fake: Dict[str, jax.Array], names: Sequence[str],
               teacher_out: Any) -> Dict[str, jax.Array]:
  """Each tap's real map: the teacher's (teacher mode) or the same tap of the partner network (the ring)."""
  if teacher_out is not None:
    return {t.key: jax.lax.stop_gradient(feature_map(teacher_out, t.real_stage, t.pool)) for t in taps}
  by_network = {}
  for t in taps:
    by_network.setdefault(t.network, []).append(t.key)
  real = {}
  for k, name in enumerate(names):
    for j, key in enumerate(by_network[name]):
      real[key] = fake[by_network[names[partner(k, len(names))]][j]]
  return real


def _first(teacher_out: Any) -> Any:
  return teacher_out[0] if isinstance(teacher_out, tuple) else teacher_out


def create_train_state(rng: jax.Array, models: Models, discriminator: FeatureDiscriminator, transfers: Transfers,
                       distiller: Distiller, txs: Dict[str, optax.GradientTransformation],
                       sample_batch: Dict[str, jax.Array], *, task: Task, taps: Sequence[Tap],
                       teachers: Teachers = Teachers(), teacher_variables: Any = ()) -> TrainState:
  """Networks, their transfer layers (if any) and one discriminator per tap, each from its own key."""
  names = [name for name, _ in models]
  count = len(models)

  def init(rng, sample_batch, teacher_variables):
    keys = jax.random.split(rng, 3 * count + 1)
    inputs = task.inputs(sample_batch)
    params, batch_stats, outs = init_networks(keys, models, inputs)
    by_name = dict(zip(names, outs))
    maps = {t.key: feature_map(by_name[t.network], t.stage, t.pool) for t in taps}
    transfer_keys = _slot_keys(keys[count:2 * count], taps, names)
    if transfers:
      params[TRANSFER] = {key: layer.init(transfer_keys[key], maps[key])["params"] for key, layer in transfers.items()}
      maps = {key: transfers[key].apply({"params": params[TRANSFER][key]}, f) if key in transfers else f
              for key, f in maps.items()}
    disc_keys = _slot_keys(keys[2 * count:3 * count], taps, names)
    discs = {t.key: discriminator.init(disc_keys[t.key], maps[t.key], train=False) for t in taps}
    params[DISCRIMINATORS] = {key: v["params"] for key, v in discs.items()}
    batch_stats[DISCRIMINATORS] = {key: v.get("batch_stats", {}) for key, v in discs.items()}
    teacher_out = (_first(teachers(teacher_variables, task.teacher_inputs(sample_batch))) if teachers.modules
                   else outs[1])
    check_distiller(distiller, distiller.init(keys[-1], outs[0], teacher_out, sample_batch))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                       distiller_params={}, distiller_state={}, opt_state={}, rng=keys[-1])
    return init_optimizer(state, txs, taps)

  return jit_init(init, rng, sample_batch, teacher_variables)


def init_optimizer(state: TrainState, txs: Dict[str, optax.GradientTransformation],
                   taps: Sequence[Tap] = ()) -> TrainState:
  """Fresh states of every optimizer: per network its main and its adversarial one, and the
  discriminators'."""
  opt_state = {}
  for name, tx in txs.items():
    if name == DISCRIMINATORS:
      opt_state[name] = tx.init(state.params[DISCRIMINATORS])
    elif name.endswith(ADVERSARIAL):
      opt_state[name] = tx.init(adversarial_trainables(state.params, name[:-len(ADVERSARIAL)], taps))
    else:
      opt_state[name] = tx.init(state.params[name])
  return state.replace(opt_state=opt_state)


def model_variables(state: TrainState, name: str) -> Dict[str, Any]:
  return {"params": state.params[name], "batch_stats": state.batch_stats[name]}


def train_step(state: TrainState, batch: Dict[str, jax.Array], teacher_variables: Any = (), *,
               models: Models, discriminator: FeatureDiscriminator, transfers: Transfers, taps: Sequence[Tap],
               distiller: Distiller, txs: Dict[str, optax.GradientTransformation], schedule: optax.Schedule,
               steps_per_epoch: int, task: Task, teachers: Teachers = Teachers(), weight: float = 1.0,
               crop_pad: int = 0, flip: bool = False) -> Tuple[TrainState, Metrics]:
  """One AFD step (see the module docstring). Metrics: `loss` (the networks' logit losses summed),
  `discriminator_loss`, `generator_loss` (L_G, weighted), and per network its logit loss, terms and the
  task's training metrics."""
  names = [name for name, _ in models]
  count = len(names)
  step_rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, distiller_rng = jax.random.split(step_rng)
  batch, _ = prepare_batch(augment_rng, batch, task, crop_pad, flip)
  inputs = task.inputs(batch)
  teacher_out = _first(teachers(teacher_variables, task.teacher_inputs(batch))) if teachers.modules else None

  # The networks at θ, kept differentiable (a VJP) for their adversarial update.
  def maps_of(trainables):
    outs, stats = {}, {}
    for name, model in models:
      outs[name], stats[name] = apply_train(model, trainables[name]["network"], state.batch_stats[name], inputs)
    maps = {}
    for t in taps:
      f = feature_map(outs[t.network], t.stage, t.pool)
      if t.key in transfers:
        f = transfers[t.key].apply({"params": trainables[t.network][TRANSFER][t.key]}, f)
      maps[t.key] = f
    return maps, stats

  trainables = {name: adversarial_trainables(state.params, name, taps) for name in names}
  maps, maps_vjp, stats = jax.vjp(maps_of, trainables, has_aux=True)

  # 1. Discriminators: each calls its partner's (or the teacher's) map real and its network's map fake.
  fixed = jax.lax.stop_gradient(maps)
  real_maps = _real_maps(taps, fixed, names, teacher_out)

  def discriminator_loss(disc_params):
    total, new_stats = 0.0, {}
    for t in taps:
      s_real, s = apply_train(discriminator, disc_params[t.key], state.batch_stats[DISCRIMINATORS][t.key],
                              real_maps[t.key])
      s_fake, new_stats[t.key] = apply_train(discriminator, disc_params[t.key], s, fixed[t.key])
      total = total + jnp.mean((1.0 - s_real) ** 2) + jnp.mean(s_fake ** 2)
    return total, new_stats

  (d_loss, disc_stats), d_grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
      state.params[DISCRIMINATORS])
  disc_params, disc_opt = apply_updates(txs[DISCRIMINATORS], d_grads, state.opt_state[DISCRIMINATORS],
                                        state.params[DISCRIMINATORS])

  # 2. Networks (and transfer layers) fool the updated discriminators: their adversarial optimizers.
  def generator_loss(maps):
    total = 0.0
    for t in taps:
      scores, _ = apply_train(discriminator, disc_params[t.key], disc_stats[t.key], maps[t.key])
      total = total + jnp.mean((1.0 - scores) ** 2)
    return weight * total

  g_loss, map_grads = jax.value_and_grad(generator_loss)(maps)
  (adv_grads,) = maps_vjp(map_grads)
  opt_state = dict(state.opt_state, **{DISCRIMINATORS: disc_opt})
  moved = {}
  for name in names:
    moved[name], opt_state[name + ADVERSARIAL] = apply_updates(
        txs[name + ADVERSARIAL], adv_grads[name], state.opt_state[name + ADVERSARIAL], trainables[name])

  # 3. Networks on their own losses, each distilling from its partner (or the teacher): main optimizers.
  ctx = Context(rng=distiller_rng, train=True, step=state.step, epoch=state.step // steps_per_epoch + 1,
                task=task, kernels=getattr(models[0][1], "kernels", None))

  def own_losses(params):
    outs, new_stats = [], {}
    for name, model in models:
      out, new_stats[name] = apply_train(model, params[name], stats[name], inputs)
      outs.append(out)
    results = []
    for k, out in enumerate(outs):
      guide = teacher_out if teacher_out is not None else jax.lax.stop_gradient(outs[partner(k, count)])
      value, term_metrics, _ = distiller.loss({}, out, guide, batch, dataclasses.replace(
          ctx, rng=jax.random.fold_in(ctx.rng, k), forward=None))
      results.append((value, term_metrics))
    return sum(v for v, _ in results), (results, new_stats, [o.prediction for o in outs])

  net_params = {name: moved[name]["network"] for name in names}
  grads, (results, net_stats, predictions) = jax.grad(own_losses, has_aux=True)(net_params)
  params = dict(state.params)
  if transfers:
    params[TRANSFER] = {key: moved[t.network][TRANSFER][key] for t in taps for key in [t.key] if key in transfers}
  params[DISCRIMINATORS] = disc_params
  for name, model in models:
    params[name], opt_state[name] = apply_updates(txs[name], grads[name], state.opt_state[name], net_params[name])
    if isinstance(model, CompressedModel):  # pruned weights back to zero; the schedule's next masks
      params[name], net_stats[name] = model.after_update(params[name], net_stats[name], state.step)
  batch_stats = dict(net_stats, **{DISCRIMINATORS: disc_stats})

  metrics: Metrics = {"loss": sum(v for v, _ in results), "discriminator_loss": d_loss, "generator_loss": g_loss,
                      "lr": learning_rate(schedule, state.step)}
  for name, (value, term_metrics), prediction in zip(names, results, predictions):
    metrics[f"{name}/loss"] = value
    metrics.update({f"{name}/{k}": v for k, v in term_metrics.items()})
    metrics.update({f"{name}/{k}": v for k, v in task.train_metrics(prediction, batch).items()})
  return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state), metrics
