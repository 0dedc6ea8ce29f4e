"""Rating models for explicit-feedback recommendation: biased matrix factorisation.

`MatrixFactorization` predicts `r̂(u, i) = μ + b_u + b_i + p_u · q_i` (Koren, Bell & Volinsky, "Matrix
Factorization Techniques for Recommender Systems", IEEE Computer 2009), the base model of the recommender
distillation papers (Tang & Wang, "Ranking Distillation", KDD 2018, and its successors use it as student
and teacher at different embedding sizes).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype


class MatrixFactorization(nn.Module):
  """Biased matrix factorisation on `{'user': [B] int, 'item': [B] int}`.

  Outputs: `prediction` the rating [B]; `stages` the user and item factors ([B, dim] each, the features a
  distiller may align); `embedding` their element-wise product [B, dim] (the interaction the dot product
  sums). Factors start at N(0, init_std²) and biases at 0; `mean_rating` is μ's initial value (learned).

  Attributes:
    num_users, num_items: id ranges.
    dim: factor width.
    mean_rating: initial global bias μ.
    init_std: standard deviation of the initial factors.
  """

  num_users: int
  num_items: int
  dim: int = 16
  mean_rating: float = 0.0
  init_std: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Mapping[str, jax.Array], train: bool = False) -> ModelOutput:
    del train  # no BatchNorm or dropout; kept for the common signature.
    factors = nn.initializers.normal(self.init_std)
    embed = lambda n, width, init, name: nn.Embed(n, width, embedding_init=init, dtype=self.dtype,
                                                 param_dtype=self.param_dtype, name=name)
    p = embed(self.num_users, self.dim, factors, "user_factors")(x["user"])
    q = embed(self.num_items, self.dim, factors, "item_factors")(x["item"])
    b_u = embed(self.num_users, 1, nn.initializers.zeros, "user_bias")(x["user"])[:, 0]
    b_i = embed(self.num_items, 1, nn.initializers.zeros, "item_bias")(x["item"])[:, 0]
    mu = self.param("global_bias", nn.initializers.constant(self.mean_rating), (), self.param_dtype)
    interaction = p * q
    rating = mu + b_u + b_i + jnp.sum(interaction, axis=-1)
    return ModelOutput(prediction=rating, stages=(p, q), preact_stages=(p, q), embedding=interaction)


def mf(num_users: int, num_items: int, dim: int = 16, mean_rating: float = 0.0, init_std: float = 0.1,
       dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
       kernels: Kernels = DEFAULT_KERNELS) -> MatrixFactorization:
  del kernels  # taken like every model's; matrix factorisation has no convolutions or pools
  return MatrixFactorization(num_users, num_items, dim, mean_rating, init_std, dtype, param_dtype)
