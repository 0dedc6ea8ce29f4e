"""Layer helpers for the models that need more than `resnet_cifar`'s conv3x3/conv1x1: grouped and
depthwise convolutions, convolutions with a bias, and the PyTorch default initialisers."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from kd_jax.backends import Kernels
from kd_jax.models.resnet_cifar import Dtype, conv_init

# PyTorch's default `nn.Conv2d`/`nn.Linear` weight init, kaiming_uniform(a=sqrt(5)), which works out to
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Flax's fan_in for a grouped kernel [kh, kw, C_in/groups, C_out] is
# kh*kw*C_in/groups, the same as PyTorch's. Used by the references that keep PyTorch's defaults.
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# `m.weight.data.normal_(0, 0.01)`: the classifier init of the VGG and MobileNetV2 references.
small_normal_init = nn.initializers.normal(0.01)


def conv(features: int, kernel_size: int, stride: int = 1, *, groups: int = 1, use_bias: bool = False,
         kernel_init: Callable = conv_init, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
         kernels: Kernels, name: str) -> nn.Conv:
  """A square convolution with PyTorch's symmetric `padding=kernel_size // 2` (not "SAME", which pads
  asymmetrically at stride 2). `groups` equal to the input channels makes it depthwise; a bias starts at
  zero as in the references that have one. `kernels` supplies the convolution (`kd_jax.backends.Kernels`)."""
  pad = kernel_size // 2
  return nn.Conv(features, (kernel_size, kernel_size), strides=stride, padding=((pad, pad), (pad, pad)),
                 feature_group_count=groups, use_bias=use_bias, kernel_init=kernel_init,
                 bias_init=nn.initializers.zeros, dtype=dtype, param_dtype=param_dtype,
                 conv_general_dilated=kernels.conv_general_dilated, name=name)
