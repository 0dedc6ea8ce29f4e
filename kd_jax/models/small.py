"""Small models for the embedded 8x8 digits data and for tests: plain MLPs and a VGG-style CNN.

Not from any paper; they follow the same output contract as the CIFAR zoo so every distiller can be run
on them in seconds. Sizes (10 classes, 8x8x1 digits input):

| name       | layout                                      | params  |
|------------|---------------------------------------------|---------|
| mlp_tiny   | 64-32-32-10                                 | ~3.5K   |
| mlp_small  | 64-256-128-10                               | ~51K    |
| cnn_tiny   | widths (8, 16, 32), one conv per stage      | ~6.3K   |
| cnn_small  | widths (16, 32, 64), one conv per stage     | ~24K    |
| cnn_large  | widths (32, 64, 128), two convs per stage   | ~288K   |

All of them also accept 32x32x3 inputs (the CNN pools globally; the MLP's first layer takes whatever the
flattened input size is).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, batch_norm, classifier, conv3x3, global_avg_pool

# He-normal (fan_in) for the ReLU hidden layers of the MLP.
_hidden_init = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class MLP(nn.Module):
  """Flatten, then one stage per hidden size (Dense -> ReLU), then a linear head.

  Outputs: `stages[i]` is hidden layer i after its ReLU, `preact_stages[i]` the Dense output before it
  (both [B, D_i]); `embedding` is the last hidden layer (the classifier's input). With no hidden layers
  the model is a linear classifier, the stage tuples are empty and the embedding is the flattened input.

  Attributes:
    num_classes: classifier outputs.
    hidden_sizes: widths of the hidden layers, input side first.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """

  num_classes: int
  hidden_sizes: Tuple[int, ...] = (32, 32)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    del train  # no BatchNorm or dropout; kept for the common signature.
    x = x.reshape((x.shape[0], -1))
    stages, preacts = [], []
    for i, width in enumerate(self.hidden_sizes):
      preact = nn.Dense(width, kernel_init=_hidden_init, dtype=self.dtype, param_dtype=self.param_dtype,
                        name=f"hidden{i}")(x)
      x = nn.relu(preact)
      stages.append(x)
      preacts.append(preact)
    logits = classifier(self.num_classes, self.dtype, self.param_dtype)(x)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts), embedding=x)


class CNN(nn.Module):
  """A VGG-style CNN: stages of `convs_per_stage` x (conv3x3 - BN - ReLU), global average pool, Dense.

  The first conv of every stage after the first has stride 2, so 8x8 inputs give stages of 8x8, 4x4, 2x2
  and 32x32 inputs give 32x32, 16x16, 8x8. `stages[i]` is the output of the stage's last ReLU,
  `preact_stages[i]` the BN output just before it, `embedding` the pooled last stage.
  A [B, H, W] input is treated as one channel.

  Attributes:
    num_classes: classifier outputs.
    widths: channels of each stage.
    convs_per_stage: conv-BN-ReLU layers per stage.
    dtype: computation dtype.
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
  """

  num_classes: int
  widths: Tuple[int, ...] = (16, 32, 64)
  convs_per_stage: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4:
      raise KDJaxError(f"CNN expects NHWC images [B, H, W, C] (or [B, H, W]); got shape {x.shape}. "
                       "Use an mlp model for flat feature vectors.")
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    stages, preacts = [], []
    for s, width in enumerate(self.widths):
      for c in range(self.convs_per_stage):
        stride = 2 if (s > 0 and c == 0) else 1
        x = conv3x3(width, stride, dt, pdt, f"stage{s + 1}_conv{c}", kernels=k)(x)
        preact = batch_norm(train, dt, pdt, f"stage{s + 1}_bn{c}")(x)
        x = nn.relu(preact)
      stages.append(x)
      preacts.append(preact)
    embedding = global_avg_pool(x, train, k)
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding)


def _positive_ints(name: str, values: Sequence[int], allow_empty: bool) -> Tuple[int, ...]:
  values = tuple(int(v) for v in values)
  if (not values and not allow_empty) or any(v < 1 for v in values):
    raise KDJaxError(f"{name} must be a {'' if allow_empty else 'non-empty '}sequence of positive integers; "
                     f"got {name}={values}.")
  return values


def mlp(num_classes: int, *, hidden_sizes: Sequence[int], dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> MLP:
  """An MLP with the given hidden sizes (each hidden layer is a stage)."""
  del kernels  # taken like every model's; an MLP has no convolutions or pools
  return MLP(num_classes=num_classes, hidden_sizes=_positive_ints("hidden_sizes", hidden_sizes, True),
             dtype=dtype, param_dtype=param_dtype)


def cnn(num_classes: int, *, widths: Sequence[int], convs_per_stage: int = 1, dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> CNN:
  """A CNN with the given stage widths and conv layers per stage."""
  if convs_per_stage < 1:
    raise KDJaxError(f"convs_per_stage must be a positive integer; got {convs_per_stage}.")
  return CNN(num_classes=num_classes, widths=_positive_ints("widths", widths, False),
             convs_per_stage=convs_per_stage, dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def mlp_tiny(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
             kernels: Kernels = DEFAULT_KERNELS) -> MLP:
  """MLP with hidden sizes (32, 32): ~3.5K params on 8x8 digits."""
  return mlp(num_classes, hidden_sizes=(32, 32), dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def mlp_small(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
              kernels: Kernels = DEFAULT_KERNELS) -> MLP:
  """MLP with hidden sizes (256, 128): ~51K params on 8x8 digits."""
  return mlp(num_classes, hidden_sizes=(256, 128), dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def cnn_tiny(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
             kernels: Kernels = DEFAULT_KERNELS) -> CNN:
  """CNN with widths (8, 16, 32), one conv per stage: ~6.3K params on 8x8x1 digits (test-sized)."""
  return cnn(num_classes, widths=(8, 16, 32), convs_per_stage=1, dtype=dtype, param_dtype=param_dtype,
             kernels=kernels)


def cnn_small(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
              kernels: Kernels = DEFAULT_KERNELS) -> CNN:
  """CNN with widths (16, 32, 64), one conv per stage: ~24K params on 8x8x1 digits (a student)."""
  return cnn(num_classes, widths=(16, 32, 64), convs_per_stage=1, dtype=dtype, param_dtype=param_dtype,
             kernels=kernels)


def cnn_large(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
              kernels: Kernels = DEFAULT_KERNELS) -> CNN:
  """CNN with widths (32, 64, 128), two convs per stage: ~288K params on 8x8x1 digits (a teacher)."""
  return cnn(num_classes, widths=(32, 64, 128), convs_per_stage=2, dtype=dtype, param_dtype=param_dtype,
             kernels=kernels)
