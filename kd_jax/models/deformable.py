"""Modulated deformable convolution (deformable convolution v2) in JAX, NHWC.

Zhu, Hu, Lin, Dai, "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019, arXiv:1811.11168
(modulation), building on Dai et al., "Deformable Convolutional Networks", ICCV 2017, arXiv:1703.06211
(learned offsets). The sampling rule, the boundary handling and the layout of the offsets follow
torchvision's `deform_conv2d` (pytorch/vision, torchvision/ops/deform_conv.py and
torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp); the module's offset-and-mask predictor and its zero
initialisation follow mmcv's `ModulatedDeformConv2dPack` (open-mmlab/mmcv, mmcv/ops/modulated_deform_conv.py).

`deform_conv2d` is written with gathers and one contraction (no custom kernel), so JAX differentiates it
with respect to the input, the offsets, the modulation and the weights, on any backend. It does not go
through `kd_jax.backends.Kernels`; the regular convolution that predicts the offsets does.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.resnet_cifar import Dtype, batch_norm, conv_init

IntPair = Union[int, Sequence[int]]


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
  pair = (value, value) if isinstance(value, int) else tuple(value)
  if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
    raise KDJaxError(f"deform_conv2d: {name} must be an int or a pair of ints; got {value!r}.")
  return pair[0], pair[1]


def _positions(out: int, taps: int, stride: int, padding: int, dilation: int) -> jax.Array:
  """[out, taps] grid coordinate o·stride − padding + k·dilation of output row/column o and kernel tap k."""
  return (jnp.arange(out)[:, None] * stride - padding + jnp.arange(taps)[None, :] * dilation)


def bilinear_sample(x: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """Samples the zero-padded image `x` [B, H, W, C] at real positions (`rows`, `cols`), each [B, ...].

  v(r, c) = Σ over the four integer neighbours (i, j) of max(0, 1 − |r − i|)·max(0, 1 − |c − j|)·x[i, j],
  with x[i, j] = 0 outside [0, H) × [0, W): torchvision's `bilinear_interpolate`, whose early return of 0
  for r ≤ −1, r ≥ H, c ≤ −1 or c ≥ W gives the same values. Returns [B, ..., C].
  """
  batch, height, width, channels = x.shape
  lead = rows.shape[1:]
  y0, x0 = jnp.floor(rows), jnp.floor(cols)
  ly, lx = rows - y0, cols - x0
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  flat = x.reshape(batch, height * width, channels)
  out = jnp.zeros((batch, *lead, channels), x.dtype)
  for dy, wy in ((0, 1 - ly), (1, ly)):
    for dx, wx in ((0, 1 - lx), (1, lx)):
      row, col = y0 + dy, x0 + dx
      inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
      # Out-of-image corners read a valid address and are then zeroed by their weight.
      index = (jnp.clip(row, 0, height - 1) * width + jnp.clip(col, 0, width - 1)).reshape(batch, -1)
      values = jax.vmap(lambda f, i: f[i])(flat, index).reshape(batch, *lead, channels)
      weight = jnp.where(inside, wy * wx, 0).astype(x.dtype)
      out = out + weight[..., None] * values
  return out


def deform_conv2d(x: jax.Array, offsets: jax.Array, mask: Optional[jax.Array], kernel: jax.Array, *,
                  stride: IntPair = 1, padding: Optional[IntPair] = None, dilation: IntPair = 1) -> jax.Array:
  """Modulated deformable convolution (DCNv2), NHWC, no bias.

  out[b, p, o] = Σ_k Σ_c m_k(p) · v_c(p·stride − padding + k·dilation + Δp_k(p)) · W[k, c, o], where k runs
  over the kh·kw kernel taps (row-major, k = i·kw + j for tap (i, j)), Δp_k = (Δy_k, Δx_k) is the learned
  offset and v is the bilinear interpolation of the zero-padded input (`bilinear_sample`). With Δp = 0 and
  m = 1 this is `lax.conv_general_dilated` with the same stride, padding and dilation.

  Zhu, Hu, Lin, Dai, CVPR 2019, arXiv:1811.11168, Eq. (3); semantics of torchvision's
  `torchvision.ops.deform_conv2d` (pytorch/vision, torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp) with
  one offset group, moved to NHWC.

  Args:
    x: [B, H, W, Cin] input.
    offsets: [B, Ho, Wo, 2K], K = kh·kw, interleaved per tap as torchvision orders them:
      offsets[..., 2k] is Δy_k (rows), offsets[..., 2k + 1] is Δx_k (columns), in input pixels.
    mask: [B, Ho, Wo, K] modulation m_k (DCNv2 feeds sigmoid outputs), or None for m = 1 (DCNv1).
    kernel: [kh, kw, Cin, Cout] weights (Flax's `nn.Conv` layout).
    stride, padding, dilation: ints or (rows, columns) pairs; `padding` is the zero padding on each side
      (torchvision's meaning), default dilation·(k − 1) // 2, which keeps H×W at stride 1 for odd k.

  Returns:
    [B, Ho, Wo, Cout] with Ho = (H + 2·pad_h − dil_h·(kh − 1) − 1) // stride_h + 1 (and likewise Wo).

  Raises:
    KDJaxError: shapes that do not fit together (the message names the expected shape).
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise KDJaxError(f"deform_conv2d expects x [B, H, W, Cin] and kernel [kh, kw, Cin, Cout]; got shapes "
                     f"{x.shape} and {kernel.shape}.")
  kh, kw, cin, cout = kernel.shape
  if cin != x.shape[-1]:
    raise KDJaxError(f"deform_conv2d: the kernel takes {cin} input channels but x has {x.shape[-1]}.")
  sh, sw = _pair(stride, "stride")
  dh, dw = _pair(dilation, "dilation")
  ph, pw = _pair(padding, "padding") if padding is not None else (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
  if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
    raise KDJaxError(f"deform_conv2d: stride and dilation must be >= 1 and padding >= 0; got stride "
                     f"{(sh, sw)}, dilation {(dh, dw)}, padding {(ph, pw)}.")
  batch, height, width, _ = x.shape
  ho = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
  wo = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
  taps = kh * kw
  if ho < 1 or wo < 1:
    raise KDJaxError(f"deform_conv2d: a {kh}×{kw} kernel (dilation {(dh, dw)}, padding {(ph, pw)}) does not fit "
                     f"a {height}×{width} input.")
  if offsets.shape != (batch, ho, wo, 2 * taps):
    raise KDJaxError(f"deform_conv2d: offsets must have shape {(batch, ho, wo, 2 * taps)} [B, Ho, Wo, 2·kh·kw]; "
                     f"got {offsets.shape}.")
  if mask is not None and mask.shape != (batch, ho, wo, taps):
    raise KDJaxError(f"deform_conv2d: mask must have shape {(batch, ho, wo, taps)} [B, Ho, Wo, kh·kw]; got "
                     f"{mask.shape}.")
  # Coordinates in at least float32: bfloat16 cannot hold a fractional position beyond a few pixels.
  coord_dtype = jnp.promote_types(offsets.dtype, jnp.float32)
  rows = _positions(ho, kh, sh, ph, dh)  # [Ho, kh]
  cols = _positions(wo, kw, sw, pw, dw)  # [Wo, kw]
  base_y = jnp.broadcast_to(rows[:, None, :, None], (ho, wo, kh, kw)).reshape(ho, wo, taps)
  base_x = jnp.broadcast_to(cols[None, :, None, :], (ho, wo, kh, kw)).reshape(ho, wo, taps)
  delta = offsets.astype(coord_dtype).reshape(batch, ho, wo, taps, 2)
  sampled = bilinear_sample(x, base_y + delta[..., 0], base_x + delta[..., 1])  # [B, Ho, Wo, K, Cin]
  if mask is not None:
    sampled = sampled * mask.astype(sampled.dtype)[..., None]
  weights = kernel.reshape(taps, cin, cout)
  return jnp.einsum("bhwkc,kco->bhwo", sampled, weights.astype(sampled.dtype))


class DeformableConv2D(nn.Module):
  """A DCNv2 layer: a regular convolution predicts the offsets and modulation, `deform_conv2d` applies them.

  The predictor is a kh×kw convolution with the layer's stride, padding and dilation and 3K outputs
  (K = kh·kw): channels [0, 2K) are the offsets in `deform_conv2d`'s interleaved (Δy, Δx) order, channels
  [2K, 3K) the modulation logits, m = sigmoid(logit). Its weights and bias start at zero as in mmcv's
  `ModulatedDeformConv2dPack.init_weights` (open-mmlab/mmcv, mmcv/ops/modulated_deform_conv.py), so at
  initialisation Δp = 0, m = sigmoid(0) = 1/2 and the layer computes ½·conv(x, W) + b.
  Zhu, Hu, Lin, Dai, CVPR 2019, arXiv:1811.11168.

  Attributes:
    features: output channels.
    kernel_size: an int or (kh, kw).
    strides, dilation: ints or pairs, as for `deform_conv2d`.
    padding: zero padding per side, default dilation·(k − 1) // 2.
    use_bias: whether to add a learned bias (zero at initialisation) after the modulated sum.
    kernel_init: initialiser of the main weights (Kaiming fan-out like the zoo's convolutions).
    kernels: the offset predictor's convolution kernels (`kd_jax.backends.Kernels`).
  """

  features: int
  kernel_size: IntPair = 3
  strides: IntPair = 1
  dilation: IntPair = 1
  padding: Optional[IntPair] = None
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = conv_init
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise KDJaxError(f"DeformableConv2D expects NHWC inputs [B, H, W, C]; got shape {x.shape}.")
    kh, kw = _pair(self.kernel_size, "kernel_size")
    dh, dw = _pair(self.dilation, "dilation")
    ph, pw = _pair(self.padding, "padding") if self.padding is not None else (dh * (kh - 1) // 2,
                                                                               dw * (kw - 1) // 2)
    taps = kh * kw
    predicted = nn.Conv(3 * taps, (kh, kw), strides=_pair(self.strides, "strides"), padding=((ph, ph), (pw, pw)),
                        kernel_dilation=(dh, dw), kernel_init=nn.initializers.zeros,
                        bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=self.param_dtype,
                        conv_general_dilated=self.kernels.conv_general_dilated, name="offset_conv")(x)
    offsets, mask = predicted[..., :2 * taps], nn.sigmoid(predicted[..., 2 * taps:])
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    y = deform_conv2d(x, offsets, mask, kernel, stride=self.strides, padding=(ph, pw), dilation=(dh, dw))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
      y = y + bias.astype(y.dtype)
    return y


class DeformableConvBlock(nn.Module):
  """Deformable conv (no bias) − BN − ReLU; returns `(out, preact)`, `preact` being the BN output.

  The unit DCN-based networks put where a regular conv − BN − ReLU stood: Dai et al., ICCV 2017,
  arXiv:1703.06211, and Zhu et al., CVPR 2019, arXiv:1811.11168, replace the 3×3 convolutions of the last
  ResNet stages this way (reference code: mmdetection's ResNet with `dcn`, which builds its Bottleneck's
  3×3 conv as mmcv's `ModulatedDeformConv2dPack`, open-mmlab/mmdetection, mmdet/models/backbones/resnet.py).
  """

  features: int
  strides: IntPair = 1
  dilation: IntPair = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    y = DeformableConv2D(self.features, 3, self.strides, self.dilation, use_bias=False, dtype=self.dtype,
                         param_dtype=self.param_dtype, kernels=self.kernels, name="conv")(x)
    preact = batch_norm(train, self.dtype, self.param_dtype, "bn")(y)
    return nn.relu(preact), preact
