"""Distillers for super-resolution students: KD on the SR output, FAKD and LSFD (`kd_jax.losses.super_resolution`).

SR models return `ModelOutput(prediction=SR image [B, H, W, C], stages=residual block / group outputs
[B, h, w, F] (input side first, no final ReLU, so they can be negative), embedding=[B, F])`. Teacher and student
see the same LR batch, so their feature maps have the same spatial size. The supervised `L1(SR, HR)` is the
`supervised` distiller (it asks the task). FitNet (`regressor="conv"` for negative features), AT and RKD
(`stage=-1`) apply to SR outputs unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.distillers.base import Distiller, conv_of, require_positive
from kd_jax.distillers.feature import _int_tuple, _stage
from kd_jax.models.outputs import ModelOutput


def _stage_pairs(name: str, stages: Tuple[int, ...], teacher_stages: Optional[Tuple[int, ...]],
                 student: ModelOutput, teacher: ModelOutput) -> List[Tuple[str, jax.Array, jax.Array]]:
  """`[(key, student map, stop_gradient(teacher map))]`, `key = 'stage<i>'` with i the student's stage index."""
  teacher_stages = stages if teacher_stages is None else teacher_stages
  pairs, keys = [], set()
  for s_idx, t_idx in zip(stages, teacher_stages):
    s = _stage(name, "student", student, s_idx)
    t = jax.lax.stop_gradient(_stage(name, "teacher", teacher, t_idx))
    key = f"stage{s_idx % len(student.stages)}"
    if key in keys:
      raise ValueError(f"{name}: student {key} is listed twice in stages={stages}; pair each student stage once.")
    keys.add(key)
    pairs.append((key, s, t))
  return pairs


def _check_stage_fields(name: str, distiller) -> None:
  object.__setattr__(distiller, "stages", _int_tuple(name, "stages", distiller.stages))
  object.__setattr__(distiller, "teacher_stages", _int_tuple(name, "teacher_stages", distiller.teacher_stages))
  if distiller.stages is None:
    raise ValueError(f"{name}: stages must name at least one stage, e.g. stages=(-1,).")
  if distiller.teacher_stages is not None and len(distiller.teacher_stages) != len(distiller.stages):
    raise ValueError(f"{name}: teacher_stages {distiller.teacher_stages} must pair one teacher stage with each "
                     f"student stage in stages {distiller.stages}.")


@dataclasses.dataclass(frozen=True)
class OutputL1(Distiller):
  """KD on outputs for SR: `losses.output_l1(student.prediction, stop_gradient(teacher.prediction))`.

  The mean absolute difference between the student's and the teacher's SR images (METHODS.md item 18; the
  FAKD reference code's "TS" term, weight α = 0.5 next to `(1 − α)·L1(SR, HR)`). No hyper-parameters.
  """

  def loss(self, variables, student, teacher, batch, ctx):
    return losses.output_l1(student.prediction, jax.lax.stop_gradient(teacher.prediction)), {}, {}


@dataclasses.dataclass(frozen=True)
class FAKD(Distiller):
  """FAKD: `Σ_i losses.fakd(s_i, t_i, p)` over paired stage outputs, spatial affinity matrices compared by L1.

  He, Dai, Lu, Jiang, Xia, ICIP 2020 (see `losses.fakd`); reference code
  `Vincent-Hoo/Knowledge-Distillation-for-Super-resolution`. As there, no adapter: the HW×HW affinity matrix
  does not depend on the channel count, so student and teacher stages need only the same spatial size (the
  reference distils a 64-channel EDSR student from a 256-channel EDSR teacher directly), and this distiller
  owns no parameters. The reference run (`code/scripts/train_*_SA_x4.sh`) sums the term over three body
  positions (`--features [1,2,3]`) with weight 10, next to `0.5·L1(SR, HR) + 0.5·L1(SR_s, SR_t)`: in kd_jax
  `{'supervised': 0.5, 'sr_output': 0.5, 'fakd': {'weight': 10, 'stages': (...three stages...)}}`.
  Metrics: `stage<i>`, each pair's term (i is the student's stage index).

  Attributes:
    stages: student stage indices (negative counts from the end).
    teacher_stages: the teacher's stage for each student stage; None = the same indices.
    p: 1 (L1, the reference) or 2 (squared error).
  """

  stages: Tuple[int, ...] = (-1,)
  teacher_stages: Optional[Tuple[int, ...]] = None
  p: int = 1

  def __post_init__(self):
    _check_stage_fields("fakd", self)
    if self.p not in (1, 2):
      raise ValueError(f"fakd: p must be 1 (L1, the reference) or 2 (squared error), got {self.p}.")

  def loss(self, variables, student, teacher, batch, ctx):
    metrics = {key: losses.fakd(s, t, p=self.p)
               for key, s, t in _stage_pairs("fakd", self.stages, self.teacher_stages, student, teacher)}
    return sum(metrics.values()), metrics, {}


