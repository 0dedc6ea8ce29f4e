"""Distillers that read intermediate features, with their trainable connectors."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.distillers.base import Distiller, conv_of, require_positive
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput


class Regressor(nn.Module):
  """Maps a student feature onto the teacher feature's shape (FitNet's regressor, RepDistiller's ConvReg).

  NHWC inputs: a conv + BatchNorm + ReLU chosen by the spatial sizes — 3×3 stride 1 when they agree,
  3×3 stride 2 when the student map is twice as large, a 4×4 stride-2 transposed conv when it is half as
  large, otherwise a valid conv of kernel `1 + H_s − H_t` (the student map must then be larger).
  [B, D] inputs: a Dense layer. `batch_norm=False, activate=False` leaves the conv alone (with its bias), for
  features that can be negative (super-resolution).
  """

  target_shape: Tuple[int, ...]
  activate: bool = True  # False: no ReLU after the BatchNorm (AB's connector reads pre-activations)
  batch_norm: bool = True  # False: no BatchNorm after the conv (and no batch_stats collection)
  kernels: Any = None  # the run's convolutions (`Context.kernels`); None: XLA's. Parameters do not depend on it

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim == 2:
      return nn.Dense(self.target_shape[-1])(x)
    (hs, ws), (ht, wt), out = x.shape[1:3], self.target_shape[1:3], self.target_shape[-1]
    conv = conv_of(self.kernels)
    if (hs, ws) == (ht, wt):
      x = nn.Conv(out, (3, 3), padding=1, conv_general_dilated=conv)(x)
    elif (hs, ws) == (2 * ht, 2 * wt):
      x = nn.Conv(out, (3, 3), strides=2, padding=1, conv_general_dilated=conv)(x)
    elif (2 * hs, 2 * ws) == (ht, wt):
      x = nn.ConvTranspose(out, (4, 4), strides=(2, 2), padding="SAME")(x)
    elif hs >= ht and ws >= wt:
      x = nn.Conv(out, (1 + hs - ht, 1 + ws - wt), padding="VALID", conv_general_dilated=conv)(x)
    else:
      raise ValueError(f"Regressor: cannot map a student feature of spatial size {(hs, ws)} onto a "
                       f"teacher feature of size {(ht, wt)}; choose stages whose sizes agree or differ by 2×.")
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
    return nn.relu(x) if self.activate else x


@dataclasses.dataclass(frozen=True)
class FitNet(Distiller):
  """FitNet hints: `MSE(r(f_s), f_t)` on one stage, with a trainable regressor r.

  Romero et al., ICLR 2015, arXiv:1412.6550. Trained jointly with the other terms, as in RepDistiller
  (weight 100 next to CE); the paper's separate hint pre-training stage is a two-phase schedule.

  Attributes:
    stage: index into `ModelOutput.stages` for both student and teacher (negative counts from the end).
    teacher_stage: the teacher's stage, if different from `stage`.
    regressor: "conv_bn_relu" (default; RepDistiller's ConvReg: conv + BatchNorm + ReLU) or "conv" (the conv
      alone, with bias: no BatchNorm, no ReLU, no batch_stats), for features that can be negative, such as
      the residual-block outputs of super-resolution networks.
  """

  stage: int = 1
  teacher_stage: int | None = None
  regressor: str = "conv_bn_relu"

  def __post_init__(self):
    if self.regressor not in ("conv_bn_relu", "conv"):
      raise ValueError(f"fitnet: regressor must be 'conv_bn_relu' or 'conv', got {self.regressor!r}.")

  def _features(self, student, teacher):
    t_stage = self.stage if self.teacher_stage is None else self.teacher_stage
    return (_stage("fitnet", "student", student, self.stage),
            jax.lax.stop_gradient(_stage("fitnet", "teacher", teacher, t_stage)))

  def _regressor(self, target_shape, kernels=None):
    plain = self.regressor == "conv"
    return Regressor(target_shape, activate=not plain, batch_norm=not plain, kernels=kernels)

  def init(self, rng, student, teacher, batch):
    s, t = self._features(student, teacher)
    return dict(self._regressor(t.shape).init(rng, s, train=False))

  def loss(self, variables, student, teacher, batch, ctx):
    s, t = self._features(student, teacher)
    regressor = self._regressor(t.shape, ctx.kernels)
    if ctx.train and "batch_stats" in variables:
      regressed, state = regressor.apply(variables, s, train=True, mutable=["batch_stats"])
      state = dict(state)
    else:
      regressed, state = regressor.apply(variables, s, train=False), {}
    return losses.fitnet(regressed, t), {}, state


# ------------------------------------------------------------------------------------------------------
# AT, SP, CC, PKT, NST, FSP. Defaults and the features read follow RepDistiller (`helper/loops.py`,
# `train_student.py`, `scripts/run_cifar_distill.sh`), whose feature list for the CIFAR ResNets and WRNs is
# `[stem, stage 1, ..., stage n, pooled]`: its `feat[1:-1]` is `ModelOutput.stages` (all of them), its
# `feat[-2]` is `stages[-1]` and its `feat[-1]` is `embedding`; its `feat[0]`, the stem, is `ModelOutput.stem`.
# ------------------------------------------------------------------------------------------------------


def _check_form(name: str, form: str) -> None:
  if form not in ("reference", "paper"):
    raise ValueError(f"{name}: form must be 'reference' or 'paper', got {form!r}.")


def _stage(name: str, who: str, out: ModelOutput, idx: int) -> jax.Array:
  if not -len(out.stages) <= idx < len(out.stages):
    raise ValueError(f"{name}: stage {idx} does not exist for the {who}, which has {len(out.stages)} stages "
                     f"(valid: 0..{len(out.stages) - 1} or negative).")
  return out.stages[idx]


def _int_tuple(name: str, field: str, values: Optional[Sequence[int]]) -> Optional[Tuple[int, ...]]:
  if values is None:
    return None
  values = tuple(int(v) for v in values)
  if not values:
    raise ValueError(f"{name}: {field} must name at least one stage (or be None for all stages).")
  return values


def _all_stages(name: str, stages: Optional[Tuple[int, ...]], student: ModelOutput,
                teacher: ModelOutput) -> Tuple[int, ...]:
  """`stages`, or every stage index when None (student and teacher must then have as many stages)."""
  if stages is not None:
    return stages
  if len(student.stages) != len(teacher.stages):
    raise ValueError(f"{name}: the student has {len(student.stages)} stages and the teacher "
                     f"{len(teacher.stages)}; pass stages=(...) to choose the ones to pair.")
  return tuple(range(len(student.stages)))


def _per_stage(name: str, stages: Tuple[int, ...], student: ModelOutput, teacher: ModelOutput, fn):
  """`(Σ_i fn(s_i, t_i), {'stage<i>': fn(s_i, t_i)})` over the paired stage outputs."""
  values = {}
  for idx in stages:
    s, t = _stage(name, "student", student, idx), _stage(name, "teacher", teacher, idx)
    values[f"stage{idx % len(student.stages)}"] = fn(s, jax.lax.stop_gradient(t))
  return sum(values.values()), values


@dataclasses.dataclass(frozen=True)
class AT(Distiller):
  """Attention transfer summed over stage outputs, `Σ_i losses.attention_transfer(s_i, t_i, p)`.

  Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928. RepDistiller applies it to `feat[1:-1]`, every stage
  output of the CIFAR ResNets/WRNs (here `stages=None`: every index of `ModelOutput.stages`), with weight
  β = 1000 next to CE 1. Metrics: `stage<i>`, each stage's term.

  Attributes:
    stages: indices into `ModelOutput.stages`, the same for student and teacher; None = all of them.
    p: exponent of the attention map.
    form: "reference" (RepDistiller's squared mean) or "paper" (see `losses.attention_transfer`).
  """

  stages: Optional[Tuple[int, ...]] = None
  p: float = 2.0
  form: str = "reference"

  def __post_init__(self):
    require_positive("at", p=self.p)
    _check_form("at", self.form)
    object.__setattr__(self, "stages", _int_tuple("at", "stages", self.stages))

  def loss(self, variables, student, teacher, batch, ctx):
    value, metrics = _per_stage("at", _all_stages("at", self.stages, student, teacher), student, teacher,
                                lambda s, t: losses.attention_transfer(s, t, p=self.p, form=self.form))
    return value, metrics, {}


@dataclasses.dataclass(frozen=True)
class SP(Distiller):
  """Similarity-preserving KD on one stage output, `losses.similarity_preserving(s, t)`.

  Tung & Mori, ICCV 2019, arXiv:1907.09682. RepDistiller reads `feat[-2]`, the last stage output
  (`stage=-1`), with weight 3000 next to CE 1.

  Attributes:
    stage: index into `ModelOutput.stages` (negative counts from the end).
    teacher_stage: the teacher's stage, if different from `stage`.
  """

  stage: int = -1
  teacher_stage: Optional[int] = None

  def loss(self, variables, student, teacher, batch, ctx):
    t_stage = self.stage if self.teacher_stage is None else self.teacher_stage
    s, t = _stage("sp", "student", student, self.stage), _stage("sp", "teacher", teacher, t_stage)
    return losses.similarity_preserving(s, jax.lax.stop_gradient(t)), {}, {}


def _torch_linear_init(fan_in: int):
  """PyTorch's `nn.Linear` default initialisation: weight and bias ~ U(−1/√fan_in, 1/√fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)
  return (nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
          lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound))


