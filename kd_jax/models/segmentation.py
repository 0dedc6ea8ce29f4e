"""Segmentation models returning per-pixel logits [B, H, W, num_classes], any input channels: a small U-Net
(described below) and a DeepLabv3+-style encoder–decoder with an optional deformable block (`DeepLabV3Plus`, whose
docstring describes it).

Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015,
arXiv:1505.04597, reduced in width and depth for small tiles [assume]: each encoder level is two
(conv3×3 − BN − ReLU) blocks followed by a 2×2 max pool (except the deepest level, the bottleneck); each
decoder level upsamples by 2 (nearest neighbour), concatenates the encoder output of the same resolution (the
skip), and applies two (conv3×3 − BN − ReLU) blocks; a 1×1 conv (with bias) gives the logits. Convolutions
pad by 1 ('SAME' at stride 1), so the logits have the input's height and width, which must be divisible by
2^(levels − 1).

`stages` are the encoder level outputs (input side first, the bottleneck last) followed by the decoder level
outputs (coarse to fine): with widths (16, 32, 64), stages 0–2 are [B, H, W, 16], [B, H/2, W/2, 32],
[B, H/4, W/4, 64] and stages 3–4 [B, H/2, W/2, 32], [B, H, W, 16]. `preact_stages` are the same before the last
ReLU; `embedding` is the bottleneck pooled over H and W. A teacher and a student of the same depth have maps of
the same resolution at every stage, whatever input channels each sees, so FitNet's 1×1 regressor can align
them.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.deformable import DeformableConv2D, DeformableConvBlock
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import (BasicBlock, Dtype, batch_norm, conv1x1, conv3x3, conv_init,
                                        global_avg_pool)
from kd_jax.models.vgg import max_pool_2x2


class UNet(nn.Module):
  """See the module docstring. `widths[i]` is the channel width of encoder level i (the last: the bottleneck)."""

  num_classes: int
  widths: Tuple[int, ...] = (16, 32, 64)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  def _double(self, x, width: int, train: bool, name: str):
    preact = None
    for j in range(2):
      x = conv3x3(width, 1, self.dtype, self.param_dtype, f"{name}_conv{j}", kernels=self.kernels)(x)
      preact = batch_norm(train, self.dtype, self.param_dtype, f"{name}_bn{j}")(x)
      x = nn.relu(preact)
    return x, preact

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    if x.ndim != 4:
      raise KDJaxError(f"UNet expects NHWC images [B, H, W, C]; got shape {x.shape}.")
    factor = 2 ** (len(self.widths) - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise KDJaxError(f"UNet with {len(self.widths)} levels needs a height and width divisible by {factor}; got "
                       f"{x.shape[1]}×{x.shape[2]}.")
    stages, preacts, skips = [], [], []
    for i, width in enumerate(self.widths):
      if i:
        x = max_pool_2x2(x, train, self.kernels)
      x, preact = self._double(x, width, train, f"enc{i}")
      stages.append(x)
      preacts.append(preact)
      skips.append(x)
    embedding = global_avg_pool(x, train, self.kernels)
    for i in range(len(self.widths) - 2, -1, -1):
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = jnp.concatenate([x, skips[i]], axis=-1)
      x, preact = self._double(x, self.widths[i], train, f"dec{i}")
      stages.append(x)
      preacts.append(preact)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                     conv_general_dilated=self.kernels.conv_general_dilated, name="head")(x)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts), embedding=embedding)


def unet(num_classes: int, *, widths: Sequence[int] = (16, 32, 64), dtype: Any = jnp.float32,
         param_dtype: Any = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> UNet:
  """A U-Net with the given encoder widths (at least two levels)."""
  widths = tuple(int(w) for w in widths)
  if len(widths) < 2 or any(w <= 0 for w in widths):
    raise KDJaxError(f"unet: widths must be at least two positive ints, got {widths!r}.")
  if int(num_classes) < 1:
    raise KDJaxError(f"unet: num_classes must be >= 1, got {num_classes}.")
  return UNet(int(num_classes), widths, dtype, param_dtype, kernels)


def unet_small(num_classes: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
               kernels: Kernels = DEFAULT_KERNELS) -> UNet:
  """Widths (16, 32, 64): the segmentation teacher."""
  return unet(num_classes, widths=(16, 32, 64), dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def unet_tiny(num_classes: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
              kernels: Kernels = DEFAULT_KERNELS) -> UNet:
  """Widths (8, 16, 32): the segmentation student."""
  return unet(num_classes, widths=(8, 16, 32), dtype=dtype, param_dtype=param_dtype, kernels=kernels)


# ---------------------------------------------------------------------------------------------------
# DeepLabv3+ with a ResNet (BasicBlock) encoder, ASPP and an optional deformable last stage.


def _conv(features: int, size: int, dilation: int, dtype: Dtype, param_dtype: Dtype, name: str, *,
          kernels: Kernels) -> nn.Conv:
  """A bias-free size×size convolution at stride 1, padded by dilation·(size − 1)/2 so H×W is kept."""
  pad = dilation * (size - 1) // 2
  return nn.Conv(features, (size, size), padding=((pad, pad), (pad, pad)), kernel_dilation=dilation,
                 use_bias=False, kernel_init=conv_init, dtype=dtype, param_dtype=param_dtype,
                 conv_general_dilated=kernels.conv_general_dilated, name=name)


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of [B, h, w, C] to [B, height, width, C] with half-pixel centres (PyTorch's
  `F.interpolate(mode="bilinear", align_corners=False)`, as torchvision's DeepLab uses; the official
  TensorFlow code aligns corners instead)."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), method="bilinear")


class DilatedBasicBlock(nn.Module):
  """A BasicBlock at stride 1 whose two 3×3 convolutions are dilated (and, optionally, deformable).

  conv3×3(d) − BN − ReLU − conv3×3(d) − BN, plus the shortcut (identity, or 1×1 conv − BN when the width
  changes), then ReLU; returns `(out, preact)` like `resnet_cifar.BasicBlock`. With `deformable` both
  convolutions are `DeformableConv2D` layers on the same dilated grid (the first as a `DeformableConvBlock`),
  which start as ½ × the regular convolution (their modulation is sigmoid(0) at initialisation). Every 3×3
  convolution of the stage is dilated; torchvision's dilated ResNets (models/resnet.py, `_make_layer`) keep the
  previous dilation in a stage's first block instead [assume].
  """

  features: int
  dilation: int = 2
  deformable: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    dt, pdt, k, d = self.dtype, self.param_dtype, self.kernels, self.dilation
    if self.deformable:
      y, _ = DeformableConvBlock(self.features, 1, d, dt, pdt, k, name="dcn1")(x, train)
      y = DeformableConv2D(self.features, 3, 1, d, use_bias=False, dtype=dt, param_dtype=pdt, kernels=k,
                           name="dcn2")(y)
    else:
      y = _conv(self.features, 3, d, dt, pdt, "conv1", kernels=k)(x)
      y = nn.relu(batch_norm(train, dt, pdt, "bn1")(y))
      y = _conv(self.features, 3, d, dt, pdt, "conv2", kernels=k)(y)
    y = batch_norm(train, dt, pdt, "bn2")(y)
    shortcut = x
    if x.shape[-1] != self.features:
      shortcut = batch_norm(train, dt, pdt, "downsample_bn")(
          conv1x1(self.features, 1, dt, pdt, "downsample_conv", kernels=k)(x))
    preact = y + shortcut
    return nn.relu(preact), preact


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling (DeepLabv3), returning `(out, preact)`.

  Branches on the same input: a 1×1 conv − BN − ReLU; one 3×3 conv − BN − ReLU per rate r in `rates`, dilated
  by r; image pooling (mean over H and W, 1×1 conv − BN − ReLU, broadcast back to H×W, which is what bilinear
  upsampling of a 1×1 map gives). The branches are concatenated and projected by a 1×1 conv − BN − ReLU to
  `features` channels; `preact` is that projection's BN output. torchvision's ASPP adds dropout 0.5 after the
  projection; none here [assume].

  Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017,
  arXiv:1706.05587, Sec. 3.3 (rates (6, 12, 18) at output stride 16, doubled at output stride 8); reference
  code torchvision's `ASPP` (pytorch/vision, torchvision/models/segmentation/deeplabv3.py).
  """

  features: int
  rates: Tuple[int, ...] = (1, 2, 3)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels

    def conv_bn_relu(y, size, rate, name):
      y = _conv(self.features, size, rate, dt, pdt, f"{name}_conv", kernels=k)(y)
      return nn.relu(batch_norm(train, dt, pdt, f"{name}_bn")(y))

    branches = [conv_bn_relu(x, 1, 1, "b0")]
    branches += [conv_bn_relu(x, 3, rate, f"b{i + 1}") for i, rate in enumerate(self.rates)]
    pooled = global_avg_pool(x, train, k)[:, None, None, :]
    pooled = conv_bn_relu(pooled, 1, 1, "pool")
    branches.append(jnp.broadcast_to(pooled, (*x.shape[:3], self.features)))
    y = _conv(self.features, 1, 1, dt, pdt, "project_conv", kernels=k)(jnp.concatenate(branches, axis=-1))
    preact = batch_norm(train, dt, pdt, "project_bn")(y)
    return nn.relu(preact), preact


