"""Distillers that read intermediate features, with their trainable connectors."""

from __future__ import annotations

import dataclasses
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.distillers.base import Distiller


class Regressor(nn.Module):
  """Maps a student feature onto the teacher feature's shape (FitNet's regressor, RepDistiller's ConvReg).

  NHWC inputs: a conv + BatchNorm + ReLU chosen by the spatial sizes — 3×3 stride 1 when they agree,
  3×3 stride 2 when the student map is twice as large, a 4×4 stride-2 transposed conv when it is half as
  large, otherwise a valid conv of kernel `1 + H_s − H_t` (the student map must then be larger).
  [B, D] inputs: a Dense layer.
  """

  target_shape: Tuple[int, ...]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim == 2:
      return nn.Dense(self.target_shape[-1])(x)
    (hs, ws), (ht, wt), out = x.shape[1:3], self.target_shape[1:3], self.target_shape[-1]
    if (hs, ws) == (ht, wt):
      x = nn.Conv(out, (3, 3), padding=1)(x)
    elif (hs, ws) == (2 * ht, 2 * wt):
      x = nn.Conv(out, (3, 3), strides=2, padding=1)(x)
    elif (2 * hs, 2 * ws) == (ht, wt):
      x = nn.ConvTranspose(out, (4, 4), strides=(2, 2), padding="SAME")(x)
    elif hs >= ht and ws >= wt:
      x = nn.Conv(out, (1 + hs - ht, 1 + ws - wt), padding="VALID")(x)
    else:
      raise ValueError(f"Regressor: cannot map a student feature of spatial size {(hs, ws)} onto a "
                       f"teacher feature of size {(ht, wt)}; choose stages whose sizes agree or differ by 2×.")
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
    return nn.relu(x)


@dataclasses.dataclass(frozen=True)
class FitNet(Distiller):
  """FitNet hints: `MSE(r(f_s), f_t)` on one stage, with a trainable regressor r.

  Romero et al., ICLR 2015, arXiv:1412.6550. Trained jointly with the other terms, as in RepDistiller
  (weight 100 next to CE); the paper's separate hint pre-training stage is a two-phase schedule.

  Attributes:
    stage: index into `ModelOutput.stages` for both student and teacher (negative counts from the end).
    teacher_stage: the teacher's stage, if different from `stage`.
  """

  stage: int = 1
  teacher_stage: int | None = None

  def _features(self, student, teacher):
    t_stage = self.stage if self.teacher_stage is None else self.teacher_stage
    for who, out, idx in (("student", student, self.stage), ("teacher", teacher, t_stage)):
      if not -len(out.stages) <= idx < len(out.stages):
        raise ValueError(f"fitnet: stage {idx} does not exist for the {who}, which has "
                         f"{len(out.stages)} stages (valid: 0..{len(out.stages) - 1} or negative).")
    return student.stages[self.stage], jax.lax.stop_gradient(teacher.stages[t_stage])

  def init(self, rng, student, teacher, batch):
    s, t = self._features(student, teacher)
    return dict(Regressor(t.shape).init(rng, s, train=False))

  def loss(self, variables, student, teacher, batch, ctx):
    s, t = self._features(student, teacher)
    regressor = Regressor(t.shape)
    if ctx.train and "batch_stats" in variables:
      regressed, state = regressor.apply(variables, s, train=True, mutable=["batch_stats"])
      state = dict(state)
    else:
      regressed, state = regressor.apply(variables, s, train=False), {}
    return losses.fitnet(regressed, t), {}, state
