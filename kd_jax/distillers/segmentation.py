"""Distillers for segmentation students (per-pixel logits [B, H, W, C]): `pixel_kd` and `cwd`
(`kd_jax.losses.segmentation`).

The generic `kd` on per-pixel logits averages over every pixel (`class_rows`), the ignore-labelled pixels
(label 255, crop padding included) too; `pixel_kd` averages over the valid pixels only. Feature terms
(`fitnet` with its 1×1 regressor, `at`) apply to the segmentation models' stages unchanged, since teacher and
student maps have the same spatial size whatever input channels each sees.
"""

from __future__ import annotations

import dataclasses

from kd_jax import losses
from kd_jax.distillers.base import Distiller, require_positive

IGNORE = 255


def _single(name: str, teacher):
  if isinstance(teacher, tuple):
    if len(teacher) != 1:
      raise ValueError(f"{name} reads one teacher, got {len(teacher)}; pick one with the term's 'teacher' key.")
    teacher = teacher[0]
  return teacher


@dataclasses.dataclass(frozen=True)
class PixelKD(Distiller):
  """`T²·KL(p_t^T || p_s^T)` per pixel, averaged over the batch's valid pixels (`batch['label'] != 255`).
  See `kd_jax.losses.pixel_kd`."""

  temperature: float = 4.0

  def __post_init__(self):
    require_positive("pixel_kd", temperature=self.temperature)

  def loss(self, variables, student, teacher, batch, ctx):
    teacher = _single("pixel_kd", teacher)
    valid = batch["label"] != IGNORE if "label" in batch else None
    return losses.pixel_kd(student.logits, teacher.logits, valid, self.temperature), {}, {}


@dataclasses.dataclass(frozen=True)
class CWD(Distiller):
  """Channel-wise distillation (Shu et al., ICCV 2021, arXiv:2011.13256) on the logit maps: per class channel
  a softmax over the H·W positions at temperature T, KL summed over positions, × T², mean over channels and
  images (mmrazor's reduction). See `kd_jax.losses.cwd`. Default T = 1 (mmrazor's `tau` default) [code]."""

  temperature: float = 1.0

  def __post_init__(self):
    require_positive("cwd", temperature=self.temperature)

  def loss(self, variables, student, teacher, batch, ctx):
    teacher = _single("cwd", teacher)
    return losses.cwd(student.logits, teacher.logits, self.temperature), {}, {}
