"""Rating regression (recommendation with explicit feedback): predict a user's rating of an item.

Batches hold ids, not images: `{'user': [B] int, 'item': [B] int, 'rating': [B] float}`. The models
(e.g. `kd_jax.models.create_model('mf', num_users=..., num_items=...)`) take `{'user', 'item'}` and
predict a rating [B]; the supervised loss is the mean squared error and evaluation reports RMSE (the
headline, lower is better) and MAE, as the explicit-feedback recommender papers do.

Evaluation also reports NDCG@10 over each user's held-out ratings (`ndcg@10`, higher is better), the ranking
metric of the explicit-feedback distillation papers (DUET, Bae et al., Information Fusion 2025): for every
user with at least two ratings in the evaluated split, the items of those ratings are ranked by the model's
predicted rating, and the gain of an item is its held-out rating (`kd_jax.metrics.ndcg_at_k`: linear gain,
discount 1/log2(rank + 1), normalised by the ideal ordering of the held-out ratings, k = 10); the metric is the
mean over those users. Items outside the user's held-out ratings (training items, unrated items) are not
ranked. Users with a single held-out rating are left out, since any model ranks one item perfectly. Being a
per-user quantity it cannot be summed per batch: it is computed on the host from the whole split's
predictions (`split_metrics`) after the batched RMSE/MAE pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.metrics import ndcg_at_k
from kd_jax.tasks.base import Batch, Task

NDCG_K = 10


@dataclasses.dataclass(frozen=True)
class Rating(Task):
  """Explicit-feedback rating prediction; see the module docstring.

  Attributes:
    num_items: the data's item count, set by `configured` (the recommender distillers draw items from
      [0, num_items)); 0 for the unconfigured task.
  """

  name = "rating"
  headline = "rmse"
  higher_is_better = False
  fields = ("user", "item", "rating")
  split_metric_names = (f"ndcg@{NDCG_K}",)
  num_items: int = 0

  def configured(self, data_config: Any, dataset: Any) -> "Rating":
    del data_config
    return dataclasses.replace(self, num_items=int(dataset.info["num_items"]))

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

  def split_metrics(self, predictions: np.ndarray, split: Any) -> Dict[str, float]:
    """NDCG@10 over each user's ratings in `split` (see the module docstring)."""
    return {f"ndcg@{NDCG_K}": held_out_ndcg(split.arrays["user"], split.arrays["rating"], predictions, k=NDCG_K)}


def held_out_ndcg(users: np.ndarray, ratings: np.ndarray, predictions: np.ndarray, *, k: int = NDCG_K,
                  min_items: int = 2) -> float:
  """NDCG@k of ranking each user's held-out ratings by `predictions` (one per rating, the same order),
  gain = the held-out rating, over the users with at least `min_items` of them; NaN when there are none."""
  users, ratings, predictions = (np.asarray(a) for a in (users, ratings, predictions))
  order = np.argsort(users, kind="stable")
  ids, starts, counts = np.unique(users[order], return_index=True, return_counts=True)
  keep = counts >= min_items
  if not keep.any():
    return float("nan")
  starts, counts = starts[keep], counts[keep]
  # One padded row per user: position j of row u holds the user's j-th held-out rating.
  width = int(counts.max())
  rows = np.repeat(np.arange(len(counts)), counts)
  cols = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
  picked = order[np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])]
  scores, gains, mask = (np.zeros((len(counts), width)), np.zeros((len(counts), width)),
                         np.zeros((len(counts), width), bool))
  scores[rows, cols], gains[rows, cols], mask[rows, cols] = predictions[picked], ratings[picked], True
  return ndcg_at_k(scores, gains, k=k, mask=mask)
