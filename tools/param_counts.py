"""Parameter counts of every registered model, as the Markdown table in docs/models.md.

Usage:
  python tools/param_counts.py
Counts trainable parameters (`variables["params"]`, no BatchNorm running statistics) with
`kd_jax.models.param_count` on shapes from `jax.eval_shape`, so nothing is compiled or run: CIFAR-100
(100 classes, 32x32x3 inputs) for every named model, plus the 8x8x1, 10-class digits setting the small
models are meant for. The generic constructors take their shape as arguments and get no count, nor do
models of other tasks (the rating model `mf`, whose size follows the data's user and item counts).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from kd_jax.models import MODELS, create_model, param_count

CIFAR100 = (100, (1, 32, 32, 3))
DIGITS = (10, (1, 8, 8, 1))
GENERIC = ("resnet", "wrn", "mlp", "cnn")
# Models of tasks other than classification: no CIFAR-100 count; the note says what sizes them.
OTHER_TASKS: Dict[str, str] = {"mf": "rating task: sizes from the data (`num_users`, `num_items`, `dim` 16)"}
SMALL_PREFIXES = ("mlp", "cnn")

# CIFAR-100 counts printed in the KD literature for RepDistiller's definitions of the same models.
REPORTED: Dict[str, str] = {
    "resnet20": "0.28M", "resnet56": "0.86M", "resnet110": "1.74M", "resnet8x4": "1.23M",
    "resnet32x4": "7.43M", "wrn_16_2": "0.70M", "wrn_40_1": "0.57M", "wrn_40_2": "2.26M", "vgg8": "3.96M",
    "vgg13": "9.46M", "mobilenetv2_half": "0.81M", "shufflenetv1": "0.95M", "shufflenetv2": "1.36M",
    "resnet50": "23.71M",
}

LAYOUT: Dict[str, str] = {
    "resnet": "CIFAR ResNet, any depth 6n+2 (`depth`, `stem_width`, `widths`)",
    "wrn": "Wide ResNet, any WRN-d-k (`depth`, `widen_factor`)",
    "mlp": "MLP (`hidden_sizes`)",
    "cnn": "VGG-style CNN (`widths`, `convs_per_stage`)",
    "resnet8x4": "CIFAR ResNet, 1 BasicBlock/stage, stem 32, widths 64-128-256",
    "resnet32x4": "CIFAR ResNet, 5 BasicBlocks/stage, stem 32, widths 64-128-256",
    "resnet50": "ResNet-50, Bottleneck (3, 4, 6, 3), 3x3 stem, widths 256-512-1024-2048",
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
}
for _depth in (8, 14, 20, 26, 32, 44, 56, 110):
  _n = (_depth - 2) // 6
  LAYOUT.setdefault(f"resnet{_depth}",
                    f"CIFAR ResNet, {_n} BasicBlock{'s' if _n > 1 else ''}/stage, widths 16-32-64")

NOTES: Dict[str, str] = {
    "vgg8": "3.965M, which the tables print as 3.96M",
    "mobilenetv2": "RepDistiller's `mobilenetv2_T_w(6, 1.0)`",
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


def markdown_row(name: str, cifar100: Optional[int], digits: Optional[int] = None) -> str:
  """One table row; `cifar100`/`digits` are the counts (None where there is none)."""
  notes = [NOTES[name]] if name in NOTES else []
  if name in GENERIC:
    notes.append("generic: shape from keyword arguments")
  if name in OTHER_TASKS:
    notes.append(OTHER_TASKS[name])
  if digits is not None:
    notes.append(f"digits (8x8x1, 10 classes): {digits:,}")
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
    lines.append(markdown_row(name, count(name), digits))
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown())