class CorrelationEmbed(nn.Module):
  """RepDistiller's two `LinearEmbed` layers for CC: one Dense for the student's pooled embedding, one for the
  teacher's, both to `features` dimensions and both trained (with PyTorch's default `nn.Linear` init)."""

  features: int

  @nn.compact
  def __call__(self, student_embedding: jax.Array, teacher_embedding: jax.Array) -> Tuple[jax.Array, jax.Array]:
    outs = []
    for name, x in (("student_embed", student_embedding), ("teacher_embed", teacher_embedding)):
      x = x.reshape(x.shape[0], -1)
      kernel_init, bias_init = _torch_linear_init(x.shape[-1])
      outs.append(nn.Dense(self.features, kernel_init=kernel_init, bias_init=bias_init, name=name)(x))
    return outs[0], outs[1]


@dataclasses.dataclass(frozen=True)
class CC(Distiller):
  """Correlation congruence on linearly embedded pooled features, `losses.correlation_congruence(W_s e_s, W_t e_t)`.

  Peng et al., ICCV 2019, arXiv:1904.01802. As RepDistiller: `ModelOutput.embedding` of student and teacher
  each go through a trainable linear layer to `embed_dim` = 128 (`--feat_dim`), both layers trained with the
  student (the teacher's features stay constants), weight 0.02 next to CE 1, `form="reference"`.
  `embed_dim=0` uses the raw embeddings (only `form="paper"` accepts different widths).

  Attributes:
    embed_dim: output width of the two embed layers; 0 = no embed layers.
    form: "reference" (RepDistiller's neighbour-product loss) or "paper" (Taylor-expanded Gaussian kernel).
    gamma: γ of the paper's kernel.
    order: P, the paper's Taylor order.
  """

  embed_dim: int = 128
  form: str = "reference"
  gamma: float = 0.4
  order: int = 2

  def __post_init__(self):
    _check_form("cc", self.form)
    require_positive("cc", gamma=self.gamma)
    if self.embed_dim < 0 or self.order < 0:
      raise ValueError(f"cc: embed_dim and order must be >= 0, got embed_dim={self.embed_dim}, order={self.order}.")

  def init(self, rng, student, teacher, batch):
    if not self.embed_dim:
      return {}
    return dict(CorrelationEmbed(self.embed_dim).init(rng, student.embedding, teacher.embedding))

  def loss(self, variables, student, teacher, batch, ctx):
    s, t = student.embedding, jax.lax.stop_gradient(teacher.embedding)
    if self.embed_dim:
      s, t = CorrelationEmbed(self.embed_dim).apply(variables, s, t)
    value = losses.correlation_congruence(s, t, form=self.form, gamma=self.gamma, order=self.order,
                                          stop_teacher_gradient=False)
    return value, {}, {}


