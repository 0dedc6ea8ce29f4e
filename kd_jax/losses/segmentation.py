"""Distillation losses on per-pixel logit maps (semantic segmentation), class axis last: [B, H, W, C].

`pixel_kd` is Hinton KD at every pixel, averaged over the VALID pixels only (the generic `kd` on
`class_rows` averages over all pixels, ignore-labelled and crop-padding pixels included). `cwd` is
channel-wise distillation, which normalises each class channel over the spatial positions instead.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from kd_jax.losses.dtypes import at_least_float32
from kd_jax.losses.logits import kl_divergence_per_example


def _check_maps(name: str, student_logits: jax.Array, teacher_logits: jax.Array) -> None:
  if student_logits.ndim != 4 or student_logits.shape != teacher_logits.shape:
    raise ValueError(f"{name}: student logits {student_logits.shape} and teacher logits {teacher_logits.shape} "
                     "must be per-pixel logit maps of the same shape [B, H, W, C].")


def pixel_kd(student_logits: jax.Array, teacher_logits: jax.Array, valid: Optional[jax.Array] = None,
             temperature: float = 4.0) -> jax.Array:
  """Per-pixel KD: `Σ_{b,h,w} v_bhw · T²·KL(p_t^T || p_s^T)_bhw / max(Σ v, 1)`, class softmax at every pixel.

  Hinton et al. 2015 (arXiv:1503.02531) applied per pixel, as in the "KL-divergence" objective of pixel-wise
  segmentation KD (e.g. Liu et al., "Structured Knowledge Distillation for Semantic Segmentation", CVPR 2019,
  pixel-wise term); the valid-pixel mean is our reduction [assume]: sum over classes, mean over the valid
  pixels of the whole batch (pooled, not per image). With every pixel valid it equals
  `kd(class_rows(s), class_rows(t), T)`. A batch with no valid pixel gives 0. The teacher is a constant
  (`stop_gradient`).

  Args:
    student_logits, teacher_logits: [B, H, W, C].
    valid: [B, H, W] bool or 0/1 (e.g. `label != 255`); None = every pixel.
    temperature: T > 0.
  """
  _check_maps("pixel_kd", student_logits, teacher_logits)
  per_pixel = kl_divergence_per_example(student_logits, jax.lax.stop_gradient(teacher_logits), temperature)
  per_pixel = per_pixel * temperature**2
  if valid is None:
    return jnp.mean(per_pixel)
  weight = jnp.asarray(valid).astype(per_pixel.dtype)
  return jnp.sum(weight * per_pixel) / jnp.maximum(jnp.sum(weight), 1.0)


def cwd(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Channel-wise distillation: `T²/(B·C) · Σ_{b,c} KL(φ(z_t,bc/T) || φ(z_s,bc/T))`, φ a softmax over H·W.

  Shu, Liu, Gao, Yan, Shen, "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021,
  arXiv:2011.13256. Each channel (class) c of each map is turned into a distribution over its H·W positions;
  the KL is summed over positions, multiplied by T², and averaged over channels and images. The reduction
  (sum over every position, channel and image, divided by C·N) is the one of the reference implementation
  (mmrazor's `ChannelWiseDivergence`, the authors' code base) [code]. Every position counts, whatever its
  label (the reference masks nothing). The teacher is a constant (`stop_gradient`).

  Args:
    student_logits, teacher_logits: [B, H, W, C] (the same shape).
    temperature: T > 0 (mmrazor's default τ = 1).
  """
  _check_maps("cwd", student_logits, teacher_logits)
  b, h, w, c = student_logits.shape
  rows = lambda z: jnp.moveaxis(at_least_float32(z), -1, 1).reshape(b * c, h * w)
  per_channel = kl_divergence_per_example(rows(student_logits), rows(jax.lax.stop_gradient(teacher_logits)),
                                          temperature)
  return jnp.sum(per_channel) * temperature**2 / (b * c)


__all__ = ["cwd", "pixel_kd"]
