"""VGG with BatchNorm for CIFAR, without the fully connected stack (one linear classifier on pooled features).

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015,
arXiv:1409.1556 (configurations A = VGG11 and B = VGG13; VGG8 is the CIFAR KD literature's one conv per
block). The layout follows RepDistiller's `models/vgg.py` with `batch_norm=True`, which is what its
`vgg8`/`vgg11`/`vgg13` names build (Tian et al., "Contrastive Representation Distillation", ICLR 2020,
arXiv:1910.10699), so the CIFAR-100 parameter counts are the ones the KD tables print (vgg8 3.96M,
vgg13 9.46M). Two details of that reference that matter for the counts and the features:

  - every conv keeps its bias although a BatchNorm follows it;
  - there are five blocks but only three 2x2 max pools between them on 32x32 inputs: the pool before the
    last block runs only on 64x64 inputs, so on CIFAR blocks 3 and 4 both work at 4x4.

Submodules are `block{b}_conv{i}` / `block{b}_bn{i}` and `fc`, in the reference's order.
"""

from __future__ import annotations

from typing import Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.layers import conv, small_normal_init
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, batch_norm, global_avg_pool

# Conv widths per block; a block is conv-BN pairs with a ReLU between them (and one after the block).
VGG_CONFIGS: Dict[int, Tuple[Tuple[int, ...], ...]] = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


class VGG(nn.Module):
  """Five blocks of 3x3 conv(bias)-BN, ReLU between and after them; max pools; global average pool; linear.

  Block b is followed by a 2x2/2 max pool for b = 0, 1, 2, and for b = 3 only when the input is 64 pixels
  high (the reference's Tiny-ImageNet rule); block 4 is followed by the global average pool. On 32x32
  inputs blocks 1..4 produce 16x16, 8x8, 4x4 and 4x4 maps.

  Outputs (RepDistiller's `is_feat=True` list without its first and last entries): `stages[i]` is
  relu(block i+1) for i = 0..3 (block 0, the stem, is not a stage, as for the ResNets);
  `preact_stages[i]` is the block's last BN output before that ReLU (`preact=True`, and the BNs
  `get_bn_before_relu` returns); `embedding` is the pooled `stages[-1]` (512).

  Attributes:
    num_classes: classifier outputs.
    blocks: conv widths per block (five blocks), e.g. `VGG_CONFIGS[13]`.
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
  """

  num_classes: int
  blocks: Tuple[Tuple[int, ...], ...] = VGG_CONFIGS[8]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    if len(self.blocks) != 5 or not all(self.blocks):
      raise KDJaxError(f"VGG takes five non-empty blocks of conv widths; got blocks={self.blocks}.")
    if x.ndim != 4:
      raise KDJaxError(f"VGG expects NHWC images; got an input of shape {x.shape}.")
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    pool_before_last = x.shape[1] == 64
    stages, preacts = [], []
    for b, widths in enumerate(self.blocks):
      for i, width in enumerate(widths):
        if i > 0:
          x = nn.relu(x)
        x = conv(width, 3, use_bias=True, dtype=dt, param_dtype=pdt, kernels=k, name=f"block{b}_conv{i}")(x)
        x = batch_norm(train, dt, pdt, f"block{b}_bn{i}")(x)
      preact, x = x, nn.relu(x)
      if b > 0:
        stages.append(x)
        preacts.append(preact)
      if b < 3 or (b == 3 and pool_before_last):
        x = max_pool_2x2(x, train, k)
    embedding = global_avg_pool(x, train, k)
    logits = nn.Dense(self.num_classes, kernel_init=small_normal_init, bias_init=nn.initializers.zeros,
                      dtype=dt, param_dtype=pdt, name="fc")(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding)


def max_pool_2x2(x: jax.Array, train: bool, kernels: Kernels = DEFAULT_KERNELS) -> jax.Array:
  """2x2, stride-2 max pool over H and W (VALID). In eval mode its input and output pass
  `kernels.fusion_barrier` (an identity): on CPU the pool's reduce-window otherwise took the convolutions
  before and after it into YNNPACK (8 of vgg13's 10)."""
  if train:
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
  barrier = kernels.fusion_barrier
  return barrier(nn.max_pool(barrier(x), (2, 2), strides=(2, 2), padding="VALID"))


def _named(depth: int):
  def constructor(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                  kernels: Kernels = DEFAULT_KERNELS) -> VGG:
    return VGG(num_classes=num_classes, blocks=VGG_CONFIGS[depth], dtype=dtype, param_dtype=param_dtype,
               kernels=kernels)

  constructor.__name__ = constructor.__qualname__ = f"vgg{depth}"
  constructor.__doc__ = (f"VGG{depth} with BatchNorm for CIFAR, blocks {VGG_CONFIGS[depth]} "
                         f"(RepDistiller's `vgg{depth}`, i.e. its `vgg{depth}_bn`).")
  return constructor


vgg8 = _named(8)
vgg11 = _named(11)
vgg13 = _named(13)