@dataclasses.dataclass(frozen=True)
class PKT(Distiller):
  """Probabilistic knowledge transfer on the pooled embeddings, `losses.pkt(e_s, e_t)`.

  Passalis & Tefas, ECCV 2018, arXiv:1803.10837. RepDistiller reads `feat[-1]` (`ModelOutput.embedding`),
  weight 30000 next to CE 1.

  Attributes:
    eps: ε of the normalisation and the logarithm (1e-7, the authors' code).
    form: "reference" (authors' code) or "paper" (see `losses.pkt`).
  """

  eps: float = 1e-7
  form: str = "reference"

  def __post_init__(self):
    require_positive("pkt", eps=self.eps)
    _check_form("pkt", self.form)

  def loss(self, variables, student, teacher, batch, ctx):
    return losses.pkt(student.embedding, jax.lax.stop_gradient(teacher.embedding), eps=self.eps,
                      form=self.form), {}, {}


@dataclasses.dataclass(frozen=True)
class NST(Distiller):
  """Neuron selectivity transfer summed over stage outputs, `Σ_i losses.nst(s_i, t_i)`.

  Huang & Wang, 2017, arXiv:1707.01219. RepDistiller applies it to `feat[1:-1]` (here `stages=None`: every
  index of `ModelOutput.stages`), weight 50 next to CE 1. Metrics: `stage<i>`, each stage's term.

  Attributes:
    stages: indices into `ModelOutput.stages`, the same for student and teacher; None = all of them.
    degree: d of the polynomial kernel.
    offset: c of the polynomial kernel.
  """

  stages: Optional[Tuple[int, ...]] = None
  degree: int = 2
  offset: float = 0.0

  def __post_init__(self):
    require_positive("nst", degree=self.degree)
    object.__setattr__(self, "stages", _int_tuple("nst", "stages", self.stages))

  def loss(self, variables, student, teacher, batch, ctx):
    value, metrics = _per_stage("nst", _all_stages("nst", self.stages, student, teacher), student, teacher,
                                lambda s, t: losses.nst(s, t, degree=self.degree, offset=self.offset))
    return value, metrics, {}


