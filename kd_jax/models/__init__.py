"""The model zoo: every model is a Flax linen module returning a `ModelOutput`.

Contract: `model.apply(variables, x, train=...)` with NHWC float inputs (MLPs flatten any input) returns
`ModelOutput(prediction, stages, preact_stages, embedding)`. BatchNorm statistics live in the `batch_stats`
collection, so a train-mode call needs `mutable=["batch_stats"]`; eval mode needs nothing mutable.

    model = create_model("resnet8x4", num_classes=100)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])

`MODELS` maps a name to a constructor `(num_classes, **kwargs) -> nn.Module`. The named models take only
`dtype`, `param_dtype` and `kernels`; the generic ones (`resnet`, `wrn`, `mlp`, `cnn`, `plain_cnn`) take
their shape as keyword arguments, e.g. `create_model("wrn", 100, depth=28, widen_factor=10)` (`wrn` also
takes `kernel`, e.g. "1x3") or `create_model("plain_cnn", 10, layers=("Conv16", "MaxPool", "FC10"))`, and
`mobilenetv2` optionally takes `width_mult` and `expand_ratio`. Models of other tasks take their sizes
instead of `num_classes`: the super-resolution models (`edsr*`, `rcan*`, `sr_tiny`) take `scale` (2, 3 or
4), e.g. `create_model("edsr_baseline", scale=4)`, `mf`/`neumf` (and their `_large`/`_small` sizes) the data's user and item counts, and the regression
models (`regression_mlp*`, `gru_trajectory*`, `fcn_regressor*`) `num_outputs`. docs/models.md
lists every model with its parameter count (`python tools/param_counts.py`).
ImageNet models (`imagenet_resnet18` ... `imagenet_resnet101` in torchvision's layout, `imagenet_mobilenetv1`,
which also takes `width_mult`) downsample by 32 for 224x224 inputs (any size >= 32 runs); `resnet50` is the CIFAR one.
Segmentation models (`unet*`; DeepLabv3+ `deeplab_tiny`, `deeplab_small`, `deeplab_small_dcn` and the generic
`deeplabv3plus`) take `num_classes` and any number of input channels and predict per-pixel logits.

`kernels` (a `kd_jax.backends.Kernels`, default `DEFAULT_KERNELS`) is where a model's convolutions and pools
take their kernels from: a training run passes the one its config selects (`kd_jax.backends.kernels_for`).
It changes how the values are computed on CPU (the same sums in another order), never the parameters.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, List, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.errors import KDJaxError
from kd_jax.models import (mobilenetv2, plain_cnn, rating, regression, resnet_bottleneck, resnet_cifar,
                           segmentation, shufflenet, small, super_resolution, vgg, wrn)
from kd_jax.models import mobilenetv1, resnet_imagenet
from kd_jax.models.discriminator import FeatureDiscriminator, TransferLayer
from kd_jax.models.mobilenetv2 import InvertedResidual, MobileNetV2
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.plain_cnn import PlainCNN
from kd_jax.models.rating import MatrixFactorization, NeuMF
from kd_jax.models.regression import FCNRegressor, GRUTrajectory
from kd_jax.models.resnet_bottleneck import BottleneckBlock, ResNetBottleneck
from kd_jax.models.resnet_cifar import BasicBlock, ResNetCIFAR
from kd_jax.models.segmentation import UNet
from kd_jax.models.shufflenet import (ShuffleNetV1, ShuffleNetV2, ShuffleV1Block, ShuffleV2Block,
                                      ShuffleV2DownBlock)
from kd_jax.models.small import CNN, MLP
from kd_jax.models.super_resolution import EDSR, RCAB, RCAN, EDSRBlock, ResidualGroup, Upsampler
from kd_jax.models.vgg import VGG
from kd_jax.models.wrn import FactorisedConv, PreActBlock, WideResNet

MODELS: Dict[str, Callable[..., nn.Module]] = {
    # CIFAR ResNets (He et al. 2016), RepDistiller conventions.
    "resnet": resnet_cifar.resnet,
    "resnet8": resnet_cifar.resnet8,
    "resnet14": resnet_cifar.resnet14,
    "resnet20": resnet_cifar.resnet20,
    "resnet26": resnet_cifar.resnet26,
    "resnet32": resnet_cifar.resnet32,
    "resnet44": resnet_cifar.resnet44,
    "resnet56": resnet_cifar.resnet56,
    "resnet110": resnet_cifar.resnet110,
    "resnet8x4": resnet_cifar.resnet8x4,
    "resnet32x4": resnet_cifar.resnet32x4,
    # Cheap-convolution students (Moonshine): every block's 3x3 convs depthwise-separable.
    "resnet8_dw_sep": resnet_cifar.resnet8_dw_sep,
    "resnet8x4_dw_sep": resnet_cifar.resnet8x4_dw_sep,
    # ResNet-50 with Bottleneck blocks and a CIFAR stem (RepDistiller's `ResNet50`).
    "resnet50": resnet_bottleneck.resnet50,
    # ImageNet models: torchvision's ResNets (state-dict names map one-to-one) and mdistiller's MobileNetV1.
    "imagenet_resnet18": resnet_imagenet.imagenet_resnet18,
    "imagenet_resnet34": resnet_imagenet.imagenet_resnet34,
    "imagenet_resnet50": resnet_imagenet.imagenet_resnet50,
    "imagenet_resnet101": resnet_imagenet.imagenet_resnet101,
    "imagenet_mobilenetv1": mobilenetv1.imagenet_mobilenetv1,
    # Wide ResNets (Zagoruyko & Komodakis 2016).
    "wrn": wrn.wrn,
    "wrn_16_1": wrn.wrn_16_1,
    "wrn_16_2": wrn.wrn_16_2,
    "wrn_40_1": wrn.wrn_40_1,
    "wrn_40_2": wrn.wrn_40_2,
    # Pacemaker KD (Son et al. 2020): teacher WRN-40-4; variants with every 3x3 conv replaced (`kernel`).
    "wrn_40_4": wrn.wrn_40_4,
    "wrn_40_4_2x3": wrn.wrn_40_4_2x3,
    "wrn_40_4_3x1_1x3": wrn.wrn_40_4_3x1_1x3,
    "wrn_40_4_1x3": wrn.wrn_40_4_1x3,
    "wrn_16_2_2x3": wrn.wrn_16_2_2x3,
    "wrn_16_2_3x1_1x3": wrn.wrn_16_2_3x1_1x3,
    "wrn_16_2_1x3": wrn.wrn_16_2_1x3,
    "wrn_16_2_dw_sep": wrn.wrn_16_2_dw_sep,
    # VGG with BatchNorm (Simonyan & Zisserman 2015), RepDistiller's `vgg8`/`vgg11`/`vgg13`.
    "vgg8": vgg.vgg8,
    "vgg11": vgg.vgg11,
    "vgg13": vgg.vgg13,
    # CIFAR MobileNetV2 (Sandler et al. 2018); `mobilenetv2_half` is RepDistiller's `mobile_half`.
    "mobilenetv2": mobilenetv2.mobilenetv2,
    "mobilenetv2_half": mobilenetv2.mobilenetv2_half,
    # CIFAR ShuffleNets (Zhang et al. 2018, Ma et al. 2018), RepDistiller's `ShuffleV1`/`ShuffleV2`.
    "shufflenetv1": shufflenet.shufflenetv1,
    "shufflenetv2": shufflenet.shufflenetv2,
    # TAKD's plain CNNs (Mirzadeh et al. 2020; also DGKD): `plain_cnn` takes a layer spec, `planeN` its books.
    "plain_cnn": plain_cnn.plain_cnn,
    "plane2": plain_cnn.plane2,
    "plane4": plain_cnn.plane4,
    "plane6": plain_cnn.plane6,
    "plane8": plain_cnn.plane8,
    "plane10": plain_cnn.plane10,
    # Small models for the 8x8 digits data and tests.
    "mlp": small.mlp,
    "mlp_tiny": small.mlp_tiny,
    "mlp_small": small.mlp_small,
    "cnn": small.cnn,
    "cnn_tiny": small.cnn_tiny,
    "cnn_small": small.cnn_small,
    "cnn_large": small.cnn_large,
    # Rating prediction (task 'rating'): biased matrix factorisation on user and item ids.
    "mf": rating.mf,
    "mf_large": rating.mf_large,
    "mf_small": rating.mf_small,
    # NeuMF (He et al. 2017): GMF and MLP towers, a linear output predicting the rating.
    "neumf": rating.neumf,
    "neumf_large": rating.neumf_large,
    "neumf_small": rating.neumf_small,
    # Regression (task 'regression'; constructors take `num_outputs`, the target's length or channels).
    "regression_mlp": regression.regression_mlp,
    "regression_mlp_large": regression.regression_mlp_large,
    "regression_mlp_small": regression.regression_mlp_small,
    "gru_trajectory": regression.gru_trajectory,
    "gru_trajectory_large": regression.gru_trajectory_large,
    "gru_trajectory_small": regression.gru_trajectory_small,
    "fcn_regressor": regression.fcn_regressor,
    "fcn_regressor_small": regression.fcn_regressor_small,
    "fcn_regressor_large": regression.fcn_regressor_large,
    # Super-resolution (constructors take `scale`, 2, 3 or 4): EDSR (Lim et al. 2017) and RCAN
    # (Zhang et al. 2018); `rcan_small` is FAKD's RCAN student, `sr_tiny` the SR study's.
    "edsr": super_resolution.edsr,
    "edsr_baseline": super_resolution.edsr_baseline,
    "edsr_8x32": super_resolution.edsr_8x32,
    "edsr_2x16": super_resolution.edsr_2x16,
    "sr_tiny": super_resolution.sr_tiny,
    "edsr_custom": super_resolution.edsr_custom,
    "rcan": super_resolution.rcan,
    "rcan_small": super_resolution.rcan_small,
    "rcan_custom": super_resolution.rcan_custom,
    "unet": segmentation.unet,
    "unet_small": segmentation.unet_small,
    "unet_tiny": segmentation.unet_tiny,
    "deeplabv3plus": segmentation.deeplabv3plus,
    "deeplab_small": segmentation.deeplab_small,
    "deeplab_small_dcn": segmentation.deeplab_small_dcn,
    "deeplab_tiny": segmentation.deeplab_tiny,
}

_DTYPE_KWARGS = ("dtype", "param_dtype")


def model_names() -> List[str]:
  """The registered model names, sorted."""
  return sorted(MODELS)


def model_arguments(name: str) -> List[str]:
  """The keyword arguments registered model `name` is built from (raises `KDJaxError` for unknown names)."""
  if name not in MODELS:
    raise KDJaxError(f"Unknown model {name!r}. Registered models: {', '.join(model_names())}.")
  return list(inspect.signature(MODELS[name]).parameters)


def create_model(name: str, num_classes: Optional[int] = None, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name`.

  Args:
    name: a key of `MODELS`.
    num_classes: classifier outputs (a positive integer) for the models that classify; models of other
      tasks take their sizes as keyword arguments instead (`mf`: `num_users`, `num_items`), which a task's
      `model_kwargs(dataset)` supplies.
    **kwargs: the constructor's keyword arguments (`dtype`, `param_dtype`, `kernels`, and for the generic
      models their shape, e.g. `depth`). `dtype`/`param_dtype` may be given as strings such as "bfloat16".

  Raises:
    KDJaxError: unknown name (the message lists the registered names), unknown or missing keyword
      arguments (the message lists the valid ones), or invalid values.
  """
  if name not in MODELS:
    raise KDJaxError(f"Unknown model {name!r}. Registered models: {', '.join(model_names())}.")
  constructor = MODELS[name]
  params = inspect.signature(constructor).parameters
  if num_classes is not None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
      raise KDJaxError(f"num_classes must be a positive integer; got {num_classes!r} for model {name!r}.")
    if "num_classes" not in params:
      raise KDJaxError(f"Model {name!r} does not classify (it takes {', '.join(params)}); choose a model "
                       "that fits config.task.")
    kwargs["num_classes"] = num_classes
  valid = list(params)
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise KDJaxError(f"Model {name!r} got unknown keyword argument(s) {unknown}; valid ones: "
                     f"{', '.join(p for p in valid if p != 'num_classes') or '(none)'}.")
  missing = [p for p in valid if params[p].default is inspect.Parameter.empty and p not in kwargs]
  if missing:
    raise KDJaxError(f"Model {name!r} needs {', '.join(missing)}; it does not fit this task's data, or pass them "
                     f"as keyword arguments (valid ones: {', '.join(valid)}).")
  for key in _DTYPE_KWARGS:
    if isinstance(kwargs.get(key), str):
      try:
        kwargs[key] = jnp.dtype(kwargs[key])
      except TypeError as e:
        raise KDJaxError(f"Model {name!r}: {key}={kwargs[key]!r} is not a dtype name "
                         "(try 'float32' or 'bfloat16').") from e
  return constructor(**kwargs)


