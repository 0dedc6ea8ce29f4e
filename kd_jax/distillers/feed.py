"""FEED: feature-level ensemble distillation through one translator per teacher.

Park & Kwak, "FEED: Feature-level Ensemble for Knowledge Distillation", arXiv:1909.10754 (earlier version:
ICLR 2019 OpenReview BJxYEsAqY7). No code was found; the loss is FT's (Kim, Park, Kwak, NeurIPS 2018,
arXiv:1802.04977, code `Jangho-Kim/Factor-Transfer-pytorch`), applied once per teacher.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.distillers.base import Distiller, conv_of, require_positive
from kd_jax.distillers.feature import _stage
from kd_jax.models.outputs import ModelOutput


def _torch_conv_init(fan_in: int):
  """PyTorch's default `nn.Conv2d` initialisation (weight and bias ~ U(±1/sqrt(fan_in))), as FT's translator."""
  bound = 1.0 / math.sqrt(fan_in)
  return (nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
          lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound))


class FEEDTranslator(nn.Module):
  """FT's translator: 3 × (Conv3×3 stride 1 padding 1 with bias + LeakyReLU(0.1)), no BatchNorm.

  Widths as FT's `Translator(in_planes, planes)`: C_s → C_s → `out_channels` → `out_channels`; FEED sets
  `out_channels` to the teacher's channel count, so the output matches the teacher's last-stage map.
  """

  out_channels: int
  kernels: Any = None  # the run's convolutions (`Context.kernels`); None: XLA's. Parameters do not depend on it

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate((x.shape[-1], self.out_channels, self.out_channels)):
      kernel_init, bias_init = _torch_conv_init(9 * x.shape[-1])
      x = nn.Conv(width, (3, 3), padding=1, kernel_init=kernel_init, bias_init=bias_init,
                  conv_general_dilated=conv_of(self.kernels), name=f"conv{i}")(x)
      x = nn.leaky_relu(x, negative_slope=0.1)
    return x


class FEEDTranslators(nn.Module):
  """One `FEEDTranslator` per teacher (`translator<k>`), all reading the same student map."""

  out_channels: Tuple[int, ...]
  kernels: Any = None  # the run's convolutions (`Context.kernels`); None: XLA's. Parameters do not depend on it

  @nn.compact
  def __call__(self, x: jax.Array) -> Tuple[jax.Array, ...]:
    return tuple(FEEDTranslator(c, kernels=self.kernels, name=f"translator{k}")(x)
                 for k, c in enumerate(self.out_channels))


def _teachers(teacher) -> Tuple[ModelOutput, ...]:
  return (teacher,) if isinstance(teacher, ModelOutput) else tuple(teacher)


@dataclasses.dataclass(frozen=True)
class FEED(Distiller):
  """Parallel FEED, `β Σ_k losses.factor_transfer(φ_k(F_s), F_{t_k}, p, form="paper")`.

  From the paper: the student's last feature map F_s (the last stage output, before pooling) feeds
  one translator φ_k per teacher (`FEEDTranslator`: FT's translator, output width = teacher k's channels);
  each translated map is compared with teacher k's last-stage map by FT's loss,
  `mean_{b,d} |φ_k(F_s)/‖φ_k(F_s)‖₂ − F_{t_k}/‖F_{t_k}‖₂|` over the flattened maps. The translators are
  trained with the student (by the same optimiser here; FT's code gives the translator its own SGD with the
  same hyper-parameters, which is the same update for plain SGD) and thrown away after training; the teachers
  are constants. Our readings where the paper is silent [assume]: the teachers' raw last-stage features
  are used directly, without FT's paraphraser; β = 500 as FT's code (the config's term weight multiplies
  it, normally 1). `teacher` may be one `ModelOutput` (then this is FT without a paraphraser, and one stage
  of sequential FEED) or a tuple of them (`config.teacher.workdir` then `config.teacher.extra_workdirs`).
  The student's and every teacher's chosen maps need the same spatial size. Metrics: `teacher<k>`, each
  unweighted FT term.

  Attributes:
    beta: β.
    p: the norm of FT's loss (1, the paper's and FEED's choice, or 2).
    stage: the student's stage (index into `ModelOutput.stages`; -1 is the last).
    teacher_stage: every teacher's stage (-1 is the last).
  """

  beta: float = 500.0
  p: int = 1
  stage: int = -1
  teacher_stage: int = -1

  def __post_init__(self):
    require_positive("feed", beta=self.beta)
    if self.p not in (1, 2):
      raise ValueError(f"feed: p must be 1 or 2, got {self.p}.")

  def _features(self, student, teacher) -> Tuple[jax.Array, Tuple[jax.Array, ...]]:
    s = _stage("feed", "student", student, self.stage)
    ts = tuple(jax.lax.stop_gradient(_stage("feed", f"teacher {k}", t, self.teacher_stage))
               for k, t in enumerate(_teachers(teacher)))
    for k, t in enumerate(ts):
      if s.ndim != 4 or t.ndim != 4:
        raise ValueError(f"feed: needs NHWC feature maps, got student {s.shape} and teacher {k} {t.shape}.")
      if s.shape[1:3] != t.shape[1:3]:
        raise ValueError(f"feed: the student's map is {s.shape[1:3]} and teacher {k}'s {t.shape[1:3]}; the "
                         "translator keeps the spatial size, so choose stages of equal resolution.")
    return s, ts

  def init(self, rng, student, teacher, batch):
    s, ts = self._features(student, teacher)
    return dict(FEEDTranslators(tuple(t.shape[-1] for t in ts)).init(rng, s))

  def loss(self, variables, student, teacher, batch, ctx):
    s, ts = self._features(student, teacher)
    translated = FEEDTranslators(tuple(t.shape[-1] for t in ts), kernels=ctx.kernels).apply(variables, s)
    terms = {f"teacher{k}": losses.factor_transfer(f, t, p=self.p, form="paper")
             for k, (f, t) in enumerate(zip(translated, ts))}
    return self.beta * sum(terms.values()), terms, {}