class DeepLabV3Plus(nn.Module):
  """DeepLabv3+ with a small ResNet encoder (BasicBlocks), ASPP and, optionally, deformable convolutions.

  Chen, Zhu, Papandreou, Schroff, Adam, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
  Segmentation", ECCV 2018, arXiv:1802.02611 (the decoder), on DeepLabv3's encoder (Chen et al. 2017,
  arXiv:1706.05587); reference code tensorflow/models, research/deeplab/model.py (`refine_by_decoder`) and
  torchvision's models/segmentation/deeplabv3.py. Regular (not separable) convolutions throughout, sizes cut
  down for small tiles [assume].

  Encoder: a 3×3 stride-2 conv − BN − ReLU stem of `widths[0]` channels (standing in for ResNet's 7×7/2 conv
  and 3×3/2 max pool [assume]); stages i = 0 … n−2 of `blocks` `BasicBlock`s, the first of each with stride 2;
  the last stage keeps the resolution and dilates its 3×3 convolutions by 2 instead (`DilatedBasicBlock`), as
  DeepLabv3 does to reach output stride 2^n (8 for three stages: a 32×32 tile gives a 4×4 map; the paper's ASPP
  rates (6, 12, 18) are for output stride 16 on 513×513 crops, so the defaults here are (1, 2, 3)). ASPP
  (`ASPP`) on the last stage. Decoder: the first stage's output (stride 4) reduced by a 1×1 conv − BN − ReLU to
  `low_level_features` channels, concatenated with the ASPP output bilinearly upsampled to its size, two
  3×3 conv − BN − ReLU of `decoder_features` channels, a 1×1 conv with bias (the logits), bilinear upsampling
  to the input's H×W (`jax.image.resize`, half-pixel centres).

  `deformable`: the 3×3 convolutions of the last encoder stage become DCNv2 layers (`DeformableConv2D`,
  Zhu et al. 2019, arXiv:1811.11168), where the receptive field matters most and where the DCN papers put
  theirs (the last ResNet stages). The seed paper (Choi et al. 2022, "Satellite Building Segmentation using
  Deformable Convolution and Knowledge Distillation", J. Korea Multimedia Society 25(7)) puts a deformable
  block in its network; where it does is not known to us, so this placement is [assume].

  Outputs, for three stages with widths (16, 32, 64), `aspp_features` A and `decoder_features` D on
  [B, H, W, C_in]: `stages` are the encoder stages [B, H/4, W/4, 16], [B, H/8, W/8, 32], [B, H/8, W/8, 64],
  the ASPP output [B, H/8, W/8, A] and the decoder output [B, H/4, W/4, D] (H/s meaning ⌈H/s⌉); `preact_stages`
  the same before their last ReLU (the residual sums, the ASPP projection's and the last decoder BN's
  outputs); `embedding` the ASPP output pooled over H and W, [B, A]; `prediction` the logits
  [B, H, W, num_classes]. Teacher and student of the same depth have maps of the same resolution at every
  stage, whatever their input channels.

  Attributes:
    num_classes: logits per pixel.
    widths: encoder stage widths (at least two; the stem has `widths[0]`).
    blocks: residual blocks per stage.
    aspp_rates: dilation rates of ASPP's 3×3 branches.
    aspp_features, low_level_features, decoder_features: channel widths of ASPP, the reduced low-level
      features and the decoder convolutions.
    deformable: DCNv2 in the last encoder stage (see above).
  """

  num_classes: int
  widths: Tuple[int, ...] = (16, 32, 64)
  blocks: int = 1
  aspp_rates: Tuple[int, ...] = (1, 2, 3)
  aspp_features: int = 32
  low_level_features: int = 8
  decoder_features: int = 32
  deformable: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    if x.ndim != 4:
      raise KDJaxError(f"DeepLabV3Plus expects NHWC images [B, H, W, C]; got shape {x.shape}.")
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    height, width = x.shape[1:3]
    x = conv3x3(self.widths[0], 2, dt, pdt, "stem_conv", kernels=k)(x)
    x = nn.relu(batch_norm(train, dt, pdt, "stem_bn")(x))
    stages, preacts = [], []
    last = len(self.widths) - 1
    for s, features in enumerate(self.widths):
      for b in range(self.blocks):
        name = f"layer{s + 1}_{b}"
        if s == last:
          x, preact = DilatedBasicBlock(features, 2, self.deformable, dt, pdt, k, name=name)(x, train)
        else:
          x, preact = BasicBlock(features, 2 if b == 0 else 1, dt, pdt, k, name=name)(x, train)
      stages.append(x)
      preacts.append(preact)
    x, preact = ASPP(self.aspp_features, self.aspp_rates, dt, pdt, k, name="aspp")(x, train)
    stages.append(x)
    preacts.append(preact)
    embedding = global_avg_pool(x, train, k)
    low = _conv(self.low_level_features, 1, 1, dt, pdt, "low_level_conv", kernels=k)(stages[0])
    low = nn.relu(batch_norm(train, dt, pdt, "low_level_bn")(low))
    x = jnp.concatenate([_resize(x, *low.shape[1:3]), low], axis=-1)
    for j in range(2):
      x = _conv(self.decoder_features, 3, 1, dt, pdt, f"decoder_conv{j}", kernels=k)(x)
      preact = batch_norm(train, dt, pdt, f"decoder_bn{j}")(x)
      x = nn.relu(preact)
    stages.append(x)
    preacts.append(preact)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=dt, param_dtype=pdt,
                     conv_general_dilated=k.conv_general_dilated, name="head")(x)
    return ModelOutput(prediction=_resize(logits, height, width), stages=tuple(stages),
                       preact_stages=tuple(preacts), embedding=embedding)


