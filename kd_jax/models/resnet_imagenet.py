"""ImageNet ResNets (ResNet-18/34/50/101) in torchvision's layout, parameter for parameter.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385 (Table 1).
The layout follows torchvision's `torchvision/models/resnet.py` (`ResNet`, `BasicBlock`, `Bottleneck`): a
7x7 stride-2 conv (64, no bias) - BN - ReLU stem, a 3x3 stride-2 max pool (padding 1), four stages of
BasicBlocks (ResNet-18/34) or Bottlenecks (ResNet-50/101) with widths 64, 128, 256, 512 (Bottleneck outputs
4x wider) and strides 1, 2, 2, 2, global average pooling and a linear classifier with a bias. Bottlenecks
stride their 3x3 conv ("ResNet v1.5", as torchvision). A block's shortcut is a strided 1x1 conv + BN where
its shape changes. BatchNorm uses torchvision's eps 1e-5 and momentum 0.1 (0.9 in Flax's convention); convs
are Kaiming-normal (fan-out), the classifier weight PyTorch's default uniform (its bias starts at zero).
torchvision's optional zero init of each block's last BN scale (`zero_init_residual`, off by default there)
is not offered. These are the teachers and students of the
standard ImageNet KD pairs (ResNet-34 -> ResNet-18, ResNet-50 -> MobileNetV1). mdistiller's
`mdistiller/models/imagenet/resnet.py` has the same parameters (it loads torchvision's weights) and moves
each block's final ReLU to the start of the next block, which computes the same function: its `feats` and
`preact_feats` are `stem` and `stages`, and the stem BN output and `preact_stages` here.

Parameter names map one-to-one onto torchvision's `state_dict()` keys (`torchvision_key` computes the map):

    flax variables path                             torchvision key
    params/conv1/kernel            [7, 7, 3, 64]     conv1.weight                  [64, 3, 7, 7]
    params/bn1/scale, bias                           bn1.weight, bn1.bias
    batch_stats/bn1/mean, var                        bn1.running_mean, bn1.running_var
    params/layer{s}_{b}/conv{k}/kernel               layer{s}.{b}.conv{k}.weight
    params/layer{s}_{b}/bn{k}/...                    layer{s}.{b}.bn{k}....
    params/layer{s}_{b}/downsample_conv/kernel       layer{s}.{b}.downsample.0.weight
    params/layer{s}_{b}/downsample_bn/...            layer{s}.{b}.downsample.1....
    params/fc/kernel               [C_in, classes]   fc.weight                     [classes, C_in]
    params/fc/bias                                   fc.bias

Conv kernels are HWIO here and OIHW in PyTorch (`kernel.transpose(3, 2, 0, 1)` gives the PyTorch weight);
the fc kernel is the transpose of PyTorch's weight. PyTorch's `num_batches_tracked` buffers have no
counterpart (Flax's BatchNorm keeps no step count). Parameter counts for 1000 classes equal torchvision's:
ResNet-18 11,689,512, ResNet-34 21,797,672, ResNet-50 25,557,032, ResNet-101 44,549,160.

The names are `imagenet_resnet18` ... `imagenet_resnet101`: the registry's `resnet50` is RepDistiller's
CIFAR ResNet-50, and the prefix keeps the ImageNet family together and apart from the CIFAR names that
start with `resnet`.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.layers import conv
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_bottleneck import BottleneckBlock
from kd_jax.models.resnet_cifar import BasicBlock, Dtype, batch_norm, classifier, global_avg_pool

WIDTHS = (64, 128, 256, 512)
# Blocks per stage of torchvision's depths, and whether they are Bottlenecks.
DEPTHS = {18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True),
          101: ((3, 4, 23, 3), True)}


def max_pool_3x3(x: jax.Array, train: bool, kernels: Kernels = DEFAULT_KERNELS) -> jax.Array:
  """torchvision's stem pool, `MaxPool2d(3, stride=2, padding=1)`: the padding is -inf, so it never wins.

  In eval mode the input and output pass `kernels.fusion_barrier` (an identity), as `vgg.max_pool_2x2`'s
  do: on CPU a reduce-window otherwise takes the neighbouring convolutions into YNNPACK."""
  pool = lambda y: nn.max_pool(y, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  if train:
    return pool(x)
  barrier = kernels.fusion_barrier
  return barrier(pool(barrier(x)))


class ResNetImageNet(nn.Module):
  """torchvision's ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global average pool, fc.

  Outputs (`ModelOutput`), with strides 4, 8, 16, 32 for the stages (56, 28, 14, 7 pixels on 224x224
  inputs): `stages[i]` is the output of stage i's last block (64, 128, 256, 512 channels, or 4x that with
  Bottlenecks), `preact_stages[i]` the same before its final ReLU, `embedding` the pooled last stage,
  `stem` the stem's conv-BN-ReLU output before the max pool (stride 2; mdistiller's `feats[0]`). Any input
  of at least 32x32 gives every stage at least one pixel.

  Attributes:
    num_classes: classifier outputs (1000 for ImageNet).
    blocks_per_stage: blocks in each of the four stages ((2, 2, 2, 2) for ResNet-18).
    bottleneck: Bottleneck blocks (ResNet-50/101) rather than BasicBlocks (ResNet-18/34).
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
  """

  num_classes: int
  blocks_per_stage: Tuple[int, ...] = (2, 2, 2, 2)
  bottleneck: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    if len(self.blocks_per_stage) != len(WIDTHS) or not all(n >= 1 for n in self.blocks_per_stage):
      raise KDJaxError(f"ResNetImageNet needs one positive block count for each of its {len(WIDTHS)} stages; "
                       f"got blocks_per_stage={self.blocks_per_stage}.")
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    x = conv(64, 7, 2, dtype=dt, param_dtype=pdt, kernels=k, name="conv1")(x)
    stem = nn.relu(batch_norm(train, dt, pdt, "bn1")(x))
    x = max_pool_3x3(stem, train, k)
    block = BottleneckBlock if self.bottleneck else BasicBlock
    stages, preacts = [], []
    for s, (width, blocks) in enumerate(zip(WIDTHS, self.blocks_per_stage)):
      for b in range(blocks):
        stride = 2 if (s > 0 and b == 0) else 1
        x, preact = block(width, stride, dt, pdt, k, name=f"layer{s + 1}_{b}")(x, train)
      stages.append(x)
      preacts.append(preact)
    embedding = global_avg_pool(x, train, k)
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding, stem=stem)


def _named(depth: int):
  blocks, bottleneck = DEPTHS[depth]

  def constructor(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                  kernels: Kernels = DEFAULT_KERNELS) -> ResNetImageNet:
    return ResNetImageNet(num_classes=num_classes, blocks_per_stage=blocks, bottleneck=bottleneck, dtype=dtype,
                          param_dtype=param_dtype, kernels=kernels)

  constructor.__name__ = constructor.__qualname__ = f"imagenet_resnet{depth}"
  constructor.__doc__ = (f"ResNet-{depth} for ImageNet in torchvision's layout (`torchvision.models.resnet{depth}`): "
                         f"{'Bottleneck' if bottleneck else 'BasicBlock'}s {blocks}, 7x7/2 stem and 3x3/2 max pool "
                         "(He et al., CVPR 2016, arXiv:1512.03385).")
  return constructor


imagenet_resnet18 = _named(18)
imagenet_resnet34 = _named(34)
imagenet_resnet50 = _named(50)
imagenet_resnet101 = _named(101)

# Flax's leaf names under each collection, and PyTorch's for the same tensor.
_TORCH_LEAVES = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
                 ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_TORCH_MODULES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}


def torch_leaf_name(collection: str, leaf: str) -> str:
  """PyTorch's name for a Flax variable leaf: a kernel or BN scale is `weight`, a BN mean/var a running
  statistic. Raises `KDJaxError` for leaves PyTorch's conv, BN and linear layers do not have."""
  if (collection, leaf) not in _TORCH_LEAVES:
    raise KDJaxError(f"No PyTorch counterpart for the variable {collection}/.../{leaf}; only conv, BatchNorm "
                     f"and linear variables map ({', '.join('/'.join(k) for k in _TORCH_LEAVES)}).")
  return _TORCH_LEAVES[(collection, leaf)]


def torchvision_key(path: Sequence[str]) -> str:
  """The torchvision `state_dict()` key of one `ResNetImageNet` variable, e.g.
  `("params", "layer1_0", "conv1", "kernel")` -> `"layer1.0.conv1.weight"` (the module docstring has the
  table; the tensor itself still needs the HWIO -> OIHW transpose)."""
  collection, *modules, leaf = path
  parts = []
  for module in modules:
    if module.startswith("layer") and "_" in module:
      parts += module.split("_", 1)
    else:
      parts.append(_TORCH_MODULES.get(module, module))
  return ".".join(parts + [torch_leaf_name(collection, leaf)])
