"""Pure distillation losses: arrays in, scalar out.

Each function's docstring gives its formula, its paper and its reduction. These names are public and
stable; users compose them freely in their own code.
"""

from kd_jax.losses.features import fitnet
from kd_jax.losses.logits import cross_entropy, kd, kl_divergence_per_example

__all__ = ["cross_entropy", "fitnet", "kd", "kl_divergence_per_example"]
