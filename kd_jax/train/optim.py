"""Optimizers and learning-rate schedules, expressed in epochs and converted to steps."""

from __future__ import annotations

from typing import Any, Mapping, Optional

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


def make_optimizer(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum, optional Nesterov) with PyTorch-style coupled weight decay, or AdamW."""
  if optim.name == "sgd":
    return optax.chain(
        optax.add_decayed_weights(optim.weight_decay),  # g += wd·θ before momentum, as torch.optim.SGD
        optax.sgd(schedule, momentum=optim.momentum or None, nesterov=optim.nesterov),
    )
  return optax.adamw(schedule, weight_decay=optim.weight_decay)