STEM = "stem"  # names `ModelOutput.stem` in FSP's `stage_pairs`, next to stage indices


def _fsp_feature(who: str, out: ModelOutput, key) -> jax.Array:
  """The map a `stage_pairs` entry names: `ModelOutput.stem` for 'stem', else a stage output."""
  if key == STEM:
    if out.stem is None:
      raise KDJaxError(f"fsp: stage_pairs names the stem, but the {who}'s output has none (only models with a "
                       "separate stem, such as the CIFAR ResNets, fill `ModelOutput.stem`); drop the stem pair.")
    return out.stem
  return _stage("fsp", who, out, key)


def _fsp_default_pairs(student: ModelOutput, teacher: ModelOutput) -> Tuple[Tuple[Any, Any], ...]:
  """RepDistiller's pairs: consecutive entries of `(stem, stage 1, ..., stage n)`, the stem only if both have one."""
  if len(student.stages) != len(teacher.stages):
    raise KDJaxError(f"fsp: the student has {len(student.stages)} stages and the teacher {len(teacher.stages)}; "
                     "pass stage_pairs=((first, second), ...) to choose the maps to pair.")
  if (student.stem is None) != (teacher.stem is None):
    has, lacks = ("student", "teacher") if teacher.stem is None else ("teacher", "student")
    raise KDJaxError(f"fsp: the {has} has a stem feature and the {lacks} none (a teacher-output cache does not "
                     "hold it either), so RepDistiller's (stem, stage 1) pair is undefined; pass stage_pairs "
                     "explicitly, e.g. ((0, 1), (1, 2)), or set config.teacher.cache=False.")
  keys = ((STEM,) if student.stem is not None else ()) + tuple(range(len(student.stages)))
  return tuple(zip(keys[:-1], keys[1:]))


def _fsp_key(value):
  if isinstance(value, str):
    if value != STEM:
      raise KDJaxError(f"fsp: a stage_pairs entry is a stage index or 'stem', got {value!r}.")
    return STEM
  return int(value)


