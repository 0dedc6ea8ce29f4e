"""Regression models (task 'regression'): MLP regressors for tabular data, GRU encoders for trajectories, and a
small fully convolutional network for dense maps.

They take `num_outputs` (the task's `model_kwargs`: a vector target's length, or a dense map's channel count)
instead of `num_classes`, so a classifier cannot be given regression data by mistake, and they predict the
standardised target (`kd_jax.tasks.regression`). Not from any paper; sizes are our choice [assume]:

| name                   | layout                                                  | params            |
|------------------------|---------------------------------------------------------|-------------------|
| regression_mlp_large   | hidden 256-256, ReLU                                    | 68.9K (diabetes)  |
| regression_mlp_small   | hidden 16, ReLU                                         | 193 (diabetes)    |
| gru_trajectory_large   | GRU(64) over the [T, 2] positions, Dense(24)            | 14.5K             |
| gru_trajectory_small   | GRU(16) over the [T, 2] positions, Dense(24)            | 1.3K              |
| fcn_regressor_large    | conv3x3-ReLU ×3 (32 channels), 1×1 head, full resolution | 19.4K (3 → 1 ch.) |
| fcn_regressor_small    | conv3x3-ReLU ×2 (16 channels), 1×1 head, full resolution | 2.8K (3 → 1 ch.)  |
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, classifier
from kd_jax.models.small import MLP


def _positive_ints(name: str, values: Sequence[int], allow_empty: bool) -> Tuple[int, ...]:
  values = tuple(int(v) for v in values)
  if (not values and not allow_empty) or any(v < 1 for v in values):
    raise KDJaxError(f"{name} must be {'' if allow_empty else 'a non-empty sequence of '}positive integers; got "
                     f"{name}={values}.")
  return values


def _num_outputs(num_outputs: int) -> int:
  if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
    raise KDJaxError(f"num_outputs must be a positive integer (the target's length); got {num_outputs!r}.")
  return num_outputs


def regression_mlp(num_outputs: int, *, hidden_sizes: Sequence[int], dtype: Dtype = jnp.float32,
                  param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> MLP:
  """An MLP (`kd_jax.models.MLP`: flatten, Dense-ReLU stages, linear head) with a `num_outputs`-wide head."""
  del kernels  # no convolutions
  return MLP(num_classes=_num_outputs(num_outputs), hidden_sizes=_positive_ints("hidden_sizes", hidden_sizes, True),
             dtype=dtype, param_dtype=param_dtype)


def regression_mlp_large(num_outputs: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                        kernels: Kernels = DEFAULT_KERNELS) -> MLP:
  """Hidden sizes (256, 256): the regression study's tabular teacher."""
  return regression_mlp(num_outputs, hidden_sizes=(256, 256), dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def regression_mlp_small(num_outputs: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                        kernels: Kernels = DEFAULT_KERNELS) -> MLP:
  """Hidden size (16,): the regression study's tabular student."""
  return regression_mlp(num_outputs, hidden_sizes=(16,), dtype=dtype, param_dtype=param_dtype, kernels=kernels)


class GRUTrajectory(nn.Module):
  """A GRU encoder over a sequence [B, T, F] (observed positions), then a linear head to `num_outputs`.

  `flax.linen.RNN(GRUCell(hidden))` reads the sequence in time order; its final hidden state h [B, hidden]
  is the single stage, its pre-activation and the embedding, and the head maps it to the flattened future
  [B, num_outputs]. The prediction is the whole future at once (no autoregressive decoder) [assume].
  """

  num_outputs: int
  hidden: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    del train  # no BatchNorm or dropout
    if x.ndim != 3:
      raise KDJaxError(f"{type(self).__name__} expects sequences [B, T, F]; got shape {x.shape}.")
    cell = nn.GRUCell(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="gru")
    h, _ = nn.RNN(cell, return_carry=True, name="rnn")(x.astype(self.dtype))
    prediction = classifier(self.num_outputs, self.dtype, self.param_dtype)(h)
    return ModelOutput(prediction=prediction, stages=(h,), preact_stages=(h,), embedding=h)


def gru_trajectory(num_outputs: int, *, hidden: int = 64, dtype: Dtype = jnp.float32,
                   param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> GRUTrajectory:
  """A GRU trajectory regressor with `hidden` units."""
  del kernels
  return GRUTrajectory(_num_outputs(num_outputs), _positive_ints("hidden", (hidden,), False)[0], dtype, param_dtype)


def gru_trajectory_large(num_outputs: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                         kernels: Kernels = DEFAULT_KERNELS) -> GRUTrajectory:
  """GRU(64): the trajectory teacher."""
  return gru_trajectory(num_outputs, hidden=64, dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def gru_trajectory_small(num_outputs: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                         kernels: Kernels = DEFAULT_KERNELS) -> GRUTrajectory:
  """GRU(16): the trajectory student."""
  return gru_trajectory(num_outputs, hidden=16, dtype=dtype, param_dtype=param_dtype, kernels=kernels)


class FCNRegressor(nn.Module):
  """Dense prediction at the input's resolution: conv3x3 (with bias) - ReLU per width, then a 1×1 conv to
  `num_outputs` channels ([B, H, W, C_in] → [B, H, W, num_outputs]). Stages are the ReLU outputs; the
  embedding is the last stage pooled over H and W."""

  num_outputs: int
  widths: Tuple[int, ...] = (16, 16)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    del train
    if x.ndim != 4:
      raise KDJaxError(f"FCNRegressor expects NHWC images [B, H, W, C]; got shape {x.shape}.")
    conv = lambda width, size, name: nn.Conv(width, (size, size), padding="SAME", dtype=self.dtype,
                                             param_dtype=self.param_dtype,
                                             conv_general_dilated=self.kernels.conv_general_dilated, name=name)
    stages, preacts = [], []
    for i, width in enumerate(self.widths):
      preact = conv(width, 3, f"conv{i}")(x)
      x = nn.relu(preact)
      stages.append(x)
      preacts.append(preact)
    prediction = conv(self.num_outputs, 1, "head")(x)
    return ModelOutput(prediction=prediction, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=jnp.mean(x, axis=(1, 2)))


def fcn_regressor(num_outputs: int, *, widths: Sequence[int], dtype: Dtype = jnp.float32,
                  param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> FCNRegressor:
  """A fully convolutional regressor with the given conv widths."""
  return FCNRegressor(_num_outputs(num_outputs), _positive_ints("widths", widths, False), dtype, param_dtype, kernels)


def fcn_regressor_small(num_outputs: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                        kernels: Kernels = DEFAULT_KERNELS) -> FCNRegressor:
  """Two 16-channel conv layers: a dense-map student."""
  return fcn_regressor(num_outputs, widths=(16, 16), dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def fcn_regressor_large(num_outputs: int, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                        kernels: Kernels = DEFAULT_KERNELS) -> FCNRegressor:
  """Three 32-channel conv layers: a dense-map teacher."""
  return fcn_regressor(num_outputs, widths=(32, 32, 32), dtype=dtype, param_dtype=param_dtype, kernels=kernels)
