"""ShuffleNet V1 and V2 for CIFAR.

Zhang, Zhou, Lin, Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
Devices", CVPR 2018, arXiv:1707.01083; Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design", ECCV 2018, arXiv:1807.11164.

The CIFAR variants follow RepDistiller's `models/ShuffleNetv1.py` and `models/ShuffleNetv2.py` (Tian et
al., ICLR 2020, arXiv:1910.10699; `ShuffleV1` and `ShuffleV2`, 0.95M and 1.36M parameters on CIFAR-100):
the ImageNet stem (3x3/2 conv and max pool) is replaced by a 1x1 conv to 24 channels at full resolution,
so the three stages run at 16x16, 8x8 and 4x4 on 32x32 inputs. Convolutions keep PyTorch's default
initialisation, as the reference does.

Submodules: `conv1`/`bn1` (stem), `layer{s}_{b}` (block b of stage s), V2's `conv2`/`bn2` head, `fc`.
"""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.layers import conv, torch_default_init
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, batch_norm, classifier, global_avg_pool


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """Interleaves the `groups` channel groups of an NHWC tensor: channel g*(C/groups) + j moves to
  j*groups + g, so the next grouped conv sees channels from every group (ShuffleNet's channel shuffle,
  in the same order as the PyTorch references' view-transpose-reshape on NCHW)."""
  *lead, c = x.shape
  if c % groups:
    raise KDJaxError(f"channel_shuffle: {c} channels do not split into {groups} groups.")
  return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


def _conv(features: int, kernel_size: int, stride: int = 1, *, groups: int = 1, dtype: Dtype,
          param_dtype: Dtype, kernels: Kernels, name: str) -> nn.Conv:
  return conv(features, kernel_size, stride, groups=groups, kernel_init=torch_default_init, dtype=dtype,
              param_dtype=param_dtype, kernels=kernels, name=name)


class ShuffleV1Block(nn.Module):
  """ShuffleNet unit: grouped 1x1 conv-BN-ReLU, channel shuffle, 3x3 depthwise conv (with the stride)-BN,
  grouped 1x1 conv-BN; then the shortcut and a ReLU.

  Stride 1 adds the input (so `features` must equal the input channels). Stride 2 concatenates the
  branch with a 3x3/2 average pool of the input (zero padding counted in the mean, as PyTorch's
  `AvgPool2d(3, 2, 1)`), so the branch produces `features - C_in` channels. The bottleneck is a quarter of
  the branch width.

  Two reference details: the depthwise conv is followed by a ReLU (the paper's unit has none there), and
  the first 1x1 conv is not grouped when `group_first_conv` is False (the network's first unit, whose
  input is the 24-channel stem). Returns `(relu(preact), preact)`.
  """

  features: int
  stride: int = 1
  groups: int = 3
  group_first_conv: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    in_channels = x.shape[-1]
    branch = self.features - in_channels if self.stride == 2 else self.features
    if self.stride == 1 and in_channels != self.features:
      raise KDJaxError(f"ShuffleV1Block: a stride-1 unit adds its input, so it needs features == input "
                       f"channels; got features={self.features} for {in_channels} input channels.")
    mid = branch // 4
    first_groups = self.groups if self.group_first_conv else 1
    y = _conv(mid, 1, groups=first_groups, dtype=dt, param_dtype=pdt, kernels=k, name="conv1")(x)
    y = nn.relu(batch_norm(train, dt, pdt, "bn1")(y))
    y = channel_shuffle(y, first_groups)
    y = _conv(mid, 3, self.stride, groups=mid, dtype=dt, param_dtype=pdt, kernels=k, name="conv2")(y)
    y = nn.relu(batch_norm(train, dt, pdt, "bn2")(y))
    y = _conv(branch, 1, groups=self.groups, dtype=dt, param_dtype=pdt, kernels=k, name="conv3")(y)
    y = batch_norm(train, dt, pdt, "bn3")(y)
    if self.stride == 2:
      pooled = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)
      preact = jnp.concatenate([y, pooled], axis=-1)
    else:
      preact = y + x
    return nn.relu(preact), preact


class ShuffleNetV1(nn.Module):
  """CIFAR ShuffleNet V1: 1x1 stem conv (24)-BN-ReLU, three stages of ShuffleV1Blocks (the first of each
  with stride 2), global average pool, linear classifier.

  Outputs (RepDistiller's `is_feat=True` list without the stem and the pooled vector): `stages[i]` is the
  output of stage i's last unit, `preact_stages[i]` the same before its ReLU; `embedding` is the pooled
  last stage. On 32x32 inputs the stages are 16x16x240, 8x8x480 and 4x4x960 with the default widths.

  Attributes:
    num_classes: classifier outputs.
    stage_widths: output channels of the three stages.
    blocks_per_stage: units per stage.
    groups: groups of the 1x1 convs.
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
  """

  num_classes: int
  stage_widths: Tuple[int, ...] = (240, 480, 960)
  blocks_per_stage: Tuple[int, ...] = (4, 8, 4)
  groups: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    x = _conv(24, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv1")(x)
    x = nn.relu(batch_norm(train, dt, pdt, "bn1")(x))
    stages, preacts = [], []
    for s, (width, blocks) in enumerate(zip(self.stage_widths, self.blocks_per_stage)):
      for b in range(blocks):
        x, preact = ShuffleV1Block(width, 2 if b == 0 else 1, self.groups, group_first_conv=(s, b) != (0, 0),
                                   dtype=dt, param_dtype=pdt, kernels=k, name=f"layer{s + 1}_{b}")(x, train)
      stages.append(x)
      preacts.append(preact)
    embedding = global_avg_pool(x, train, k)
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding)


