"""Regression: predict real-valued targets (vectors [B, D], or dense maps [B, H, W, C] such as depth).

Batches (`kd_jax.data.regression`): `{'input': [B, ...], 'target': [B, D] or [B, H, W, C] in original units,
'labeled': [B] (1 = the target may be used), 'index'}`. Models are applied to 'input' and predict the
STANDARDISED target `z = (y − mean) / std`, with the per-channel mean and std of the labeled training targets
(`dataset.info['target_mean']`, `['target_std']`, set on the task by `configured`); standardised targets keep
a model's output layer and every loss at the same scale whatever the data's units.

Supervised loss (the `supervised` term): over the labeled examples of the batch only,
  L = Σ_b ℓ_b · mean_e |ẑ_be − z_be|^p / max(Σ_b ℓ_b, 1),
with p = 2 (`'l2'`, mean squared error, the default) or p = 1 (`'l1'`), e running over the example's target
elements and ℓ the 'labeled' flag (`config.data.regression_loss`). Unlabeled examples contribute nothing: a
batch without labeled examples has loss 0. Every pixel of a dense map counts in the loss, t ≤ 0 included
[assume]: mask invalid pixels in the data if your maps have them.

Evaluation, in ORIGINAL units (the prediction mapped back, `ŷ = ẑ · std + mean`), over all target elements of
the split: RMSE (the headline, lower is better) and MAE; for dense maps also the depth-estimation metrics
over the elements with t > 0 (Eigen, Puhrsch, Fergus, "Depth Map Prediction from a Single Image using a
Multi-Scale Deep Network", NIPS 2014, arXiv:1406.2283): AbsRel = mean |ŷ − t| / t and
δ<1.25 = mean[max(ŷ / t, t / ŷ) < 1.25] (a non-positive prediction counts as a miss).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp

from kd_jax.errors import KDJaxError, one_of
from kd_jax.tasks.base import Batch, Task

NORMS = ("l2", "l1")


@dataclasses.dataclass(frozen=True)
class Regression(Task):
  """See the module docstring.

  Attributes:
    norm: the supervised loss, 'l2' (mean squared error) or 'l1' (mean absolute error).
    target_mean, target_std: per target channel (the last axis), the standardisation of the targets; empty
      means none (mean 0, std 1). Set from the dataset by `configured`.
  """

  name = "regression"
  headline = "rmse"
  higher_is_better = False
  fields = ("target", "labeled")

  norm: str = "l2"
  target_mean: Tuple[float, ...] = ()
  target_std: Tuple[float, ...] = ()

  def configured(self, data_config: Any, dataset: Any) -> "Regression":
    norm = data_config.get("regression_loss", "l2")
    if norm not in NORMS:
      raise KDJaxError(f"config.data.regression_loss must be {one_of(NORMS)}, got {norm!r}.")
    if data_config.get("crop_pad", 0) or data_config.get("flip", False):
      raise KDJaxError("config.data.crop_pad and config.data.flip augment images; the regression task does not "
                       "augment its inputs: set config.data.crop_pad=0 and config.data.flip=False.")
    info = dataset.info
    return dataclasses.replace(self, norm=norm, target_mean=tuple(float(v) for v in info["target_mean"]),
                               target_std=tuple(float(v) for v in info["target_std"]))

  def model_kwargs(self, dataset: Any) -> Dict[str, Any]:
    """`num_outputs`: a vector target's length D, or a dense map's channel count C."""
    return {"num_outputs": int(dataset.info["target_shape"][-1])}

  def inputs(self, batch: Batch) -> Any:
    return batch["input"]

  # -- units --------------------------------------------------------------------------------------------

  def _moments(self, channels: int) -> Tuple[jax.Array, jax.Array]:
    if not self.target_mean:
      return jnp.zeros((channels,), jnp.float32), jnp.ones((channels,), jnp.float32)
    return jnp.asarray(self.target_mean, jnp.float32), jnp.asarray(self.target_std, jnp.float32)

  def standardize(self, target: jax.Array) -> jax.Array:
    """Targets in original units → the standardised units models predict."""
    mean, std = self._moments(target.shape[-1])
    return (target.astype(jnp.float32) - mean) / std

  def original_units(self, prediction: jax.Array) -> jax.Array:
    """A prediction in standardised units → original units."""
    mean, std = self._moments(prediction.shape[-1])
    return prediction.astype(jnp.float32) * std + mean

  # -- training -----------------------------------------------------------------------------------------

  def loss(self, prediction: jax.Array, batch: Batch) -> jax.Array:
    error = prediction.astype(jnp.float32) - self.standardize(batch["target"])
    per_example = _per_example(jnp.square(error) if self.norm == "l2" else jnp.abs(error))
    labeled = batch["labeled"].astype(jnp.float32)
    return jnp.sum(labeled * per_example) / jnp.maximum(jnp.sum(labeled), 1.0)

  def train_metrics(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    """RMSE in original units over the batch's labeled examples."""
    error = self.original_units(prediction) - batch["target"].astype(jnp.float32)
    labeled = batch["labeled"].astype(jnp.float32)
    mse = jnp.sum(labeled * _per_example(jnp.square(error))) / jnp.maximum(jnp.sum(labeled), 1.0)
    return {"rmse": jnp.sqrt(mse)}

  # -- evaluation ---------------------------------------------------------------------------------------

  def eval_sums(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    target = batch["target"].astype(jnp.float32)
    pred = self.original_units(prediction)
    real = jnp.reshape(batch["mask"] > 0, (-1,) + (1,) * (target.ndim - 1))  # padding rows count nowhere
    real = jnp.broadcast_to(real, target.shape)
    error = jnp.where(real, pred - target, 0.0)
    sums = {"squared_error": jnp.sum(error**2), "absolute_error": jnp.sum(jnp.abs(error)),
            "count": jnp.sum(real.astype(jnp.float32))}
    if target.ndim == 4:
      valid = real & (target > 0)
      safe_t = jnp.where(valid, target, 1.0)
      ratio = jnp.maximum(pred / safe_t, safe_t / jnp.where(pred > 0, pred, 1.0))
      hit = valid & (pred > 0) & (ratio < 1.25)
      sums.update(abs_rel=jnp.sum(jnp.where(valid, jnp.abs(pred - target) / safe_t, 0.0)),
                  delta1=jnp.sum(hit.astype(jnp.float32)), valid=jnp.sum(valid.astype(jnp.float32)))
    return sums

  def metrics(self, sums: Mapping[str, Any]) -> Dict[str, float]:
    count = float(sums["count"])
    out = {"rmse": (float(sums["squared_error"]) / count) ** 0.5, "mae": float(sums["absolute_error"]) / count}
    if "valid" in sums:
      valid = float(sums["valid"])
      out.update(abs_rel=float(sums["abs_rel"]) / valid if valid else float("nan"),
                 delta1=float(sums["delta1"]) / valid if valid else float("nan"))
    return out

  def export_info(self, dataset: Any) -> Dict[str, Any]:
    """The target standardisation a model of this dataset predicts in: a teacher's predictions are pseudo-labels
    for a student only if both were trained with the same one (checked by `check_teacher`)."""
    return {"target_mean": [float(v) for v in dataset.info["target_mean"]],
            "target_std": [float(v) for v in dataset.info["target_std"]]}

  def check_teacher(self, info: Mapping[str, Any], dataset: Any, workdir: str) -> None:
    if "target_mean" not in info:
      return
    mine = self.export_info(dataset)
    same = all(len(info[k]) == len(mine[k]) and all(abs(a - b) <= 1e-6 * max(1.0, abs(b))
                                                     for a, b in zip(info[k], mine[k])) for k in mine)
    if not same:
      raise KDJaxError(f"The teacher in {workdir!r} predicts targets standardised with other statistics (mean "
                       f"{_short(info['target_mean'])}, std {_short(info['target_std'])}) than this run's labeled "
                       f"training targets (mean {_short(mine['target_mean'])}, std {_short(mine['target_std'])}): "
                       "it was trained on another split or labeled subset. Train the teacher with this run's "
                       "config.data (name, labeled_fraction, val_fraction) and split seed (config.data.split_seed, "
                       "or config.seed when it is -1).")


def _per_example(values: jax.Array) -> jax.Array:
  """The mean over every axis but the first: [B, ...] → [B]."""
  return jnp.mean(values.reshape(values.shape[0], -1), axis=1)


def _short(values) -> str:
  shown = ", ".join(f"{v:.4g}" for v in list(values)[:3])
  return f"[{shown}{', ...' if len(values) > 3 else ''}]"
