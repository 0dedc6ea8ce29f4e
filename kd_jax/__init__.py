"""kd_jax: knowledge distillation in JAX/Flax.

`kd_jax.losses` holds the pure loss functions, `kd_jax.distillers` binds them to model outputs,
`kd_jax.models` the Flax model zoo, `kd_jax.data` the input pipelines, `kd_jax.train` the sharded
train step, loop and checkpoints.
"""

__version__ = "0.1.0"
