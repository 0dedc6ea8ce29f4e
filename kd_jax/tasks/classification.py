"""Image classification: integer labels, cross-entropy, accuracy."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping

import jax
import jax.numpy as jnp

from kd_jax import losses
from kd_jax.data.augment import augment
from kd_jax.tasks.base import Batch, Task


@dataclasses.dataclass(frozen=True)
class Classification(Task):
  """Batches `{'image': [B, H, W, C], 'label': [B] int}`; the prediction is logits [B, num_classes].

  Augmentation is `kd_jax.data.augment` (random crop after padding, horizontal flip) of the image; the
  supervised loss is the cross-entropy; evaluation reports accuracy and the mean negative log-likelihood.
  """

  name = "classification"
  headline = "accuracy"
  higher_is_better = True
  fields = ("label",)

  def model_kwargs(self, dataset: Any) -> Dict[str, Any]:
    return {"num_classes": dataset.num_classes}

  def augment(self, rng: jax.Array, batch: Batch, *, crop_pad: int = 0, flip: bool = False) -> Dict[str, Any]:
    batch = dict(batch)
    if crop_pad or flip:
      batch["image"] = augment(rng, batch["image"], pad=crop_pad, flip=flip)
    return batch

  def loss(self, prediction: jax.Array, batch: Batch) -> jax.Array:
    return losses.cross_entropy(prediction, batch["label"])

  def train_metrics(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    return {"accuracy": jnp.mean(jnp.argmax(prediction, -1) == batch["label"])}

  def eval_sums(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    mask = batch["mask"]
    log_p = jax.nn.log_softmax(prediction.astype(jnp.float32))
    nll = -jnp.take_along_axis(log_p, batch["label"][:, None], axis=-1)[:, 0]
    return {"correct": jnp.sum((jnp.argmax(prediction, -1) == batch["label"]) * mask),
            "nll": jnp.sum(nll * mask), "count": jnp.sum(mask)}

  def metrics(self, sums: Mapping[str, Any]) -> Dict[str, float]:
    return {"accuracy": float(sums["correct"] / sums["count"]), "nll": float(sums["nll"] / sums["count"])}
