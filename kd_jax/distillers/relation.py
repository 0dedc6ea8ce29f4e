"""Distillers for `kd_jax.losses.relations`: RKD, area-wise RKD and VID (with its regressors and variances)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.distillers.base import Distiller, conv_of, require_positive
from kd_jax.distillers.feature import _int_tuple, _stage
from kd_jax.losses.relations import AREA_EPS, VID_EPS, vid_log_scale_for_variance, vid_variance
from kd_jax.models.outputs import ModelOutput


def _feature(name: str, who: str, out: ModelOutput, stage: Optional[int]) -> jax.Array:
  """`out.embedding` (stage None) or `out.stages[stage]`."""
  return out.embedding if stage is None else _stage(name, who, out, stage)


def _non_negative(name: str, **values: float) -> None:
  for key, value in values.items():
    if not value >= 0:
      raise ValueError(f"{name}: {key} must be >= 0, got {value}.")


def _relation_parts(name: str, student: jax.Array, teacher: jax.Array, weights: Dict[str, float],
                    area_eps: float) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """`(Σ_k w_k·L_k, {k: L_k})` over the parts with a non-zero weight (the others are not computed)."""
  fns = {"distance": losses.rkd_distance, "angle": losses.rkd_angle,
         "area": lambda s, t: losses.area_rkd(s, t, eps=area_eps)}
  parts = {k: fns[k](student, teacher) for k, w in weights.items() if w}
  if not parts:
    raise ValueError(f"{name}: every weight is 0; give at least one part a positive weight.")
  return sum(weights[k] * v for k, v in parts.items()), parts


@dataclasses.dataclass(frozen=True)
class RKD(Distiller):
  """Relational KD, `λ_D·L_D + λ_A·L_A` on the pooled embeddings. See `losses.rkd_distance`, `losses.rkd_angle`.

  Park et al., CVPR 2019, arXiv:1904.05068; defaults from RepDistiller's `RKDLoss(w_d=25, w_a=50)`, which
  reads `feat[-1]`, the pooled embedding, and is trained with CE weight 1 and term weight 1
  (`--distill rkd -a 0 -b 1`). The weights live here, so a config writes `{'ce': {'weight': 1},
  'rkd': {'weight': 1}}`. The paper's metric-learning weights are λ_D = 1, λ_A = 2. Metrics: `distance` and
  `angle`, the unweighted parts (a part with weight 0 is neither computed nor reported).

  Attributes:
    distance_weight: λ_D.
    angle_weight: λ_A.
    stage: None reads `ModelOutput.embedding`; an index reads that stage output (flattened per example),
      for both student and teacher.
  """

  distance_weight: float = 25.0
  angle_weight: float = 50.0
  stage: Optional[int] = None

  def __post_init__(self):
    _non_negative("rkd", distance_weight=self.distance_weight, angle_weight=self.angle_weight)

  def loss(self, variables, student, teacher, batch, ctx):
    value, parts = _relation_parts(
        "rkd", _feature("rkd", "student", student, self.stage), _feature("rkd", "teacher", teacher, self.stage),
        {"distance": self.distance_weight, "angle": self.angle_weight}, AREA_EPS)
    return value, parts, {}


@dataclasses.dataclass(frozen=True)
class AreaRKD(Distiller):
  """Area-wise relational KD, `λ_area·L_area (+ λ_D·L_D + λ_A·L_A)`. See `losses.area_rkd`.

  Cho, Park, Lim, CSAM 30(5), 2023 (no arXiv, no code): a reading of the abstract, with kd_jax's own
  choices where it is silent [assume]. λ_area = 25 is one of them (RKD's distance weight, so the area term
  sits on the same scale as RKD's parts); the RKD distance and angle terms are off by default and can be
  switched on next to it. The abstract applies the loss "at a specific hidden
  layer": `stage` chooses it, the pooled embedding by default. Metrics: `area` (and `distance`, `angle`
  when their weights are non-zero), unweighted.

  Attributes:
    area_weight: λ_area.
    distance_weight: λ_D of an extra RKD distance term (0: off).
    angle_weight: λ_A of an extra RKD angle term (0: off).
    eps: ε inside the area's square root.
    stage: None reads `ModelOutput.embedding`; an index reads that stage output (flattened).
  """

  area_weight: float = 25.0
  distance_weight: float = 0.0
  angle_weight: float = 0.0
  eps: float = AREA_EPS
  stage: Optional[int] = None

  def __post_init__(self):
    _non_negative("area_rkd", area_weight=self.area_weight, distance_weight=self.distance_weight,
                  angle_weight=self.angle_weight)
    require_positive("area_rkd", eps=self.eps)

  def loss(self, variables, student, teacher, batch, ctx):
    value, parts = _relation_parts(
        "area_rkd", _feature("area_rkd", "student", student, self.stage),
        _feature("area_rkd", "teacher", teacher, self.stage),
        {"area": self.area_weight, "distance": self.distance_weight, "angle": self.angle_weight}, self.eps)
    return value, parts, {}


# PyTorch's default Conv2d initialisation, U(±1/sqrt(fan_in)); RepDistiller does not re-initialise VIDLoss.
_torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class VIDRegressor(nn.Module):
  """VID's mean network μ(s): conv1x1 → ReLU → conv1x1 → ReLU → conv1x1, no biases (RepDistiller `VIDLoss`)."""

  hidden: int
  out: int
  kernels: Any = None  # the run's convolutions (`Context.kernels`); None: XLA's. Parameters do not depend on it

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda width: nn.Conv(width, (1, 1), use_bias=False, kernel_init=_torch_conv_init,
                                 conv_general_dilated=conv_of(self.kernels))
    x = nn.relu(conv(self.hidden)(x))
    x = nn.relu(conv(self.hidden)(x))
    return conv(self.out)(x)


