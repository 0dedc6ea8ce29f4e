"""ResNet-50 for CIFAR: the four-stage Bottleneck ResNet with a 3x3 stride-1 stem and no max pool.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385 (the
ImageNet ResNet-50 of Table 1, with the stem adapted to 32x32 inputs). The layout, the shortcut rule, the
initialisation and the feature taps follow RepDistiller's `models/resnetv2.py` (`ResNet50`; Tian et al.,
ICLR 2020, arXiv:1910.10699), the ResNet50 teacher of the CIFAR-100 KD tables (23.71M parameters).

Submodules are named like `resnet_cifar`'s: `conv1`/`bn1` (stem), `layer{s}_{b}` with `conv1..3`/`bn1..3`
and `downsample_conv`/`downsample_bn`, and `fc`.
"""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, batch_norm, classifier, conv1x1, conv3x3, global_avg_pool

EXPANSION = 4


class BottleneckBlock(nn.Module):
  """1x1 conv-BN-ReLU, 3x3 conv (with the stride)-BN-ReLU, 1x1 conv to 4x the width-BN, plus the
  shortcut, then ReLU.

  The shortcut is the identity when shapes agree and otherwise a strided 1x1 conv followed by BN. The
  stride sits on the 3x3 conv, as in the reference (the "ResNet v1.5" placement). Returns `(out, preact)`
  with `out = relu(preact)`.
  """

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    out_features = EXPANSION * self.features
    y = conv1x1(self.features, 1, dt, pdt, "conv1", kernels=k)(x)
    y = nn.relu(batch_norm(train, dt, pdt, "bn1")(y))
    y = conv3x3(self.features, self.stride, dt, pdt, "conv2", kernels=k)(y)
    y = nn.relu(batch_norm(train, dt, pdt, "bn2")(y))
    y = conv1x1(out_features, 1, dt, pdt, "conv3", kernels=k)(y)
    y = batch_norm(train, dt, pdt, "bn3")(y)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != out_features:
      shortcut = conv1x1(out_features, self.stride, dt, pdt, "downsample_conv", kernels=k)(x)
      shortcut = batch_norm(train, dt, pdt, "downsample_bn")(shortcut)
    preact = y + shortcut
    return nn.relu(preact), preact


class ResNetBottleneck(nn.Module):
  """3x3 conv (64)-BN-ReLU stem at full resolution, four stages of BottleneckBlocks with widths 64, 128,
  256, 512 (outputs 4x wider) and strides 1, 2, 2, 2, global average pool, linear classifier.

  Outputs (RepDistiller's `is_feat=True` list without the stem and the pooled vector): `stages[i]` is the
  output of stage i's last block (32x32x256, 16x16x512, 8x8x1024, 4x4x2048 on 32x32 inputs),
  `preact_stages[i]` the same before its ReLU; `embedding` is the pooled last stage (2048).

  Attributes:
    num_classes: classifier outputs.
    blocks_per_stage: blocks in each of the four stages ((3, 4, 6, 3) for ResNet-50).
    widths: bottleneck widths of the four stages.
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
  """

  num_classes: int
  blocks_per_stage: Tuple[int, ...] = (3, 4, 6, 3)
  widths: Tuple[int, ...] = (64, 128, 256, 512)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    if len(self.blocks_per_stage) != len(self.widths) or not all(n >= 1 for n in self.blocks_per_stage):
      raise KDJaxError(f"ResNetBottleneck needs one positive block count per stage width; got "
                       f"blocks_per_stage={self.blocks_per_stage}, widths={self.widths}.")
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    x = conv3x3(64, 1, dt, pdt, "conv1", kernels=k)(x)
    x = nn.relu(batch_norm(train, dt, pdt, "bn1")(x))
    stages, preacts = [], []
    for s, (width, blocks) in enumerate(zip(self.widths, self.blocks_per_stage)):
      for b in range(blocks):
        stride = 2 if (s > 0 and b == 0) else 1
        x, preact = BottleneckBlock(width, stride, dt, pdt, k, name=f"layer{s + 1}_{b}")(x, train)
      stages.append(x)
      preacts.append(preact)
    embedding = global_avg_pool(x, train, k)
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding)


def resnet50(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
             kernels: Kernels = DEFAULT_KERNELS) -> ResNetBottleneck:
  """ResNet-50 for CIFAR: Bottleneck blocks (3, 4, 6, 3), 3x3 stem (RepDistiller's `ResNet50`)."""
  return ResNetBottleneck(num_classes=num_classes, dtype=dtype, param_dtype=param_dtype, kernels=kernels)
