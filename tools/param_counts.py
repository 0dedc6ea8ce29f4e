"""Parameter counts of every registered model, as the Markdown tables in docs/models.md.

Usage:
  python tools/param_counts.py
Counts trainable parameters (`variables["params"]`, no BatchNorm running statistics) with
`kd_jax.models.param_count` on shapes from `jax.eval_shape`, so nothing is compiled or run: CIFAR-100
(100 classes, 32x32x3 inputs) for every named model, plus the 8x8x1, 10-class digits setting the small
models are meant for, and 1000 classes (224x224x3, in the notes) for the ImageNet models. The generic
classifiers take their shape as arguments and get no count, nor do
models of other tasks in the first table (the rating model `mf`, whose size follows the data's user and
item counts; the regression models, whose output width follows the targets). The super-resolution models (constructors that take `scale`) get a second table: RGB
images, counted at x2, x3 and x4 (the count does not depend on the image size); the generic `edsr_custom`
and `rcan_custom` are counted at their defaults.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from kd_jax.models import MODELS, create_model, model_arguments, param_count

CIFAR100 = (100, (1, 32, 32, 3))
DIGITS = (10, (1, 8, 8, 1))
GENERIC = ("resnet", "wrn", "mlp", "cnn", "plain_cnn")
# Models of tasks other than classification: no CIFAR-100 count; the note says what sizes them.
OTHER_TASKS: Dict[str, str] = {"mf": "rating task: sizes from the data (`num_users`, `num_items`, `dim` 16)"}
OTHER_TASKS.update({name: "rating task: sizes from the data (`num_users`, `num_items`)"
                    for name in ("mf_large", "mf_small", "neumf", "neumf_large", "neumf_small")})
SMALL_PREFIXES = ("mlp", "cnn")
# Super-resolution: counted per upscaling factor on RGB inputs (the size of the image does not matter).
SR_SCALES = (2, 3, 4)
SR_INPUT = (1, 8, 8, 3)
# ImageNet models: also counted for 1000 classes on 224x224x3 inputs (in the notes), the reference's own count.
IMAGENET = (1000, (1, 224, 224, 3))
IMAGENET_REFERENCE: Dict[str, str] = {
    "imagenet_resnet18": "torchvision's `resnet18`", "imagenet_resnet34": "torchvision's `resnet34`",
    "imagenet_resnet50": "torchvision's `resnet50`", "imagenet_resnet101": "torchvision's `resnet101`",
    "imagenet_mobilenetv1": "mdistiller's `MobileNetV1`",
}


def is_super_resolution(name: str) -> bool:
  """Whether registered model `name` is a super-resolution model (its constructor takes `scale`)."""
  return "scale" in model_arguments(name)


for _name in MODELS:
  if is_super_resolution(_name):
    OTHER_TASKS[_name] = "super-resolution: counts at x2, x3, x4 in the super-resolution table"
  elif "num_outputs" in model_arguments(_name):
    OTHER_TASKS[_name] = "regression task: output width `num_outputs` from the data (counts in kd_jax/models/regression.py)"

# Segmentation models: sized by the data's class count and input channels (counted on 'buildings', 3 classes).
OTHER_TASKS.update({
    "unet": "segmentation task: `num_classes` and input channels from the data; generic (`widths`)",
    "unet_small": "segmentation task: 3 classes: 118,627 (3 EO channels), 118,771 (4, EO+SAR)",
    "unet_tiny": "segmentation task: 3 classes: 29,939 (3 EO channels), 30,011 (4, EO+SAR)",
    "deeplabv3plus": ("segmentation task: `num_classes` and input channels from the data; generic (`widths`, "
                      "`blocks`, `aspp_rates`, `aspp_features`, `low_level_features`, `decoder_features`, `deformable`)"),
    "deeplab_small": "segmentation task: 3 classes: 651,203 (3 EO channels), 651,491 (4, EO+SAR)",
    "deeplab_small_dcn": "segmentation task: 3 classes: 697,913 (3 EO channels), 698,201 (4, EO+SAR)",
    "deeplab_tiny": "segmentation task: 3 classes: 163,683 (3 EO channels), 163,827 (4, EO+SAR)",
})

# CIFAR-100 counts printed in the KD literature for RepDistiller's definitions of the same models.
REPORTED: Dict[str, str] = {
    "resnet20": "0.28M", "resnet56": "0.86M", "resnet110": "1.74M", "resnet8x4": "1.23M",
    "resnet32x4": "7.43M", "wrn_16_2": "0.70M", "wrn_40_1": "0.57M", "wrn_40_2": "2.26M", "vgg8": "3.96M",
    "vgg13": "9.46M", "mobilenetv2_half": "0.81M", "shufflenetv1": "0.95M", "shufflenetv2": "1.36M",
    "resnet50": "23.71M",
}
# Counts the SR papers print (their tables give one number per model; the EDSR paper's are its x4
# networks, which the x4 counts here match to that rounding): EDSR paper Table 1, RCAN paper Sec. 4.
REPORTED_SR: Dict[str, str] = {"edsr_baseline": "1.5M (x4)", "edsr": "43M (x4)", "rcan": "~16M"}

LAYOUT: Dict[str, str] = {
    "resnet": "CIFAR ResNet, any depth 6n+2 (`depth`, `stem_width`, `widths`)",
    "wrn": "Wide ResNet, any WRN-d-k (`depth`, `widen_factor`)",
    "mlp": "MLP (`hidden_sizes`)",
    "cnn": "VGG-style CNN (`widths`, `convs_per_stage`)",
    "resnet8x4": "CIFAR ResNet, 1 BasicBlock/stage, stem 32, widths 64-128-256",
    "resnet32x4": "CIFAR ResNet, 5 BasicBlocks/stage, stem 32, widths 64-128-256",
    "resnet50": "ResNet-50, Bottleneck (3, 4, 6, 3), 3x3 stem, widths 256-512-1024-2048",
    "imagenet_resnet18": "ImageNet ResNet-18, BasicBlock (2, 2, 2, 2), 7x7/2 stem + max pool, widths 64-128-256-512",
    "imagenet_resnet34": "ImageNet ResNet-34, BasicBlock (3, 4, 6, 3), 7x7/2 stem + max pool, widths 64-128-256-512",
    "imagenet_resnet50": "ImageNet ResNet-50, Bottleneck (3, 4, 6, 3), 7x7/2 stem + max pool, widths 256-512-1024-2048",
    "imagenet_resnet101": "ImageNet ResNet-101, Bottleneck (3, 4, 23, 3), 7x7/2 stem + max pool, widths 256-512-1024-2048",
    "imagenet_mobilenetv1": "ImageNet MobileNetV1, 13 depthwise-separable blocks, 64-1024 (`width_mult` optional)",
    "vgg8": "VGG-BN, one conv per block (64-128-256-512-512)",
    "vgg11": "VGG-BN, config A (1-1-2-2-2 convs)",
    "vgg13": "VGG-BN, config B (2 convs per block)",
    "mobilenetv2": "CIFAR MobileNetV2, width 1, T = 6 (`width_mult`, `expand_ratio` optional)",
    "mobilenetv2_half": "CIFAR MobileNetV2, width 0.5, T = 6 (RepDistiller's `mobile_half`)",
    "shufflenetv1": "CIFAR ShuffleNet V1, g = 3, 240-480-960, (4, 8, 4) units",
    "shufflenetv2": "CIFAR ShuffleNet V2 1x, 116-232-464, (3, 7, 3) units, head 1024",
    "wrn_16_1": "WRN-16-1", "wrn_16_2": "WRN-16-2", "wrn_40_1": "WRN-40-1", "wrn_40_2": "WRN-40-2",
    "mlp_tiny": "MLP 32-32", "mlp_small": "MLP 256-128",
    "cnn_tiny": "CNN 8-16-32, 1 conv/stage", "cnn_small": "CNN 16-32-64, 1 conv/stage",
    "cnn_large": "CNN 32-64-128, 2 convs/stage",
    "mf": "biased matrix factorisation, μ + b_u + b_i + p_u·q_i",
    "mf_large": "biased matrix factorisation, dim 100", "mf_small": "biased matrix factorisation, dim 10",
    "neumf": "NeuMF: GMF + MLP towers, linear rating output (`gmf_dim`, `mlp_layers`)",
    "neumf_large": "NeuMF, GMF 32, MLP 64-32-16", "neumf_small": "NeuMF, GMF 8, MLP 16-8",
    "regression_mlp": "MLP regressor (`hidden_sizes`)", "regression_mlp_large": "MLP regressor 256-256",
    "regression_mlp_small": "MLP regressor 16", "gru_trajectory": "GRU encoder + linear head (`hidden`)",
    "gru_trajectory_large": "GRU(64) encoder + linear head", "gru_trajectory_small": "GRU(16) encoder + linear head",
    "fcn_regressor": "fully convolutional regressor (`widths`)",
    "fcn_regressor_small": "conv3x3-ReLU x2 (16), 1x1 head", "fcn_regressor_large": "conv3x3-ReLU x3 (32), 1x1 head",
    "edsr": "EDSR, 32 res blocks, 256 channels, res_scale 0.1",
    "edsr_baseline": "EDSR-baseline, 16 res blocks, 64 channels",
    "edsr_8x32": "EDSR, 8 res blocks, 32 channels",
    "edsr_2x16": "EDSR, 2 res blocks, 16 channels",
    "sr_tiny": "EDSR, 1 res block, 8 channels (the SR study's student; tests)",
    "edsr_custom": "EDSR, any size (`num_blocks`, `features`, `res_scale`)",
    "rcan": "RCAN, 10 groups x 20 RCABs, 64 channels, reduction 16",
    "rcan_small": "RCAN, 10 groups x 6 RCABs, 64 channels (FAKD's student)",
    "rcan_custom": "RCAN, any size (`num_groups`, `num_blocks`, `features`, `reduction`)",
    "unet": "U-Net, 2x(conv3x3-BN-ReLU) per level, max pool / nearest upsampling, skips (`widths`)",
    "unet_small": "U-Net, widths 16-32-64, 1x1 head", "unet_tiny": "U-Net, widths 8-16-32, 1x1 head",
    "deeplabv3plus": "DeepLabv3+: BasicBlock ResNet (last stage dilated, output stride 8), ASPP, decoder (`widths`)",
    "deeplab_small": "DeepLabv3+, widths 32-64-128, ASPP 64 (rates 1-2-3), decoder 64",
    "deeplab_small_dcn": "DeepLabv3+, widths 32-64-128, DCNv2 last stage, ASPP 64, decoder 64",
    "deeplab_tiny": "DeepLabv3+, widths 16-32-64, ASPP 32 (rates 1-2-3), decoder 32",
}
for _depth in (8, 14, 20, 26, 32, 44, 56, 110):
  _n = (_depth - 2) // 6
  LAYOUT.setdefault(f"resnet{_depth}",
                    f"CIFAR ResNet, {_n} BasicBlock{'s' if _n > 1 else ''}/stage, widths 16-32-64")

NOTES: Dict[str, str] = {
    "vgg8": "3.965M, which the tables print as 3.96M",
    "mobilenetv2": "RepDistiller's `mobilenetv2_T_w(6, 1.0)`",
}
SR_NOTES: Dict[str, str] = {
    "edsr_custom": "generic; counted at its defaults (16 blocks, 64 channels: `edsr_baseline`)",
    "rcan_custom": "generic; counted at its defaults (10 x 20, 64 channels: `rcan`)",
}


def count(name: str, num_classes: int = CIFAR100[0], input_shape: Tuple[int, ...] = CIFAR100[1]) -> int:
  """Trainable parameters of the registered model `name` (traced with `jax.eval_shape`, not run)."""
  model = create_model(name, num_classes)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape), train=False))
  return param_count(variables["params"])


def _layout(name: str) -> str:
  if name in LAYOUT:
    return LAYOUT[name]
  doc = " ".join((MODELS[name].__doc__ or "").split())
  return doc.split(". ")[0].rstrip(".") or "—"


def markdown_row(name: str, cifar100: Optional[int], digits: Optional[int] = None,
                 imagenet: Optional[int] = None) -> str:
  """One table row; `cifar100`/`digits`/`imagenet` are the counts (None where there is none)."""
  notes = [NOTES[name]] if name in NOTES else []
  if name in GENERIC:
    notes.append("generic: shape from keyword arguments")
  if name in OTHER_TASKS:
    notes.append(OTHER_TASKS[name])
  if digits is not None:
    notes.append(f"digits (8x8x1, 10 classes): {digits:,}")
  if imagenet is not None:
    notes.append(f"ImageNet (1000 classes): {imagenet:,}, equal to {IMAGENET_REFERENCE[name]}")
  params = f"{cifar100:,}" if cifar100 is not None else "—"
  return f"| `{name}` | {_layout(name)} | {params} | {REPORTED.get(name, '—')} | {'; '.join(notes)} |"


def markdown(names: Optional[Sequence[str]] = None) -> str:
  """The whole table: every registered model by default, in registry (family) order."""
  lines = ["| model | layout | params (CIFAR-100) | reported | notes |", "|---|---|---:|---:|---|"]
  for name in names if names is not None else list(MODELS):
    if name in GENERIC or name in OTHER_TASKS:
      lines.append(markdown_row(name, None))
      continue
    digits = count(name, *DIGITS) if name.startswith(SMALL_PREFIXES) else None
    imagenet = count(name, *IMAGENET) if name in IMAGENET_REFERENCE else None
    lines.append(markdown_row(name, count(name), digits, imagenet))
  return "\n".join(lines)


def count_sr(name: str, scale: int, input_shape: Tuple[int, ...] = SR_INPUT) -> int:
  """Trainable parameters of the registered super-resolution model `name` at upscaling factor `scale`."""
  model = create_model(name, scale=scale)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape), train=False))
  return param_count(variables["params"])


def sr_markdown_row(name: str, counts: Sequence[int]) -> str:
  """One row of the super-resolution table; `counts` are the counts at `SR_SCALES`."""
  cells = " | ".join(f"{c:,}" for c in counts)
  return f"| `{name}` | {_layout(name)} | {cells} | {REPORTED_SR.get(name, '—')} | {SR_NOTES.get(name, '')} |"


def sr_markdown(names: Optional[Sequence[str]] = None) -> str:
  """The super-resolution table: every registered SR model by default, counted at x2, x3 and x4."""
  scales = " | ".join(f"params x{s}" for s in SR_SCALES)
  lines = [f"| model | layout | {scales} | reported | notes |", "|---|---|" + "---:|" * len(SR_SCALES) + "---:|---|"]
  for name in names if names is not None else [n for n in MODELS if is_super_resolution(n)]:
    lines.append(sr_markdown_row(name, [count_sr(name, s) for s in SR_SCALES]))
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown())
  print()
  print(sr_markdown())
