"""Semantic segmentation, optionally with a privileged modality that only the teachers see.

Batches (`kd_jax.data.segmentation`): `{'image': float32 [B, H, W, C_all], 'label': int32 [B, H, W] (class
per pixel, `IGNORE` = 255 for pixels that count nowhere), 'index'}`; evaluation batches add 'mask' [B] (1 for
real rows, 0 for padding rows). The label map is called 'label', not 'mask', because 'mask' is taken by the
evaluation batches.

Channel views: the students are applied to `image[..., student_channels]` (`inputs`), the frozen teachers to
`image[..., teacher_channels]` (`teacher_inputs`), both cut from the SAME batch after the same augmentation;
`()` means every channel (config keys `data.student_channels`, `data.teacher_channels`). With the embedded
'buildings' data (channels red, green, blue, SAR) a teacher on `(0, 1, 2, 3)` sees EO+SAR, a student on
`(0, 1, 2)` EO only (Choi et al. 2022, METHODS.md item 15a).

Training: `augment_jointly` crops (after padding by `crop_pad`; the label is padded with `IGNORE`) and flips
the image and its label map alike. The supervised loss is the per-pixel cross-entropy averaged over the valid
pixels of the batch (label ≠ 255); a batch without valid pixels has loss 0.

Evaluation: per batch the confusion matrix of the real rows' valid pixels (`kd_jax.metrics.confusion_matrix`,
integer counts, so batches add up exactly); over the split mIoU (the headline, higher is better; classes absent
from both labels and predictions are NaN and left out of the mean), pixel accuracy and `iou_<c>` per class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import metrics as kd_metrics
from kd_jax.data.augment import augment_jointly
from kd_jax.errors import KDJaxError
from kd_jax.tasks.base import Batch, Task

IGNORE = 255


def check_channels(channels: Any, num_channels: int, key: str) -> Tuple[int, ...]:
  """`channels` (a tuple of indices into the image's last axis; () = all) checked against `num_channels`."""
  if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
    channels = (int(channels),)
  try:
    channels = tuple(channels)
  except TypeError:
    raise KDJaxError(f"config.data.{key} must be a tuple of channel indices (() = all), got {channels!r}.") from None
  bad = [c for c in channels if isinstance(c, bool) or not isinstance(c, (int, np.integer))
         or not 0 <= int(c) < num_channels]
  if bad:
    raise KDJaxError(f"config.data.{key}={channels!r}: channel(s) {bad} do not exist; the images have "
                     f"{num_channels} channel(s), indices 0..{num_channels - 1}.")
  if len(set(channels)) != len(channels):
    raise KDJaxError(f"config.data.{key}={channels!r} repeats a channel.")
  return tuple(int(c) for c in channels)


def _view(image: jax.Array, channels: Tuple[int, ...]) -> jax.Array:
  if not channels or channels == tuple(range(image.shape[-1])):
    return image
  return image[..., np.asarray(channels)]


@dataclasses.dataclass(frozen=True)
class Segmentation(Task):
  """See the module docstring.

  Attributes:
    num_classes: the number of classes (set from the dataset by `configured`).
    student_channels, teacher_channels: the image channels each sees (() = all).
  """

  name = "segmentation"
  headline = "miou"
  higher_is_better = True
  fields = ("label",)

  num_classes: int = 0
  student_channels: Tuple[int, ...] = ()
  teacher_channels: Tuple[int, ...] = ()

  def configured(self, data_config: Any, dataset: Any) -> "Segmentation":
    channels = int(dataset.image_shape[-1])
    return dataclasses.replace(
        self, num_classes=int(dataset.num_classes),
        student_channels=check_channels(data_config.get("student_channels", ()), channels, "student_channels"),
        teacher_channels=check_channels(data_config.get("teacher_channels", ()), channels, "teacher_channels"))

  def model_kwargs(self, dataset: Any) -> Dict[str, Any]:
    return {"num_classes": int(dataset.num_classes)}

  def inputs(self, batch: Batch) -> Any:
    return _view(batch["image"], self.student_channels)

  def teacher_inputs(self, batch: Batch) -> Any:
    return _view(batch["image"], self.teacher_channels)

  def views(self, raw: jax.Array) -> Tuple[jax.Array, jax.Array]:
    return _view(raw, self.student_channels), _view(raw, self.teacher_channels)

  def augment(self, rng: jax.Array, batch: Batch, *, crop_pad: int = 0, flip: bool = False) -> Dict[str, Any]:
    batch = dict(batch)
    if crop_pad or flip:
      out = augment_jointly(rng, {"image": batch["image"], "label": batch["label"]}, pad=crop_pad, flip=flip,
                            fill={"label": IGNORE})
      batch.update(out)
    return batch

  def _check(self, prediction: jax.Array, batch: Batch) -> None:
    if prediction.ndim != 4 or prediction.shape[:3] != batch["label"].shape:
      raise KDJaxError(f"Segmentation wants per-pixel logits [B, H, W, num_classes] matching the labels "
                       f"{tuple(batch['label'].shape)}; the model predicts {tuple(prediction.shape)}. Choose a "
                       "segmentation model (unet_tiny, unet_small, deeplab_tiny, deeplab_small, deeplab_small_dcn).")

  def loss(self, prediction: jax.Array, batch: Batch) -> jax.Array:
    self._check(prediction, batch)
    labels = batch["label"]
    valid = labels != IGNORE
    log_p = jax.nn.log_softmax(prediction.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_p, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    weight = valid.astype(jnp.float32)
    return jnp.sum(weight * nll) / jnp.maximum(jnp.sum(weight), 1.0)

  def train_metrics(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    labels = batch["label"]
    valid = (labels != IGNORE).astype(jnp.float32)
    hit = (jnp.argmax(prediction, -1) == labels).astype(jnp.float32)
    return {"pixel_accuracy": jnp.sum(hit * valid) / jnp.maximum(jnp.sum(valid), 1.0)}

  def eval_sums(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    self._check(prediction, batch)
    real = batch["mask"][:, None, None]
    confusion = kd_metrics.confusion_matrix(jnp.argmax(prediction, -1), batch["label"], num_classes=self.num_classes,
                                            ignore_index=IGNORE, weights=real)
    return {"confusion": confusion}

  def metrics(self, sums: Mapping[str, Any]) -> Dict[str, float]:
    confusion = np.asarray(sums["confusion"], np.float64)
    miou, iou = kd_metrics.iou_from_confusion(confusion)
    total = confusion.sum()
    out = {"miou": miou, "pixel_accuracy": float(np.trace(confusion) / total) if total else float("nan")}
    out.update({f"iou_{c}": float(v) for c, v in enumerate(iou)})
    return out
