"""Single-image super-resolution networks: EDSR and RCAN, with a sub-pixel (pixel-shuffle) upsampler.

EDSR: Lim, Son, Kim, Nah, Lee, "Enhanced Deep Residual Networks for Single Image Super-Resolution",
CVPRW 2017, arXiv:1707.02921; reference code `sanghyun-son/EDSR-PyTorch`, `src/model/edsr.py` and
`src/model/common.py` (`MeanShift`, `ResBlock`, `Upsampler`).
RCAN: Zhang, Li, Li, Wang, Zhong, Fu, "Image Super-Resolution Using Very Deep Residual Channel Attention
Networks", ECCV 2018, arXiv:1807.02758; reference code `yulunzhang/RCAN`, `RCAN_TrainCode/code/model/rcan.py`
(`CALayer`, `RCAB`, `ResidualGroup`), built on EDSR-PyTorch's `common.py`.
The sub-pixel convolution is Shi et al., "Real-Time Single Image and Video Super-Resolution Using an
Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016, arXiv:1609.05158.

Both networks share one layout: mean shift, a 3x3 head conv (C -> F), a body of residual units followed by
a 3x3 conv and a long skip from the head, then the tail: the upsampler and a 3x3 conv (F -> C), and the
mean added back. No BatchNorm anywhere (EDSR's point), so there is no `batch_stats` collection and `train`
changes nothing.

Inputs are low-resolution NHWC images in [0, 1] with any channel count C; `prediction` is the SR image
[B, H*s, W*s, C] in the same [0, 1] units, not clipped (the loss sees the raw output, as in the references).

Mean shift. The references keep images in [0, rgb_range] (EDSR-PyTorch's default `--rgb_range 255`) and
their `MeanShift` (a frozen 1x1 conv) subtracts `rgb_range * mean` at the input and adds it back at the
output; BasicSR's EDSR/RCAN take [0, 1] images and compute `(x - mean) * img_range` in and
`y / img_range + mean` out with `img_range = 255`, the same function. kd_jax does the latter with
`rgb_range` = 1 by default, i.e. simply `x - mean` in and `y + mean` out: the convolutions then see
values about 255 times smaller than the references' networks do. For EDSR that is only a rescaling of
the biases (a ReLU network is positively homogeneous in its input and biases together), for RCAN the
sigmoid of the channel attention is not homogeneous; set the modules' `rgb_range` to 255 to compute
exactly what the references compute. The mean is DIV2K's RGB mean (0.4488, 0.4371, 0.4040), the
references' default; for C != 3 channels every channel uses the mean of those three values.

Initialisation: the references keep PyTorch's default `nn.Conv2d` initialisation, kaiming_uniform with
a = sqrt(5) for the weights, which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and U(-1/sqrt(fan_in),
1/sqrt(fan_in)) for the biases too (fan_in = k*k*C_in). Weights use `variance_scaling(1/3, "fan_in",
"uniform")` (the same bound), biases `torch_bias_init(fan_in)` below.

Submodules are named after the references' modules so a converter for their checkpoints is a renaming:
EDSR `head` (`head.0`), `block{i}` with `conv1`/`conv2` (`body.i.body.0`/`.2`), `body_conv`
(`body.{n}`), `upsampler` with `conv0` (`tail.0.0`) and, at x4, `conv1` (`tail.0.2`), `tail` (`tail.1`);
RCAN `group{g}` with `block{b}` (`body.g.body.b`: `conv1`/`conv2` = `body.0`/`.2`, `ca_down`/`ca_up` =
`body.3.conv_du.0`/`.2`) and `conv` (`body.g.body.{n}`), then `body_conv`, `upsampler`, `tail` as EDSR.
PyTorch kernels [C_out, C_in, kh, kw] become Flax kernels [kh, kw, C_in, C_out].
"""

from __future__ import annotations

import math
from typing import Any, Callable, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError, one_of
from kd_jax.models.layers import torch_default_init
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, global_avg_pool

# DIV2K's RGB mean (training images 1-800), the default of EDSR-PyTorch's `MeanShift` and of RCAN.
DIV2K_RGB_MEAN: Tuple[float, float, float] = (0.4488, 0.4371, 0.4040)
# The scales the upsampler builds: one x2 or x3 sub-pixel step, or two x2 steps for x4. EDSR's `Upsampler`
# also chains three x2 steps for x8; kd_jax builds the three scales of the standard benchmark tables.
SUPPORTED_SCALES: Tuple[int, ...] = (2, 3, 4)