def param_count(params: Any) -> int:
  """Total number of elements over the leaves of `params`.

  Pass `variables["params"]` to count trainable parameters only (as papers report them; BatchNorm running
  statistics are in `variables["batch_stats"]`). Works on arrays and on `jax.ShapeDtypeStruct` leaves, so
  `param_count(jax.eval_shape(model.init, key, x)["params"])` counts without computing anything.
  """
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


__all__ = [
    "MODELS",
    "BasicBlock",
    "BottleneckBlock",
    "CNN",
    "EDSR",
    "EDSRBlock",
    "FCNRegressor",
    "GRUTrajectory",
    "FactorisedConv",
    "FeatureDiscriminator",
    "MatrixFactorization",
    "NeuMF",
    "TransferLayer",
    "InvertedResidual",
    "MLP",
    "MobileNetV2",
    "ModelOutput",
    "PlainCNN",
    "PreActBlock",
    "RCAB",
    "RCAN",
    "ResidualGroup",
    "ResNetBottleneck",
    "ResNetCIFAR",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "ShuffleV1Block",
    "ShuffleV2Block",
    "ShuffleV2DownBlock",
    "Upsampler",
    "UNet",
    "VGG",
    "WideResNet",
    "create_model",
    "model_arguments",
    "model_names",
    "param_count",
]