class LocalRegressor(nn.Module):
  """LSFD's regressor R: `layers` k×k convs with bias, ReLU between them (not after the last), no BatchNorm.

  Every conv outputs `features` channels (the teacher's width); 'SAME' padding keeps the spatial size, so each
  output position sees a (1 + layers·(k − 1))² neighbourhood of the student map ("local" feature distillation).
  Flax's default initialisation (LeCun normal kernels, zero biases).
  """

  features: int
  layers: int = 1
  kernel_size: int = 3
  kernels: Any = None  # the run's convolutions (`Context.kernels`); None: XLA's. Parameters do not depend on it

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.layers):
      if i:
        x = nn.relu(x)
      x = nn.Conv(self.features, (self.kernel_size, self.kernel_size), padding="SAME",
                  conv_general_dilated=conv_of(self.kernels))(x)
    return x


def _attention_statistics(attention: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """`(max weight, normalised entropy)` of LSFD's attention [B, H, W], each averaged over the batch.

  The max weight is 1 for a uniform attention and HW for one that selects a single position; the entropy of
  `A/HW` divided by log(HW) is 1 for a uniform attention and 0 for a single position.
  """
  b, h, w = attention.shape
  weights = attention.reshape(b, h * w)
  max_weight = jnp.mean(jnp.max(weights, axis=-1))
  if h * w == 1:
    return max_weight, jnp.ones((), jnp.float32)
  entropy = jnp.sum(jax.scipy.special.entr(weights / (h * w)), axis=-1) / math.log(h * w)
  return max_weight, jnp.mean(entropy)


@dataclasses.dataclass(frozen=True)
class LSFD(Distiller):
  """LSFD: `Σ_i losses.lsfd(R_i(s_i), t_i, τ)` over paired stage outputs, with a trainable `LocalRegressor` R_i.

  Park & Kwak, "Local-Selective Feature Distillation for Single Image Super-Resolution", 2021,
  arXiv:2111.10988; no code was published, so this is kd_jax's reading of the abstract (METHODS.md item 2,
  [assume]): a local 3×3-conv regressor per stage pair maps the student map to the teacher's width, and an L1
  weighted by a soft attention `HW·softmax_p(D/τ)` on the (gradient-stopped) teacher-student difference D
  focuses on the positions where the student is furthest from the teacher (see `losses.lsfd`). The paper
  applies it at matched residual-group outputs of RCAN; λ between 1 and 10 next to `L1(SR, HR)` [assume].
  The regressors are distiller params, `{'params': {'stage<i>': {'Conv_0': ...}}}`, trained with the student.

  Metrics, per pair (i is the student's stage index): `stage<i>` (the term), `stage<i>_attention_max` (the
  batch mean of the largest weight: 1 = uniform, HW = a single position) and `stage<i>_attention_entropy`
  (the batch mean of the attention's entropy over log HW: 1 = uniform, 0 = a single position).

  Attributes:
    stages: student stage indices (negative counts from the end).
    teacher_stages: the teacher's stage for each student stage; None = the same indices.
    temperature: τ > 0 of the attention softmax, in feature units (large τ → plain L1).
    regressor_layers: convs in each regressor (≥ 1).
    kernel_size: their odd kernel size (3: local context; 1: a per-position linear map).
  """

  stages: Tuple[int, ...] = (-1,)
  teacher_stages: Optional[Tuple[int, ...]] = None
  temperature: float = 1.0
  regressor_layers: int = 1
  kernel_size: int = 3

  def __post_init__(self):
    _check_stage_fields("lsfd", self)
    require_positive("lsfd", temperature=self.temperature, regressor_layers=self.regressor_layers)
    if int(self.regressor_layers) != self.regressor_layers:
      raise ValueError(f"lsfd: regressor_layers must be an integer >= 1, got {self.regressor_layers}.")
    if int(self.kernel_size) != self.kernel_size or self.kernel_size < 1 or self.kernel_size % 2 == 0:
      raise ValueError(f"lsfd: kernel_size must be an odd integer >= 1 (so 'SAME' padding is centred), got "
                       f"{self.kernel_size}.")

  def _regressor(self, teacher_map: jax.Array, kernels: Any = None) -> LocalRegressor:
    return LocalRegressor(teacher_map.shape[-1], int(self.regressor_layers), int(self.kernel_size), kernels)

  def _pairs(self, student, teacher):
    pairs = _stage_pairs("lsfd", self.stages, self.teacher_stages, student, teacher)
    for key, s, t in pairs:
      if s.ndim != 4 or t.ndim != 4 or s.shape[:3] != t.shape[:3]:
        raise ValueError(f"lsfd: {key}: student map {s.shape} and teacher map {t.shape} must be NHWC with the same "
                         "[B, H, W]; the regressor maps channels only.")
    return pairs

  def init(self, rng, student, teacher, batch):
    params: Dict[str, dict] = {}
    for i, (key, s, t) in enumerate(self._pairs(student, teacher)):
      params[key] = self._regressor(t).init(jax.random.fold_in(rng, i), s)["params"]
    return {"params": params}

  def loss(self, variables, student, teacher, batch, ctx):
    params = variables["params"]
    total, metrics = jnp.zeros((), jnp.float32), {}
    for key, s, t in self._pairs(student, teacher):
      regressed = self._regressor(t, ctx.kernels).apply({"params": params[key]}, s)
      value = losses.lsfd(regressed, t, temperature=self.temperature)
      attention = losses.lsfd_attention(regressed, t, temperature=self.temperature)
      metrics[key] = value
      metrics[f"{key}_attention_max"], metrics[f"{key}_attention_entropy"] = _attention_statistics(attention)
      total = total + value
    return total, metrics, {}
