"""Rating models for explicit-feedback recommendation: biased matrix factorisation and NeuMF.

`MatrixFactorization` predicts `r̂(u, i) = μ + b_u + b_i + p_u · q_i` (Koren, Bell & Volinsky, "Matrix
Factorization Techniques for Recommender Systems", IEEE Computer 2009), the base model of the recommender
distillation papers (Tang & Wang, "Ranking Distillation", KDD 2018, and its successors use it as student
and teacher at different embedding sizes). `NeuMF` is He et al.'s neural matrix factorisation ("Neural
Collaborative Filtering", WWW 2017, arXiv:1708.05031): a GMF tower (the element-wise product of user and item
embeddings) and an MLP tower (ReLU layers on the concatenated user and item embeddings of its own), their
outputs concatenated and mapped to the prediction by one linear layer. The paper's output is a sigmoid for
implicit feedback; here the linear output is the predicted rating [assume].

Every rating model returns the same `ModelOutput` layout, which the recommender distillers read:
`prediction` the rating [B]; `stages = (user representation [B, d], item representation [B, d])`, the rows of
the embedding tables for the batch's users and items (NeuMF: its GMF and MLP embeddings concatenated), which
DE and TD align; `embedding` the vector the output layer reads (MF: p_u ⊙ q_i; NeuMF: the GMF product and the
last MLP layer concatenated).

| name        | layout                                                             |
|-------------|--------------------------------------------------------------------|
| mf          | dim 16 (any `dim`)                                                 |
| mf_large    | dim 100: the teacher size of the DE-RRD/TD papers' MF (200) halved  |
| mf_small    | dim 10: one tenth of the teacher, the papers' student ratio         |
| neumf_large | GMF 32, MLP embeddings 32 + 32 → 64 → 32 → 16                       |
| neumf_small | GMF 8, MLP embeddings 8 + 8 → 16 → 8                                |

The named sizes are our choice [assume] (DE-RRD's `main_DE.py` and TD's guide train a dim-200 teacher and
students of 0.1–0.5 of it).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
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


def mf_large(num_users: int, num_items: int, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
             kernels: Kernels = DEFAULT_KERNELS) -> MatrixFactorization:
  """Matrix factorisation with 100 factors: the recommender studies' teacher."""
  return mf(num_users, num_items, dim=100, dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def mf_small(num_users: int, num_items: int, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
             kernels: Kernels = DEFAULT_KERNELS) -> MatrixFactorization:
  """Matrix factorisation with 10 factors: the recommender studies' student."""
  return mf(num_users, num_items, dim=10, dtype=dtype, param_dtype=param_dtype, kernels=kernels)


class NeuMF(nn.Module):
  """NeuMF (He et al., WWW 2017) predicting a rating from `{'user': [B] int, 'item': [B] int}`.

  `r̂ = w · [p^G_u ⊙ q^G_i, MLP([p^M_u, q^M_i])] + b`, the MLP a stack of Dense-ReLU layers of widths
  `mlp_layers` on the concatenated MLP embeddings (each `mlp_layers[0] // 2` wide, as in the reference code
  `hexiangnan/neural_collaborative_filtering`, where the first layer's width is the two embeddings'). Embeddings
  start at N(0, init_std²) (the reference's 0.01); the output's bias starts at `mean_rating`. Outputs: see the
  module docstring.
  """

  num_users: int
  num_items: int
  gmf_dim: int = 8
  mlp_layers: Sequence[int] = (16, 8)
  mean_rating: float = 0.0
  init_std: float = 0.01
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Mapping[str, jax.Array], train: bool = False) -> ModelOutput:
    del train  # no BatchNorm or dropout
    init = nn.initializers.normal(self.init_std)
    embed = lambda n, width, name: nn.Embed(n, width, embedding_init=init, dtype=self.dtype,
                                            param_dtype=self.param_dtype, name=name)
    mlp_dim = self.mlp_layers[0] // 2
    p_g = embed(self.num_users, self.gmf_dim, "user_gmf")(x["user"])
    q_g = embed(self.num_items, self.gmf_dim, "item_gmf")(x["item"])
    p_m = embed(self.num_users, mlp_dim, "user_mlp")(x["user"])
    q_m = embed(self.num_items, mlp_dim, "item_mlp")(x["item"])
    h = jnp.concatenate([p_m, q_m], axis=-1)
    for i, width in enumerate(self.mlp_layers[1:]):
      h = nn.relu(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name=f"mlp_{i}")(h))
    features = jnp.concatenate([p_g * q_g, h], axis=-1)
    rating = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype, name="output",
                      bias_init=nn.initializers.constant(self.mean_rating))(features)[:, 0]
    user, item = jnp.concatenate([p_g, p_m], axis=-1), jnp.concatenate([q_g, q_m], axis=-1)
    return ModelOutput(prediction=rating, stages=(user, item), preact_stages=(user, item), embedding=features)


def neumf(num_users: int, num_items: int, gmf_dim: int = 8, mlp_layers: Sequence[int] = (16, 8),
          mean_rating: float = 0.0, init_std: float = 0.01, dtype: Any = jnp.float32,
          param_dtype: Any = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> NeuMF:
  del kernels  # no convolutions
  mlp_layers = tuple(int(w) for w in mlp_layers)
  if gmf_dim < 1 or not mlp_layers or any(w < 1 for w in mlp_layers) or mlp_layers[0] < 2:
    raise KDJaxError(f"neumf: gmf_dim must be >= 1 and mlp_layers a non-empty tuple of positive widths, the first "
                     f">= 2 (it holds the user and item MLP embeddings); got gmf_dim={gmf_dim}, "
                     f"mlp_layers={mlp_layers}.")
  return NeuMF(num_users, num_items, gmf_dim, mlp_layers, mean_rating, init_std, dtype, param_dtype)


def neumf_large(num_users: int, num_items: int, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                kernels: Kernels = DEFAULT_KERNELS) -> NeuMF:
  """NeuMF with GMF 32 and MLP 64 → 32 → 16: a recommender teacher."""
  return neumf(num_users, num_items, 32, (64, 32, 16), dtype=dtype, param_dtype=param_dtype, kernels=kernels)


def neumf_small(num_users: int, num_items: int, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                kernels: Kernels = DEFAULT_KERNELS) -> NeuMF:
  """NeuMF with GMF 8 and MLP 16 → 8: a recommender student."""
  return neumf(num_users, num_items, 8, (16, 8), dtype=dtype, param_dtype=param_dtype, kernels=kernels)