def _positive_ints(value: Any, name: str, minimum_length: int = 1) -> Tuple[int, ...]:
  """`value` as a tuple of at least `minimum_length` positive ints, or a KDJaxError naming `name`."""
  try:
    values = tuple(int(v) for v in value)
  except (TypeError, ValueError):
    values = ()
  if len(values) < minimum_length or any(v <= 0 for v in values):
    raise KDJaxError(f"deeplabv3plus: {name} must be a sequence of at least {minimum_length} positive ints; "
                     f"got {value!r}.")
  return values


def deeplabv3plus(num_classes: int, *, widths: Sequence[int] = (16, 32, 64), blocks: int = 1,
                  aspp_rates: Sequence[int] = (1, 2, 3), aspp_features: int = 32, low_level_features: int = 8,
                  decoder_features: int = 32, deformable: bool = False, dtype: Any = jnp.float32,
                  param_dtype: Any = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> DeepLabV3Plus:
  """A DeepLabv3+ of any size (see `DeepLabV3Plus`); the defaults build `deeplab_tiny`."""
  widths = _positive_ints(widths, "widths", 2)
  aspp_rates = _positive_ints(aspp_rates, "aspp_rates")
  sizes = dict(blocks=blocks, aspp_features=aspp_features, low_level_features=low_level_features,
               decoder_features=decoder_features, num_classes=num_classes)
  for name, value in sizes.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise KDJaxError(f"deeplabv3plus: {name} must be a positive int; got {value!r}.")
  if not isinstance(deformable, bool):
    raise KDJaxError(f"deeplabv3plus: deformable must be True or False; got {deformable!r}.")
  return DeepLabV3Plus(num_classes, widths, blocks, aspp_rates, aspp_features, low_level_features,
                       decoder_features, deformable, dtype, param_dtype, kernels)


def deeplab_small(num_classes: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                  kernels: Kernels = DEFAULT_KERNELS) -> DeepLabV3Plus:
  """Widths (32, 64, 128), ASPP 64 (rates 1, 2, 3), low-level 16, decoder 64: the DeepLab teacher size."""
  return deeplabv3plus(num_classes, widths=(32, 64, 128), aspp_features=64, low_level_features=16,
                       decoder_features=64, dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def deeplab_small_dcn(num_classes: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                      kernels: Kernels = DEFAULT_KERNELS) -> DeepLabV3Plus:
  """`deeplab_small` with DCNv2 convolutions in its last encoder stage (the seed paper's deformable teacher)."""
  return deeplabv3plus(num_classes, widths=(32, 64, 128), aspp_features=64, low_level_features=16,
                       decoder_features=64, deformable=True, dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def deeplab_tiny(num_classes: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 kernels: Kernels = DEFAULT_KERNELS) -> DeepLabV3Plus:
  """Widths (16, 32, 64), ASPP 32 (rates 1, 2, 3), low-level 8, decoder 32: the DeepLab student size."""
  return deeplabv3plus(num_classes, dtype=dtype, param_dtype=param_dtype, kernels=kernels)
