"""ReviewKD: knowledge review with attention-based fusion (ABF) and the hierarchical context loss (HCL).

Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021, arXiv:2104.09044. Follows the
authors' CIFAR-100 code (dvlab-research/ReviewKD, `model/reviewkd.py`, `train.py`) and mdistiller's port
(`mdistiller/distillers/ReviewKD.py`, `engine/cfg.py`), which agree on the modules and the loss.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import losses
from kd_jax.distillers.base import Distiller, conv_of, require_positive
from kd_jax.models.outputs import ModelOutput

# `nn.init.kaiming_uniform_(w, a=1)` of the reference's ABF convs: gain 1, bound sqrt(3 / fan_in).
_abf_conv_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def _torch_conv_init(fan_in: int):
  """PyTorch's default `nn.Conv2d` initialisation (weight and bias ~ U(±1/sqrt(fan_in))), for `att_conv`."""
  bound = 1.0 / math.sqrt(fan_in)
  return (nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
          lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound))


def nearest_resize(x: jax.Array, size: Tuple[int, int]) -> jax.Array:
  """NHWC nearest-neighbour resize as PyTorch's `F.interpolate(mode='nearest')`: source index ⌊i·in/out⌋."""
  (h, w), (out_h, out_w) = x.shape[1:3], size
  if (h, w) == (out_h, out_w):
    return x
  rows = np.minimum((np.arange(out_h) * h) // out_h, h - 1)
  cols = np.minimum((np.arange(out_w) * w) // out_w, w - 1)
  return x[:, rows][:, :, cols]


class ABF(nn.Module):
  """Attention-based fusion of one student level with the review residual from the deeper levels.

  As the reference's `ABF`: `x = BN(conv1x1(x))` to `mid_channels`; if `fuse`, the residual (the previous,
  deeper ABF's fused map) is nearest-upsampled to x's size and the two are mixed by a two-channel sigmoid
  attention from a 1×1 conv on their concatenation, `x·a₀ + r·a₁`; x is then nearest-resized to the teacher's
  size `out_size` if it differs, and `y = BN(conv3x3(x))` to `out_channels`. Returns `(y, x)`: y is compared
  with the teacher, x is the residual handed to the next (shallower) level.

  Attributes:
    mid_channels: width of the fused maps.
    out_channels: the teacher feature's channels.
    fuse: False for the deepest level, which has no residual.
    kernels: the run's convolutions (`Context.kernels`; None: XLA's), which do not change the parameters.
  """

  mid_channels: int
  out_channels: int
  fuse: bool
  kernels: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, residual: Optional[jax.Array] = None,
               out_size: Optional[Tuple[int, int]] = None, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)
    conv = conv_of(self.kernels)
    x = nn.Conv(self.mid_channels, (1, 1), use_bias=False, kernel_init=_abf_conv_init,
                conv_general_dilated=conv, name="conv1")(x)
    x = bn("bn1")(x)
    if self.fuse:
      if residual is None:
        raise ValueError("ABF: a fusing level needs the residual of the deeper level.")
      residual = nearest_resize(residual, x.shape[1:3])
      kernel_init, bias_init = _torch_conv_init(2 * self.mid_channels)
      attention = nn.sigmoid(nn.Conv(2, (1, 1), kernel_init=kernel_init, bias_init=bias_init,
                                     conv_general_dilated=conv, name="att_conv")(
          jnp.concatenate([x, residual], axis=-1)))
      x = x * attention[..., 0:1] + residual * attention[..., 1:2]
    if out_size is not None:
      x = nearest_resize(x, tuple(out_size))
    y = nn.Conv(self.out_channels, (3, 3), padding=1, use_bias=False, kernel_init=_abf_conv_init,
                conv_general_dilated=conv, name="conv2")(x)
    return bn("bn2")(y), x


class ReviewFusion(nn.Module):
  """The review path: one ABF per level, run from the deepest level to the shallowest.

  `features` are the student's levels, shallow first; level i's ABF maps onto `out_channels[i]` channels at
  `out_sizes[i]` (the teacher's level i). The deepest ABF does not fuse; every other one fuses its level with
  the residual of the level below it (deeper), so each output reviews all deeper student levels. Outputs are
  returned shallow first, like the inputs. ABF `abf<i>` belongs to level i.

  Attributes:
    out_channels: teacher channels per level, shallow first.
    out_sizes: teacher (H, W) per level, shallow first.
    mid_channels: width of the fused maps (the reference: min(512, channels of the deepest student level)).
    kernels: the run's convolutions for every ABF (`Context.kernels`; None: XLA's).
  """

  out_channels: Tuple[int, ...]
  out_sizes: Tuple[Tuple[int, int], ...]
  mid_channels: int
  kernels: Any = None

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> Tuple[jax.Array, ...]:
    n = len(features)
    if not n == len(self.out_channels) == len(self.out_sizes):
      raise ValueError(f"ReviewFusion: {n} student levels for {len(self.out_channels)} teacher levels.")
    outputs: list = [None] * n
    residual = None
    for i in reversed(range(n)):
      abf = ABF(self.mid_channels, self.out_channels[i], fuse=i < n - 1, kernels=self.kernels, name=f"abf{i}")
      outputs[i], residual = abf(features[i], residual, self.out_sizes[i], train=train)
    return tuple(outputs)


def _levels(name: str, who: str, out: ModelOutput, preact: bool) -> Tuple[jax.Array, ...]:
  """The levels ReviewKD reads: every stage output (or pre-activation) plus the pooled embedding as 1×1."""
  stages = out.preact_stages if preact else out.stages
  for i, s in enumerate(stages):
    if s.ndim != 4:
      raise ValueError(f"{name}: the {who}'s stage {i} has shape {s.shape}; ReviewKD needs NHWC feature maps "
                       "(a convolutional model).")
  embedding = out.embedding.reshape(out.embedding.shape[0], 1, 1, -1)
  return tuple(stages) + (embedding,)


@dataclasses.dataclass(frozen=True)
class ReviewKD(Distiller):
  """ReviewKD, `min(epoch / warmup_epochs, 1) · Σ_i HCL(ABF-review(F_s)_i, F_t,i)`; see `losses.review_kd`.

  Levels, as mdistiller reads them: the student's stage outputs (`ModelOutput.stages`, post-activation;
  `student_preact=True` reads `preact_stages`) plus its pooled embedding as a 1×1 map, shallow first; the
  teacher's pre-activation stage outputs (`preact_stages`, the reference's `preact_feats[1:]`) plus its pooled
  embedding. The reference's per-architecture constants are derived from these outputs: `in_channels` and
  `shapes` from the student's levels, `out_channels` and `out_shapes` from the teacher's, and the fusion width
  `min(max_mid_channels, channels of the student's deepest level)`. The trainable `ReviewFusion` (one ABF
  per level, BatchNorm included) is owned by this distiller and discarded after training. Student and teacher
  need the same number of stages; the teacher is a constant (with several teachers, the first one).

  Warm-up as mdistiller: `epoch` is 1-based, so the first epoch is weighted 1/warmup_epochs (the authors'
  `train.py` uses the 0-based epoch, a zero weight in the first epoch). 0 disables it. Defaults are the
  reference's CIFAR-100 values: warm-up 20 epochs (of 240), CE weight 1 as a separate term, and the loss weight
  (the term's weight in `config.loss`) 1.0 in mdistiller's defaults, 5.0 in its resnet32x4 → resnet8x4
  config and in most of the authors' CIFAR scripts (0.6 for resnet56 → resnet20, 8.0 for ShuffleNetV2).
  Metrics: `hcl` (the unweighted loss), `warmup` and `level<i>` (each level's HCL term).

  Attributes:
    warmup_epochs: epochs of the linear warm-up of the loss weight.
    max_mid_channels: cap of the fusion width (512 in the reference).
    student_preact: read the student's pre-activation stages (mdistiller's `STU_PREACT`, False).
    teacher_preact: read the teacher's pre-activation stages (True in both references).
    levels: HCL's pooled sizes (4, 2, 1).
  """

  warmup_epochs: float = 20.0
  max_mid_channels: int = 512
  student_preact: bool = False
  teacher_preact: bool = True
  levels: Tuple[int, ...] = (4, 2, 1)

  def __post_init__(self):
    require_positive("review_kd", max_mid_channels=self.max_mid_channels)
    if self.warmup_epochs < 0:
      raise ValueError(f"review_kd: warmup_epochs must be >= 0, got {self.warmup_epochs}.")
    levels = tuple(int(level) for level in self.levels)
    if any(level < 1 for level in levels):
      raise ValueError(f"review_kd: levels must be positive sizes, got {self.levels!r}.")
    object.__setattr__(self, "levels", levels)

  def warmup_factor(self, epoch) -> jax.Array:
    if not self.warmup_epochs:
      return jnp.ones((), jnp.float32)
    return jnp.minimum(jnp.asarray(epoch, jnp.float32) / self.warmup_epochs, 1.0)

  def _features(self, student: ModelOutput, teacher) -> Tuple[Tuple[jax.Array, ...], Tuple[jax.Array, ...]]:
    if not isinstance(teacher, ModelOutput):  # several teachers: ReviewKD distils from the first
      teacher = teacher[0]
    s = _levels("review_kd", "student", student, self.student_preact)
    t = jax.lax.stop_gradient(_levels("review_kd", "teacher", teacher, self.teacher_preact))
    if len(s) != len(t):
      raise ValueError(f"review_kd: the student has {len(s) - 1} stages and the teacher {len(t) - 1}; "
                       "ReviewKD pairs every stage, so both need the same number.")
    return s, t

  def fusion(self, student_levels, teacher_levels, kernels: Any = None) -> ReviewFusion:
    return ReviewFusion(out_channels=tuple(t.shape[-1] for t in teacher_levels),
                        out_sizes=tuple(tuple(t.shape[1:3]) for t in teacher_levels),
                        mid_channels=min(self.max_mid_channels, student_levels[-1].shape[-1]), kernels=kernels)

  def init(self, rng, student, teacher, batch):
    s, t = self._features(student, teacher)
    return dict(self.fusion(s, t).init(rng, s, train=False))

  def loss(self, variables, student, teacher, batch, ctx):
    s, t = self._features(student, teacher)
    fusion = self.fusion(s, t, ctx.kernels)
    if ctx.train and "batch_stats" in variables:
      fused, state = fusion.apply(variables, s, train=True, mutable=["batch_stats"])
      state = dict(state)
    else:
      fused, state = fusion.apply(variables, s, train=False), {}
    hcl = losses.review_kd(fused, t, levels=self.levels)
    terms = {f"level{i}": losses.review_kd([fs], [ft], levels=self.levels)
             for i, (fs, ft) in enumerate(zip(fused, t))}
    factor = self.warmup_factor(ctx.epoch)
    return factor * hcl, {"hcl": hcl, "warmup": factor, **terms}, state
