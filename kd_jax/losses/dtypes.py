"""The dtype the losses compute in: float32 at least, and float64 where the inputs are float64.

Low-precision inputs (bfloat16 or float16 activations under mixed precision) are promoted to float32, so
that the small probabilities and differences that carry the distillation signal are not rounded away.
Float64 inputs (only possible with `jax_enable_x64`) stay float64 instead of being cut to float32: that is
what lets a float64 reference computation or a finite-difference gradient check
(`tests/test_loss_gradients.py`) run a loss at full precision. With x64 off (the default, and every
training run) the result is float32 either way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def at_least_float32(x) -> jax.Array:
  """`x` as a JAX array of dtype `promote_types(x.dtype, float32)`: bf16/f16/int → float32, f64 stays f64."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))
