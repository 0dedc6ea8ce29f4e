"""Rating regression (recommendation with explicit feedback): predict a user's rating of an item.

Batches hold ids, not images: `{'user': [B] int, 'item': [B] int, 'rating': [B] float}`. The models
(e.g. `kd_jax.models.create_model('mf', num_users=..., num_items=...)`) take `{'user', 'item'}` and
predict a rating [B]; the supervised loss is the mean squared error and evaluation reports RMSE (the
headline, lower is better) and MAE, as the explicit-feedback recommender papers do.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping

import jax
import jax.numpy as jnp

from kd_jax.tasks.base import Batch, Task


@dataclasses.dataclass(frozen=True)
class Rating(Task):
  """Explicit-feedback rating prediction; see the module docstring."""

  name = "rating"
  headline = "rmse"
  higher_is_better = False
  fields = ("user", "item", "rating")

  def model_kwargs(self, dataset: Any) -> Dict[str, Any]:
    return {"num_users": dataset.info["num_users"], "num_items": dataset.info["num_items"]}

  def inputs(self, batch: Batch) -> Any:
    return {"user": batch["user"], "item": batch["item"]}

  def loss(self, prediction: jax.Array, batch: Batch) -> jax.Array:
    return jnp.mean((prediction.astype(jnp.float32) - batch["rating"]) ** 2)

  def train_metrics(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    return {"rmse": jnp.sqrt(self.loss(prediction, batch))}

  def eval_sums(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    mask = batch["mask"]
    error = prediction.astype(jnp.float32) - batch["rating"]
    return {"squared_error": jnp.sum(error**2 * mask), "absolute_error": jnp.sum(jnp.abs(error) * mask),
            "count": jnp.sum(mask)}

  def metrics(self, sums: Mapping[str, Any]) -> Dict[str, float]:
    return {"rmse": float(jnp.sqrt(sums["squared_error"] / sums["count"])),
            "mae": float(sums["absolute_error"] / sums["count"])}