@dataclasses.dataclass(frozen=True)
class FSP(Distiller):
  """Flow-of-solution-procedure matrices between pairs of maps, `losses.fsp(student_pairs, teacher_pairs)`.

  Yim, Joo, Bae, Kim, CVPR 2017 (no arXiv). Reference: RepDistiller (HobbitLong/RepDistiller,
  `distiller_zoo/FSP.py`, `train_student.py`, `helper/pretrain.py`), which pairs consecutive entries of
  `feat[:-1]` = (stem, stage 1, ..., stage n): with `stage_pairs=None` (default) the pairs are
  `('stem', 0), (0, 1), ..., (n-2, n-1)` when both models fill `ModelOutput.stem` (the CIFAR ResNets do),
  and the consecutive stage pairs when neither does; a stem on one side only raises. Paired maps need
  equal channel counts in student and teacher (resnet8 ↔ resnet20: 16/16/32/64; resnet8x4 ↔ resnet32x4).

  FSP is a pre-training method in both references: RepDistiller trains the student's feature layers on
  `Σ_pairs fsp` alone (no weight: its `-b 50` multiplies a zero later) for 30 epochs at a constant lr 0.05
  with the teacher in eval mode, then trains with cross-entropy alone; the paper likewise trains on the FSP
  loss first, then on the task. `experiments/digits_fsp.py` declares those two phases; a term weight only
  matters if FSP is added to a joint objective instead, which neither reference does.

  Attributes:
    stage_pairs: `((first, second), ...)`, each entry an index into `ModelOutput.stages` or 'stem', the
      same for student and teacher; None = RepDistiller's pairs (above).
    form: "reference" (RepDistiller's per-pair mean) or "paper" (see `losses.fsp`).
  """

  stage_pairs: Optional[Tuple[Tuple[Any, Any], ...]] = None
  form: str = "reference"

  def __post_init__(self):
    _check_form("fsp", self.form)
    if self.stage_pairs is None:
      return
    pairs = tuple(tuple(pair) for pair in self.stage_pairs)
    if not pairs or any(len(pair) != 2 for pair in pairs):
      raise KDJaxError(f"fsp: stage_pairs must be a non-empty sequence of (first, second) entries (stage "
                       f"indices or 'stem'), or None for RepDistiller's pairs; got {self.stage_pairs!r}.")
    object.__setattr__(self, "stage_pairs", tuple(tuple(_fsp_key(k) for k in pair) for pair in pairs))

  def pairs(self, student: ModelOutput, teacher: ModelOutput) -> Tuple[Tuple[Any, Any], ...]:
    """The `(first, second)` keys this term pairs for these outputs."""
    return self.stage_pairs if self.stage_pairs is not None else _fsp_default_pairs(student, teacher)

  def loss(self, variables, student, teacher, batch, ctx):
    pairs = self.pairs(student, teacher)
    s_pairs = [(_fsp_feature("student", student, a), _fsp_feature("student", student, b)) for a, b in pairs]
    t_pairs = [(_fsp_feature("teacher", teacher, a), _fsp_feature("teacher", teacher, b)) for a, b in pairs]
    return losses.fsp(s_pairs, jax.lax.stop_gradient(t_pairs), form=self.form), {}, {}


# ------------------------------------------------------------------------------------------------------
# Methods with a pre-training phase (kd_jax.train.phases): AB's connector initialisation, FT's paraphraser.
# ------------------------------------------------------------------------------------------------------


# The AB reference's connector init (bhheo/AB_distillation, `models/distillation_module.py`): each connector
# conv's weight is drawn `normal_(0, sqrt(2 / n))` with `n = k_h·k_w·out_channels`, i.e. an untruncated
# normal with He's gain over the *fan-out* (the old torchvision ResNet init), not fan-in He-normal.
AB_CONNECTOR_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ABConnector(nn.Module):
  """AB's connector onto the teacher response: 1×1 conv (no bias) + BatchNorm (scale 1, bias 0), no
  activation (the loss reads pre-activations), as the original code's `Connect*` layers (Heo et al., AAAI
  2019, arXiv:1811.03233; bhheo/AB_distillation). The conv kernel is `N(0, 2/(k²·C_out))`, the reference's
  fan-out init (`AB_CONNECTOR_INIT`); a [B, D] response gets a Dense layer with the same rule (k = 1).
  Maps of different spatial size go through `Regressor`'s resampling conv instead, without its ReLU
  (RepDistiller's `ConvReg(use_relu=False)`; the original code has no such case)."""

  target_shape: Tuple[int, ...]
  kernels: Any = None  # the run's convolutions (`Context.kernels`); None: XLA's. Parameters do not depend on it

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim == 4 and x.shape[1:3] != tuple(self.target_shape[1:3]):
      return Regressor(self.target_shape, activate=False, kernels=self.kernels)(x, train)
    if x.ndim == 2:
      return nn.Dense(self.target_shape[-1], use_bias=False, kernel_init=AB_CONNECTOR_INIT)(x)
    x = nn.Conv(self.target_shape[-1], (1, 1), use_bias=False, kernel_init=AB_CONNECTOR_INIT,
                conv_general_dilated=conv_of(self.kernels))(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)


def _apply_with_state(module: nn.Module, variables, x: jax.Array, train: bool):
  """`module(x)`, returning its updated `batch_stats` when training (as FitNet's regressor)."""
  if train and "batch_stats" in variables:
    y, state = module.apply(variables, x, train=True, mutable=["batch_stats"])
    return y, dict(state)
  return module.apply(variables, x, train=False), {}


