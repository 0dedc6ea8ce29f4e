"""kd_jax: knowledge distillation in JAX/Flax.

`kd_jax.losses` holds the pure loss functions, `kd_jax.distillers` binds them to model outputs,
`kd_jax.models` the Flax model zoo, `kd_jax.data` the input pipelines, `kd_jax.train` the sharded
train step, loop and checkpoints. `kd_jax.load_model(workdir)` rebuilds a finished run's model and variables.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
  """`kd_jax.load_model` (`kd_jax.train.checkpoint.load_model`), imported on first use so that importing any
  kd_jax module does not pull in the training stack."""
  if name == "load_model":
    from kd_jax.train.checkpoint import load_model
    return load_model
  raise AttributeError(f"module 'kd_jax' has no attribute {name!r}")
