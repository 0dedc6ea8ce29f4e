"""MobileNetV1 for ImageNet: a 3x3 stem and 13 depthwise-separable blocks, with a width multiplier.

Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam, "MobileNets: Efficient Convolutional Neural
Networks for Mobile Vision Applications", 2017, arXiv:1704.04861 (Table 1). The layout, initialisation and
feature taps follow mdistiller's `mdistiller/models/imagenet/mobilenetv1.py` (Zhao et al., "Decoupled
Knowledge Distillation", CVPR 2022, arXiv:2203.08679), the student of the ResNet-50 -> MobileNetV1 pair of
the ImageNet KD tables: 3x3 stride-2 conv (32) - BN - ReLU, then blocks of 3x3 depthwise conv - BN - ReLU -
1x1 conv - BN - ReLU (no conv biases) with output channels and strides

    64/1, 128/2, 128/1, 256/2, 256/1, 512/2, 512/1 (x5), 1024/2, 1024/1,

global average pooling (the reference's `AvgPool2d(7)` on 224x224 inputs) and a linear classifier:
4,231,976 parameters for 1000 classes. Every channel count is `int(c * width_mult)` (the paper's alpha;
the reference has width 1 only). Convs and the classifier weight keep PyTorch's default init, as the
reference does; the classifier bias starts at zero.

Submodules and the reference's `state_dict()` keys (`mdistiller_key` computes the map; conv kernels are
HWIO here and OIHW there, the fc kernel is the transpose of its weight):

    conv1, bn1                          model.0.0, model.0.1
    block{i}/conv_dw, bn_dw (i = 1..13)  model.{i}.0, model.{i}.1
    block{i}/conv_pw, bn_pw              model.{i}.3, model.{i}.4
    fc                                  fc
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.layers import conv, torch_default_init
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, batch_norm, global_avg_pool
from kd_jax.models.resnet_imagenet import torch_leaf_name

# (output channels at width 1, stride) of blocks 1..13.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1))
# The blocks whose outputs are the four stages (strides 4, 8, 16, 32): mdistiller's feat1..feat4.
STAGE_BLOCKS = (3, 5, 11, 13)


class DepthwiseSeparable(nn.Module):
  """3x3 depthwise conv (with the stride) - BN - ReLU, 1x1 pointwise conv - BN - ReLU. Returns
  `(out, preact)`, `preact` being the pointwise BN's output and `out = relu(preact)`."""

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False):
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    channels = x.shape[-1]
    y = conv(channels, 3, self.stride, groups=channels, kernel_init=torch_default_init, dtype=dt,
             param_dtype=pdt, kernels=k, name="conv_dw")(x)
    y = nn.relu(batch_norm(train, dt, pdt, "bn_dw")(y))
    y = conv(self.features, 1, kernel_init=torch_default_init, dtype=dt, param_dtype=pdt, kernels=k,
             name="conv_pw")(y)
    preact = batch_norm(train, dt, pdt, "bn_pw")(y)
    return nn.relu(preact), preact


class MobileNetV1(nn.Module):
  """mdistiller's ImageNet MobileNetV1 with a width multiplier.

  Outputs: `stages` are the outputs of blocks 3, 5, 11 and 13 (128, 256, 512, 1024 channels at width 1;
  strides 4, 8, 16, 32, so 56, 28, 14, 7 pixels on 224x224 inputs), `preact_stages` the same before
  their final ReLU (the reference's `preact_feats`), `embedding` the pooled last block (1024 at width 1),
  `stem` the stem's conv-BN-ReLU output (stride 2).

  Attributes:
    num_classes: classifier outputs (1000 for ImageNet).
    width_mult: the paper's width multiplier alpha (1, 0.75, 0.5, 0.25 in its tables).
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
  """

  num_classes: int
  width_mult: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    check_width(self.width_mult)
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    x = conv(int(32 * self.width_mult), 3, 2, kernel_init=torch_default_init, dtype=dt, param_dtype=pdt,
             kernels=k, name="conv1")(x)
    x = nn.relu(batch_norm(train, dt, pdt, "bn1")(x))
    stem = x
    stages, preacts = [], []
    for i, (channels, stride) in enumerate(BLOCKS, start=1):
      x, preact = DepthwiseSeparable(int(channels * self.width_mult), stride, dt, pdt, k,
                                     name=f"block{i}")(x, train)
      if i in STAGE_BLOCKS:
        stages.append(x)
        preacts.append(preact)
    embedding = global_avg_pool(x, train, k)
    logits = nn.Dense(self.num_classes, kernel_init=torch_default_init, bias_init=nn.initializers.zeros,
                      dtype=dt, param_dtype=pdt, name="fc")(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding, stem=stem)


def check_width(width_mult: float) -> None:
  """Raises `KDJaxError` unless `width_mult` leaves the narrowest layer (the 32-channel stem) a channel."""
  if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or int(32 * width_mult) < 1:
    raise KDJaxError(f"MobileNetV1 width_mult must be a number of at least 1/32 (the paper uses 1, 0.75, 0.5 "
                     f"and 0.25); got width_mult={width_mult!r}.")


def imagenet_mobilenetv1(num_classes: int, *, width_mult: float = 1.0, dtype: Dtype = jnp.float32,
                         param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> MobileNetV1:
  """MobileNetV1 for ImageNet, mdistiller's layout (Howard et al. 2017, arXiv:1704.04861), width 1 by
  default (4,231,976 parameters for 1000 classes)."""
  check_width(width_mult)
  return MobileNetV1(num_classes=num_classes, width_mult=float(width_mult), dtype=dtype, param_dtype=param_dtype,
                     kernels=kernels)


def mdistiller_key(path: Sequence[str]) -> str:
  """The reference's `state_dict()` key of one `MobileNetV1` variable, e.g.
  `("params", "block3", "conv_pw", "kernel")` -> `"model.3.3.weight"` (see the module docstring)."""
  collection, *modules, leaf = path
  positions = {"conv1": "model.0.0", "bn1": "model.0.1", "fc": "fc"}
  layers = {"conv_dw": "0", "bn_dw": "1", "conv_pw": "3", "bn_pw": "4"}
  if len(modules) == 1 and modules[0] in positions:
    prefix = positions[modules[0]]
  elif len(modules) == 2 and modules[0].startswith("block") and modules[1] in layers:
    prefix = f"model.{modules[0][len('block'):]}.{layers[modules[1]]}"
  else:
    raise KDJaxError(f"{'/'.join(path)} is not a MobileNetV1 variable (conv1, bn1, block<i>/<conv_dw|bn_dw|"
                     "conv_pw|bn_pw>, fc).")
  return f"{prefix}.{torch_leaf_name(collection, leaf)}"