@dataclasses.dataclass(frozen=True)
class AB(Distiller):
  """Activation-boundary distillation on pre-ReLU stage responses, with trainable connectors.

  Heo, Lee, Yun, Choi, AAAI 2019, arXiv:1811.03233. `L = scale · Σ_i w_i · activation_boundary(c_i(s_i), t_i)`
  over paired `ModelOutput.preact_stages`, with `w_i = 2^(i−n+1)` (deepest 1, then ½, ¼, ...) and
  `scale = 3/1000` (the CIFAR scale of both the original code and RepDistiller; ImageNet used 1/1000). A
  connector `c_i` is omitted where the student response already has the teacher's shape.

  AB is a pre-training method: train student and connectors on this loss alone in a first phase, then
  drop the connectors and train normally (`experiments/digits_ab.py`); the teacher's BatchNorm mode in
  that phase is the phase's `teacher_batch_statistics` switch. Metrics: `stage<i>` (unweighted terms) and
  `mismatch`, the fraction of neurons whose activation differs from the teacher's (the paper's monitor).

  Attributes:
    stages: stage indices to pair (None: every stage).
    margin: μ.
    scale: overall factor.
  """

  stages: Optional[Tuple[int, ...]] = None
  margin: float = 1.0
  scale: float = 3.0 / 1000.0

  def __post_init__(self):
    object.__setattr__(self, "stages", _int_tuple("ab", "stages", self.stages))
    require_positive("ab", margin=self.margin, scale=self.scale)

  def _pairs(self, student, teacher):
    pairs = []
    for idx in _all_stages("ab", self.stages, student, teacher):
      _stage("ab", "student", student, idx)  # validates the index for both models
      _stage("ab", "teacher", teacher, idx)
      pairs.append((f"stage{idx % len(student.stages)}", student.preact_stages[idx],
                    jax.lax.stop_gradient(teacher.preact_stages[idx])))
    return pairs

  def init(self, rng, student, teacher, batch):
    variables: dict = {}
    for i, (key, s, t) in enumerate(self._pairs(student, teacher)):
      if s.shape != t.shape:
        for col, tree in ABConnector(t.shape).init(jax.random.fold_in(rng, i), s, train=False).items():
          variables.setdefault(col, {})[key] = tree
    return variables

  def loss(self, variables, student, teacher, batch, ctx):
    pairs = self._pairs(student, teacher)
    total, metrics, state, mismatched, neurons = 0.0, {}, {}, 0.0, 0
    for i, (key, s, t) in enumerate(pairs):
      if key in variables.get("params", {}):
        sub = {col: tree[key] for col, tree in variables.items() if key in tree}
        s, sub_state = _apply_with_state(ABConnector(t.shape, kernels=ctx.kernels), sub, s, ctx.train)
        for col, tree in sub_state.items():
          state.setdefault(col, {})[key] = tree
      value = losses.activation_boundary(s, t, margin=self.margin)
      metrics[key] = value
      total = total + 2.0 ** (i - len(pairs) + 1) * value
      mismatched = mismatched + losses.activation_mismatch(s, t) * t.size
      neurons += t.size
    metrics["mismatch"] = mismatched / neurons
    return self.scale * total, metrics, state


class FTConvStack(nn.Module):
  """Three 3×3 convs (stride 1, padding 1, bias), each followed by LeakyReLU(0.1): FT's paraphraser encoder
  (`widths` = (C, kC, kC)) and translator ((C_s, kC_t, kC_t)), as the official code has them (no BN)."""

  widths: Tuple[int, int, int]
  transpose: bool = False
  kernels: Any = None  # the run's convolutions for the plain (not transposed) convs; None: XLA's

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.widths:
      if self.transpose:
        x = nn.ConvTranspose(width, (3, 3), padding="SAME")(x)
      else:
        x = nn.Conv(width, (3, 3), padding=1, conv_general_dilated=conv_of(self.kernels))(x)
      x = nn.leaky_relu(x, 0.1)
    return x