class ShuffleV2DownBlock(nn.Module):
  """ShuffleNet V2 downsampling unit. Left branch: 3x3/2 depthwise conv-BN, 1x1 conv-BN-ReLU. Right
  branch: 1x1 conv-BN-ReLU, 3x3/2 depthwise conv-BN, 1x1 conv-BN-ReLU. Each branch gives half of
  `features`; the concatenation is channel-shuffled with 2 groups."""

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    in_channels, mid = x.shape[-1], self.features // 2
    left = _conv(in_channels, 3, 2, groups=in_channels, dtype=dt, param_dtype=pdt, kernels=k, name="conv1")(x)
    left = batch_norm(train, dt, pdt, "bn1")(left)
    left = _conv(mid, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv2")(left)
    left = nn.relu(batch_norm(train, dt, pdt, "bn2")(left))
    right = _conv(mid, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv3")(x)
    right = nn.relu(batch_norm(train, dt, pdt, "bn3")(right))
    right = _conv(mid, 3, 2, groups=mid, dtype=dt, param_dtype=pdt, kernels=k, name="conv4")(right)
    right = batch_norm(train, dt, pdt, "bn4")(right)
    right = _conv(mid, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv5")(right)
    right = nn.relu(batch_norm(train, dt, pdt, "bn5")(right))
    return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleV2Block(nn.Module):
  """ShuffleNet V2 basic unit: split the channels in halves, keep the first, pass the second through
  1x1 conv-BN-ReLU, 3x3 depthwise conv-BN, 1x1 conv-BN-ReLU, concatenate and shuffle with 2 groups.

  Returns `(out, preact)`, where `preact` is the same concatenation and shuffle with the branch taken
  before its final ReLU. The kept half is already non-negative (it is a ReLU output of an earlier unit),
  so `out == relu(preact)`. RepDistiller returns its pre-activation before the shuffle, i.e. the same
  values in a different (fixed) channel order; here the order matches `out`.
  """

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    half = x.shape[-1] // 2
    if 2 * half != x.shape[-1]:
      raise KDJaxError(f"ShuffleV2Block splits its input in halves; got {x.shape[-1]} channels.")
    kept, y = x[..., :half], x[..., half:]
    y = _conv(half, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv1")(y)
    y = nn.relu(batch_norm(train, dt, pdt, "bn1")(y))
    y = _conv(half, 3, groups=half, dtype=dt, param_dtype=pdt, kernels=k, name="conv2")(y)
    y = batch_norm(train, dt, pdt, "bn2")(y)
    y = _conv(half, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv3")(y)
    y = batch_norm(train, dt, pdt, "bn3")(y)
    out = channel_shuffle(jnp.concatenate([kept, nn.relu(y)], axis=-1), 2)
    preact = channel_shuffle(jnp.concatenate([kept, y], axis=-1), 2)
    return out, preact


class ShuffleNetV2(nn.Module):
  """CIFAR ShuffleNet V2 (net size 1): 1x1 stem conv (24)-BN-ReLU; three stages, each one downsampling
  unit followed by `blocks_per_stage[s]` basic units; 1x1 conv to `head_width`-BN-ReLU; global average
  pool; linear classifier.

  Outputs: `stages[i]` is the output of stage i's last basic unit (16x16x116, 8x8x232, 4x4x464 on 32x32
  inputs), `preact_stages[i]` the same before its ReLU (see ShuffleV2Block); `embedding` is the pooled
  head output (1024), not the pooled last stage.

  Attributes:
    num_classes: classifier outputs.
    stage_widths: output channels of the three stages.
    blocks_per_stage: basic units per stage (after the downsampling unit).
    head_width: channels of the final 1x1 conv.
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
  """

  num_classes: int
  stage_widths: Tuple[int, ...] = (116, 232, 464)
  blocks_per_stage: Tuple[int, ...] = (3, 7, 3)
  head_width: int = 1024
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    if not all(b >= 1 for b in self.blocks_per_stage):
      raise KDJaxError(f"ShuffleNetV2 needs at least one basic unit per stage (the stage features are read "
                       f"from the last one); got blocks_per_stage={self.blocks_per_stage}.")
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    x = _conv(24, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv1")(x)
    x = nn.relu(batch_norm(train, dt, pdt, "bn1")(x))
    stages, preacts = [], []
    for s, (width, blocks) in enumerate(zip(self.stage_widths, self.blocks_per_stage)):
      x = ShuffleV2DownBlock(width, dt, pdt, k, name=f"layer{s + 1}_0")(x, train)
      for b in range(1, blocks + 1):
        x, preact = ShuffleV2Block(dt, pdt, k, name=f"layer{s + 1}_{b}")(x, train)
      stages.append(x)
      preacts.append(preact)
    x = _conv(self.head_width, 1, dtype=dt, param_dtype=pdt, kernels=k, name="conv2")(x)
    x = nn.relu(batch_norm(train, dt, pdt, "bn2")(x))
    embedding = global_avg_pool(x, train, k)
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding)


def shufflenetv1(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                 kernels: Kernels = DEFAULT_KERNELS) -> ShuffleNetV1:
  """CIFAR ShuffleNet V1, 3 groups, stages 240/480/960 with 4/8/4 units (RepDistiller's `ShuffleV1`)."""
  return ShuffleNetV1(num_classes=num_classes, dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def shufflenetv2(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                 kernels: Kernels = DEFAULT_KERNELS) -> ShuffleNetV2:
  """CIFAR ShuffleNet V2 1x, stages 116/232/464 with 3/7/3 basic units, head 1024 (RepDistiller's
  `ShuffleV2`)."""
  return ShuffleNetV2(num_classes=num_classes, dtype=dtype, param_dtype=param_dtype, kernels=kernels)