def torch_bias_init(fan_in: int) -> Callable[..., jax.Array]:
  """PyTorch's default conv/linear bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Flax's bias
  initialisers see only the bias shape, so the layer's fan_in (k*k*C_in) is bound here."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key: jax.Array, shape: Tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def sr_conv(features: int, kernel_size: int, in_features: int, dtype: Dtype, param_dtype: Dtype, name: str, *,
            kernels: Kernels) -> nn.Conv:
  """A stride-1 square conv with a bias, PyTorch's `padding=kernel_size // 2` and PyTorch's default init
  (EDSR-PyTorch's `common.default_conv`). `in_features` sets the bias init's fan_in."""
  pad = kernel_size // 2
  return nn.Conv(features, (kernel_size, kernel_size), padding=((pad, pad), (pad, pad)), use_bias=True,
                 kernel_init=torch_default_init,
                 bias_init=torch_bias_init(kernel_size * kernel_size * in_features), dtype=dtype,
                 param_dtype=param_dtype, conv_general_dilated=kernels.conv_general_dilated, name=name)


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """Sub-pixel rearrangement [B, H, W, C*r*r] -> [B, H*r, W*r, C], in PyTorch's `nn.PixelShuffle` order.

  Input channel c*r*r + i*r + j goes to output channel c at sub-pixel (i, j), i.e.
  `out[b, h*r + i, w*r + j, c] = x[b, h, w, c*r*r + i*r + j]`: the channel axis is read as (C, r, r),
  C slowest, exactly as PyTorch reads its NCHW channel axis, so weights converted from the references
  produce the same image. `space_to_depth` is its exact inverse.
  """
  if x.ndim != 4:
    raise KDJaxError(f"pixel_shuffle expects NHWC [B, H, W, C*r*r]; got shape {x.shape}.")
  if r < 1:
    raise KDJaxError(f"pixel_shuffle: the factor must be a positive integer; got r={r}.")
  b, h, w, crr = x.shape
  if crr % (r * r):
    raise KDJaxError(f"pixel_shuffle: {crr} channels are not a multiple of r*r = {r * r}.")
  c = crr // (r * r)
  x = x.reshape(b, h, w, c, r, r)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # [B, H, i, W, j, C]
  return x.reshape(b, h * r, w * r, c)


def space_to_depth(x: jax.Array, r: int) -> jax.Array:
  """The inverse of `pixel_shuffle`: [B, H*r, W*r, C] -> [B, H, W, C*r*r], pixel (h*r + i, w*r + j) of
  channel c going to channel c*r*r + i*r + j at (h, w) (PyTorch's `nn.PixelUnshuffle` order)."""
  if x.ndim != 4:
    raise KDJaxError(f"space_to_depth expects NHWC [B, H*r, W*r, C]; got shape {x.shape}.")
  if r < 1:
    raise KDJaxError(f"space_to_depth: the factor must be a positive integer; got r={r}.")
  b, hr, wr, c = x.shape
  if hr % r or wr % r:
    raise KDJaxError(f"space_to_depth: spatial size {hr}x{wr} is not divisible by r={r}.")
  x = x.reshape(b, hr // r, r, wr // r, r, c)
  x = x.transpose(0, 1, 3, 5, 2, 4)  # [B, H, W, C, i, j]
  return x.reshape(b, hr // r, wr // r, c * r * r)


def check_scale(scale: int) -> int:
  """`scale` if the upsampler supports it; otherwise a KDJaxError naming the supported scales."""
  if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SUPPORTED_SCALES:
    raise KDJaxError(f"Super-resolution scale must be {one_of(SUPPORTED_SCALES)}; got scale={scale!r}.")
  return scale


def channel_mean(channels: int) -> Tuple[float, ...]:
  """The per-channel mean the mean shift subtracts: DIV2K's RGB mean for 3 channels, otherwise the mean
  of its three values for every channel."""
  if channels == 3:
    return DIV2K_RGB_MEAN
  return (sum(DIV2K_RGB_MEAN) / 3.0,) * channels


def _check_image(model: str, x: jax.Array) -> None:
  if x.ndim != 4:
    raise KDJaxError(f"{model} expects NHWC low-resolution images [B, H, W, C]; got an input of shape "
                     f"{x.shape}.")


class Upsampler(nn.Module):
  """EDSR's `common.Upsampler` without BN or activation: for x2 and x3 a 3x3 conv to F*s*s channels and a
  pixel shuffle by s; for x4 two such x2 steps (`conv0`, `conv1`)."""

  features: int
  scale: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    steps = (2, 2) if check_scale(self.scale) == 4 else (self.scale,)
    for i, r in enumerate(steps):
      x = sr_conv(self.features * r * r, 3, x.shape[-1], self.dtype, self.param_dtype, f"conv{i}",
                  kernels=self.kernels)(x)
      x = pixel_shuffle(x, r)
    return x


class EDSRBlock(nn.Module):
  """EDSR's residual block (`common.ResBlock`): conv3x3 - ReLU - conv3x3, scaled by `res_scale`, plus the
  input. No BatchNorm and no ReLU after the addition."""

  features: int
  res_scale: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f, dt, pdt, k = self.features, self.dtype, self.param_dtype, self.kernels
    y = nn.relu(sr_conv(f, 3, x.shape[-1], dt, pdt, "conv1", kernels=k)(x))
    y = sr_conv(f, 3, f, dt, pdt, "conv2", kernels=k)(y)
    if self.res_scale != 1.0:
      y = y * self.res_scale
    return x + y


def channel_attention(x: jax.Array, reduction: int, dtype: Dtype, param_dtype: Dtype, *,
                      kernels: Kernels) -> jax.Array:
  """RCAN's `CALayer`: global average pool -> 1x1 conv F -> F // reduction -> ReLU -> 1x1 conv -> sigmoid,
  then `x` scaled channel-wise. The 1x1 convs have biases and PyTorch's default init, as in the
  reference. Called inside a module's compact method, so the convs (`ca_down`, `ca_up`) are that
  module's submodules: flat in the block, like the reference's `body.3.conv_du.0`/`.2`."""
  f = x.shape[-1]
  squeezed = f // reduction
  y = jnp.mean(x, axis=(1, 2), keepdims=True)  # [B, 1, 1, F]
  y = nn.relu(sr_conv(squeezed, 1, f, dtype, param_dtype, "ca_down", kernels=kernels)(y))
  y = nn.sigmoid(sr_conv(f, 1, squeezed, dtype, param_dtype, "ca_up", kernels=kernels)(y))
  return x * y


class RCAB(nn.Module):
  """Residual channel attention block: conv3x3 - ReLU - conv3x3 - channel attention, plus the input. The
  reference's `res_scale` is unused (its multiplication is commented out), so there is none here."""

  features: int
  reduction: int = 16
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f, dt, pdt, k = self.features, self.dtype, self.param_dtype, self.kernels
    y = nn.relu(sr_conv(f, 3, x.shape[-1], dt, pdt, "conv1", kernels=k)(x))
    y = sr_conv(f, 3, f, dt, pdt, "conv2", kernels=k)(y)
    return x + channel_attention(y, self.reduction, dt, pdt, kernels=k)


class ResidualGroup(nn.Module):
  """RCAN's residual group: `num_blocks` RCABs, a 3x3 conv, plus the group's input (short skip)."""

  features: int
  num_blocks: int
  reduction: int = 16
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f, dt, pdt, k = self.features, self.dtype, self.param_dtype, self.kernels
    y = x
    for b in range(self.num_blocks):
      y = RCAB(f, self.reduction, dt, pdt, k, name=f"block{b}")(y)
    y = sr_conv(f, 3, f, dt, pdt, "conv", kernels=k)(y)
    return x + y


def _check_positive(model: str, **sizes: Any) -> None:
  for key, value in sizes.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise KDJaxError(f"{model}: {key} must be a positive integer; got {key}={value!r}.")


def _reconstruct(x: jax.Array, units: Tuple[nn.Module, ...], features: int, scale: int, rgb_range: float,
                 dtype: Dtype, param_dtype: Dtype, kernels: Kernels, train: bool) -> ModelOutput:
  """The layout EDSR and RCAN share, called from their compact `__call__` (so the convs built here are
  their submodules): mean shift, head conv, the body `units` (each one's output is a stage), body conv and
  long skip, upsampler, tail conv, mean added back."""
  channels = x.shape[-1]
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)  # an integer image would truncate the mean to 0
  mean = jnp.asarray(channel_mean(channels), x.dtype)
  x = x - mean
  if rgb_range != 1.0:
    x = x * rgb_range
  head = sr_conv(features, 3, channels, dtype, param_dtype, "head", kernels=kernels)(x)
  y, stages = head, []
  for unit in units:
    y = unit(y)
    stages.append(y)
  y = sr_conv(features, 3, features, dtype, param_dtype, "body_conv", kernels=kernels)(y)
  y = y + head  # the long skip: the body learns a residual on the head's features
  # The embedding is the pooled feature the tail reads (the body's output after the long skip).
  embedding = global_avg_pool(y, train, kernels)
  y = Upsampler(features, scale, dtype, param_dtype, kernels, name="upsampler")(y)
  y = sr_conv(channels, 3, features, dtype, param_dtype, "tail", kernels=kernels)(y)
  if rgb_range != 1.0:
    y = y / rgb_range
  prediction = y + mean.astype(y.dtype)
  # No activation ends a residual unit, so the pre-activation stages are the stages themselves.
  return ModelOutput(prediction=prediction, stages=tuple(stages), preact_stages=tuple(stages),
                     embedding=embedding)


class EDSR(nn.Module):
  """EDSR (Lim et al., CVPRW 2017, arXiv:1707.02921), as EDSR-PyTorch's `src/model/edsr.py`.

  Layout: mean shift; head 3x3 conv C -> F; body of `num_blocks` `EDSRBlock`s (conv-ReLU-conv, x
  `res_scale`, + input), a 3x3 conv and the long skip from the head; tail: `Upsampler` (x2/x3: conv to
  F*s*s and pixel shuffle; x4: two x2 steps) and a 3x3 conv F -> C; mean added back.

  Outputs (`ModelOutput`): `prediction` the SR image [B, H*s, W*s, C] in [0, 1] units (not clipped);
  `stages[i]` the output of residual block i ([B, H, W, F], input side first), `preact_stages` the same
  tuple (a block ends in its addition, not a ReLU); `embedding` [B, F], the body's output after the long
  skip, pooled over H and W.

  Attributes:
    scale: upscaling factor, 2, 3 or 4.
    num_blocks: residual blocks (the paper's EDSR 32, EDSR-baseline 16).
    features: channels F (256 and 64).
    res_scale: residual scaling (0.1 for the 256-channel EDSR, which the paper needs to train stably; 1
      for the baseline).
    rgb_range: the references' pixel range (see the module docstring); 1 keeps inputs in [0, 1].
    dtype: computation dtype.
    param_dtype: parameter dtype.
    kernels: the convolutions' kernels (`kd_jax.backends.Kernels`).
  """

  scale: int
  num_blocks: int = 16
  features: int = 64
  res_scale: float = 1.0
  rgb_range: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    _check_image("EDSR", x)
    check_scale(self.scale)
    _check_positive("EDSR", num_blocks=self.num_blocks, features=self.features)
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    blocks = tuple(EDSRBlock(self.features, self.res_scale, dt, pdt, k, name=f"block{i}")
                   for i in range(self.num_blocks))
    return _reconstruct(x, blocks, self.features, self.scale, self.rgb_range, dt, pdt, k, train)


class RCAN(nn.Module):
  """RCAN (Zhang et al., ECCV 2018, arXiv:1807.02758), as `yulunzhang/RCAN`'s `model/rcan.py`.

  Layout: mean shift; head 3x3 conv C -> F; body of `num_groups` `ResidualGroup`s (each `num_blocks`
  RCABs - conv-ReLU-conv, channel attention, + input - then a 3x3 conv and the group's short skip), a 3x3
  conv and the long skip from the head; tail: `Upsampler` and a 3x3 conv F -> C; mean added back.

  Outputs (`ModelOutput`): `prediction` the SR image [B, H*s, W*s, C] (not clipped); `stages[g]` the
  output of residual group g ([B, H, W, F]), `preact_stages` the same tuple; `embedding` [B, F], the
  body's output after the long skip, pooled.

  Attributes:
    scale: upscaling factor, 2, 3 or 4.
    num_groups: residual groups (10 in the paper).
    num_blocks: RCABs per group (20 in the paper).
    features: channels F (64).
    reduction: channel attention's reduction ratio (16); F // reduction must be at least 1.
    rgb_range: the references' pixel range (see the module docstring); 1 keeps inputs in [0, 1].
    dtype: computation dtype.
    param_dtype: parameter dtype.
    kernels: the convolutions' kernels (`kd_jax.backends.Kernels`).
  """

  scale: int
  num_groups: int = 10
  num_blocks: int = 20
  features: int = 64
  reduction: int = 16
  rgb_range: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    _check_image("RCAN", x)
    check_scale(self.scale)
    _check_rcan_shape(self.num_groups, self.num_blocks, self.features, self.reduction)
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    groups = tuple(ResidualGroup(self.features, self.num_blocks, self.reduction, dt, pdt, k, name=f"group{g}")
                   for g in range(self.num_groups))
    return _reconstruct(x, groups, self.features, self.scale, self.rgb_range, dt, pdt, k, train)


def _check_rcan_shape(num_groups: int, num_blocks: int, features: int, reduction: int) -> None:
  _check_positive("RCAN", num_groups=num_groups, num_blocks=num_blocks, features=features, reduction=reduction)
  if features // reduction < 1:
    raise KDJaxError(f"RCAN: the channel attention squeezes {features} channels to features // reduction = "
                     f"{features // reduction}; use reduction <= features (got reduction={reduction}).")


def edsr_custom(scale: int, num_blocks: int = 16, features: int = 64, res_scale: float = 1.0, *,
                dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                kernels: Kernels = DEFAULT_KERNELS) -> EDSR:
  """Any EDSR: `num_blocks` residual blocks of `features` channels, residual scaling `res_scale`."""
  check_scale(scale)
  _check_positive("EDSR", num_blocks=num_blocks, features=features)
  return EDSR(scale=scale, num_blocks=num_blocks, features=features, res_scale=float(res_scale), dtype=dtype,
              param_dtype=param_dtype, kernels=kernels)


def rcan_custom(scale: int, num_groups: int = 10, num_blocks: int = 20, features: int = 64,
                reduction: int = 16, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                kernels: Kernels = DEFAULT_KERNELS) -> RCAN:
  """Any RCAN: `num_groups` residual groups of `num_blocks` RCABs, `features` channels, attention
  reduction `reduction`."""
  check_scale(scale)
  _check_rcan_shape(num_groups, num_blocks, features, reduction)
  return RCAN(scale=scale, num_groups=num_groups, num_blocks=num_blocks, features=features,
              reduction=reduction, dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def _named(name: str, build: Callable[..., nn.Module], doc: str, **shape: Any) -> Callable[..., nn.Module]:
  def constructor(scale: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                  kernels: Kernels = DEFAULT_KERNELS) -> nn.Module:
    return build(scale, dtype=dtype, param_dtype=param_dtype, kernels=kernels, **shape)

  constructor.__name__ = constructor.__qualname__ = name
  constructor.__doc__ = doc
  return constructor


edsr = _named("edsr", edsr_custom, "EDSR as in the paper: 32 blocks, 256 channels, res_scale 0.1.",
              num_blocks=32, features=256, res_scale=0.1)
edsr_baseline = _named("edsr_baseline", edsr_custom,
                       "EDSR-baseline: 16 blocks, 64 channels, res_scale 1 (EDSR-PyTorch's default).",
                       num_blocks=16, features=64, res_scale=1.0)
edsr_8x32 = _named("edsr_8x32", edsr_custom, "EDSR, 8 blocks, 32 channels, res_scale 1 (the SR study's teacher).",
                   num_blocks=8, features=32, res_scale=1.0)
edsr_2x16 = _named("edsr_2x16", edsr_custom, "EDSR, 2 blocks, 16 channels, res_scale 1 (a tiny student).",
                   num_blocks=2, features=16, res_scale=1.0)
sr_tiny = _named("sr_tiny", edsr_custom, "EDSR, 1 block, 8 channels: the SR study's student.",
                 num_blocks=1, features=8, res_scale=1.0)
rcan = _named("rcan", rcan_custom, "RCAN as in the paper: 10 groups x 20 RCABs, 64 channels, reduction 16.",
              num_groups=10, num_blocks=20, features=64, reduction=16)
rcan_small = _named("rcan_small", rcan_custom,
                    "RCAN student of FAKD (He et al., ICIP 2020): 10 groups x 6 RCABs, 64 channels, "
                    "reduction 16 (`create_student_model` in the FAKD code's `train.py`).",
                    num_groups=10, num_blocks=6, features=64, reduction=16)