class Paraphraser(nn.Module):
  """FT's teacher-side autoencoder: encoder C→C→kC→kC, decoder kC→kC→C→C (transposed convs)."""

  channels: int
  factor_channels: int
  kernels: Any = None  # the run's convolutions for the encoder; None: XLA's

  def setup(self):
    self.encoder = FTConvStack((self.channels, self.factor_channels, self.factor_channels), kernels=self.kernels)
    self.decoder = FTConvStack((self.factor_channels, self.channels, self.channels), transpose=True)

  def __call__(self, x: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """`(factor, reconstruction)`."""
    factor = self.encoder(x)
    return factor, self.decoder(factor)

  def encode(self, x: jax.Array) -> jax.Array:
    return self.encoder(x)


@dataclasses.dataclass(frozen=True)
class FT(Distiller):
  """Factor transfer: a paraphraser pre-trained on the teacher's feature, then a translator on the student's.

  Kim, Park, Kwak, NeurIPS 2018, arXiv:1802.04977; reference Jangho-Kim/Factor-Transfer-pytorch
  (`train_Paraphraser.py`, `train_student.py`, `Models/FeatureProjection.py`). Both parts live under this
  term's parameters (`paraphraser`, `translator`) and `mode` says which loss a phase trains:
  - `mode="paraphraser"` (phase 1; train only `distiller/<term>/paraphraser`): the reconstruction
    `mean |x_t − P(x_t)|` of the teacher feature x_t (L1 as the official code; the paper writes L2).
  - `mode="transfer"` (phase 2; train `student` and `distiller/<term>/translator`): `losses.factor_transfer(
    Tr(x_s), enc(x_t), p, form)` with the paraphraser frozen; by default the official code's
    `mean_{b,d} |Tr(x_s)/‖·‖₂ − enc(x_t)/‖·‖₂|` on the flattened factors, with β = 500 (its default)
    as the term's weight in the configs. `form="reference"` is RepDistiller's channel-mean-of-squares
    factor (β 200 there).
  Taps the last stage (before pooling) by default, as the paper. Factor channels `k·C_t`, `rate` k = 0.5.
  `experiments/digits_ft.py` chains the phases.

  Attributes:
    mode: 'paraphraser' or 'transfer'.
    stage: the stage both models are tapped at (negative counts from the end).
    rate: factor rate k.
    p: the factor loss's norm (1 in the paper and the official code).
    form: see `losses.factor_transfer`: 'paper' (default; the paper's flattened factor, averaged as the
      official code does) or 'reference' (RepDistiller's re-implementation).
  """

  mode: str = "transfer"
  stage: int = -1
  rate: float = 0.5
  p: int = 1
  form: str = "paper"

  def __post_init__(self):
    if self.mode not in ("paraphraser", "transfer"):
      raise ValueError(f"ft: mode must be 'paraphraser' (phase 1) or 'transfer' (phase 2), got {self.mode!r}.")
    require_positive("ft", rate=self.rate)
    _check_form("ft", self.form)

  def _modules(self, s: jax.Array, t: jax.Array, kernels: Any = None) -> Tuple[Paraphraser, FTConvStack]:
    if s.ndim != 4 or t.ndim != 4:
      raise ValueError(f"ft: needs NHWC stage outputs; got student {s.shape} and teacher {t.shape}.")
    factor = max(1, int(round(self.rate * t.shape[-1])))
    return (Paraphraser(t.shape[-1], factor, kernels=kernels),
            FTConvStack((s.shape[-1], factor, factor), kernels=kernels))

  def _features(self, student, teacher):
    return (_stage("ft", "student", student, self.stage),
            jax.lax.stop_gradient(_stage("ft", "teacher", teacher, self.stage)))

  def init(self, rng, student, teacher, batch):
    s, t = self._features(student, teacher)
    paraphraser, translator = self._modules(s, t)
    p_rng, t_rng = jax.random.split(rng)
    return {"params": {"paraphraser": paraphraser.init(p_rng, t)["params"],
                       "translator": translator.init(t_rng, s)["params"]}}

  def loss(self, variables, student, teacher, batch, ctx):
    s, t = self._features(student, teacher)
    paraphraser, translator = self._modules(s, t, ctx.kernels)
    params = variables["params"]
    if self.mode == "paraphraser":
      _, reconstruction = paraphraser.apply({"params": params["paraphraser"]}, t)
      return jnp.mean(jnp.abs(reconstruction - t)), {}, {}
    teacher_factor = paraphraser.apply({"params": jax.lax.stop_gradient(params["paraphraser"])}, t,
                                       method=Paraphraser.encode)
    student_factor = translator.apply({"params": params["translator"]}, s)
    return losses.factor_transfer(student_factor, teacher_factor, p=self.p, form=self.form), {}, {}