class VIDStage(nn.Module):
  """One VID stage's trainable parts: `regressor` (μ) and `log_scale` α ([C], σ² = softplus(α) + eps)."""

  hidden: int
  channels: int
  init_log_scale: float
  kernels: Any = None  # the run's convolutions (`Context.kernels`); None: XLA's. Parameters do not depend on it

  @nn.compact
  def __call__(self, x: jax.Array) -> Tuple[jax.Array, jax.Array]:
    mu = VIDRegressor(self.hidden, self.channels, kernels=self.kernels, name="regressor")(x)
    log_scale = self.param("log_scale", nn.initializers.constant(self.init_log_scale), (self.channels,),
                           jnp.float32)
    return mu, log_scale


def _as_nhwc(name: str, x: jax.Array) -> jax.Array:
  if x.ndim == 2:  # [B, D] (an MLP's stage): a 1x1 "image", so the 1x1 convs are Dense layers
    return x[:, None, None, :]
  if x.ndim != 4:
    raise ValueError(f"{name}: stage features must be NHWC or [B, D], got shape {x.shape}.")
  return x


def _avg_pool_to(name: str, x: jax.Array, size: Tuple[int, int]) -> jax.Array:
  """Average-pools NHWC `x` down to `size` when it divides exactly (`adaptive_avg_pool2d` in that case)."""
  (h, w), (ht, wt) = x.shape[1:3], size
  if (h, w) == (ht, wt):
    return x
  if h % ht or w % wt:
    raise ValueError(f"{name}: cannot pool a {(h, w)} feature map to {(ht, wt)}; pair stages whose spatial "
                     "sizes are equal or integer multiples of each other.")
  b, c = x.shape[0], x.shape[-1]
  return x.reshape(b, ht, h // ht, wt, w // wt, c).mean(axis=(2, 4))


@dataclasses.dataclass(frozen=True)
class VID(Distiller):
  """Variational information distillation summed over stages, `Σ_i losses.vid(μ_i(s_i), t_i, α_i)`.

  Ahn et al., CVPR 2019, arXiv:1904.05835; as RepDistiller (`VIDLoss` per stage of `feat[1:-1]`, i.e. every
  entry of `ModelOutput.stages`, summed; weight 1 next to CE 1, `--distill vid -a 0 -b 1`). Each stage owns
  a `VIDStage`: a regressor conv1x1(C_s→h) → ReLU → conv1x1(h→h) → ReLU → conv1x1(h→C_t) without biases,
  h = C_t by default (`VIDLoss(s, t, t)`), and α ∈ R^{C_t} initialised so that σ² starts at
  `init_variance` = 5 (`α = log(exp(5 − eps) − 1)`). Both are built in `init` from sample outputs and
  trained with the student. When the spatial sizes differ, the larger map is average-pooled to the smaller
  (RepDistiller's `adaptive_avg_pool2d`; here only for integer ratios). [B, D] stages are treated as 1×1
  maps. Metrics: `stage<i>`, each stage's NLL, and `variance`, the mean σ² over all stages' channels.

  Attributes:
    stages: student stage indices; None = all (student and teacher must then have as many stages).
    teacher_stages: the teacher's stage paired with each entry of `stages`; None = the same indices.
    hidden_channels: width h of the regressor; None = the teacher stage's channels.
    init_variance: σ² at initialisation (RepDistiller `init_pred_var` 5.0).
    eps: variance floor (RepDistiller 1e-5).
    reduction: "mean" (RepDistiller) or "sum" (the paper's sum over space and channels), see `losses.vid`.
  """

  stages: Optional[Tuple[int, ...]] = None
  teacher_stages: Optional[Tuple[int, ...]] = None
  hidden_channels: Optional[int] = None
  init_variance: float = 5.0
  eps: float = VID_EPS
  reduction: str = "mean"

  def __post_init__(self):
    require_positive("vid", eps=self.eps)
    if not self.init_variance > self.eps:
      raise ValueError(f"vid: init_variance must exceed eps={self.eps}, got {self.init_variance}.")
    if self.hidden_channels is not None:
      require_positive("vid", hidden_channels=self.hidden_channels)
    if self.reduction not in ("mean", "sum"):
      raise ValueError(f"vid: reduction must be 'mean' or 'sum', got {self.reduction!r}.")
    object.__setattr__(self, "stages", _int_tuple("vid", "stages", self.stages))
    object.__setattr__(self, "teacher_stages", _int_tuple("vid", "teacher_stages", self.teacher_stages))
    if self.teacher_stages is not None and (self.stages is None or len(self.stages) != len(self.teacher_stages)):
      raise ValueError(f"vid: teacher_stages {self.teacher_stages} needs stages of the same length, got "
                       f"{self.stages}.")

  def _pairs(self, student: ModelOutput, teacher: ModelOutput) -> Tuple[Tuple[str, jax.Array, jax.Array], ...]:
    """`(name, student feature, teacher feature)` per stage, NHWC, pooled to a common spatial size."""
    if self.stages is None:
      if len(student.stages) != len(teacher.stages):
        raise ValueError(f"vid: the student has {len(student.stages)} stages and the teacher "
                         f"{len(teacher.stages)}; pass stages=(...) and teacher_stages=(...) to pair them.")
      s_idx = t_idx = tuple(range(len(student.stages)))
    else:
      s_idx = self.stages
      t_idx = self.stages if self.teacher_stages is None else self.teacher_stages
    pairs = []
    for i, j in zip(s_idx, t_idx):
      s = _as_nhwc("vid", _feature("vid", "student", student, i))
      t = _as_nhwc("vid", jax.lax.stop_gradient(_feature("vid", "teacher", teacher, j)))
      size = (min(s.shape[1], t.shape[1]), min(s.shape[2], t.shape[2]))
      pairs.append((f"stage{i % len(student.stages)}", _avg_pool_to("vid", s, size), _avg_pool_to("vid", t, size)))
    return tuple(pairs)

  def _module(self, teacher_feature: jax.Array, kernels: Any = None) -> VIDStage:
    channels = teacher_feature.shape[-1]
    return VIDStage(hidden=self.hidden_channels or channels, channels=channels,
                    init_log_scale=vid_log_scale_for_variance(self.init_variance, eps=self.eps), kernels=kernels)

  def init(self, rng, student, teacher, batch):
    params = {}
    for n, (name, s, t) in enumerate(self._pairs(student, teacher)):
      params[name] = self._module(t).init(jax.random.fold_in(rng, n), s)["params"]
    return {"params": params}

  def loss(self, variables, student, teacher, batch, ctx):
    total = jnp.zeros((), jnp.float32)
    metrics, variances = {}, []
    for name, s, t in self._pairs(student, teacher):
      mu, log_scale = self._module(t, ctx.kernels).apply({"params": variables["params"][name]}, s)
      value = losses.vid(mu, t, log_scale, eps=self.eps, reduction=self.reduction)
      metrics[name] = value
      variances.append(vid_variance(log_scale, eps=self.eps))
      total = total + value
    metrics["variance"] = jnp.mean(jnp.concatenate(variances))
    return total, metrics, {}
