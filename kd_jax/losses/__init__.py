"""Pure distillation losses: arrays in, scalar out.

Each function's docstring gives its formula, its paper and its reduction. These names are public and
stable; users compose them freely in their own code.
"""

from kd_jax.losses.features import fitnet
from kd_jax.losses.logits import (cross_entropy, dist, dist_relations, dkd, dkd_parts, energy_kd, energy_score,
                                  energy_temperatures, energy_thresholds, ensemble_kd, kd,
                                  kl_divergence_per_example, logit_standardized_kd,
                                  pearson_correlation, standardize_logits)
from kd_jax.losses.similarity import (cskd, cskd_cswt, cswt_temperatures, r2kd, r2kd_rank_loss,
                                      r2kd_teacher_logits, r2kd_value_loss)

__all__ = ["cross_entropy", "cskd", "cskd_cswt", "cswt_temperatures", "dist", "dist_relations", "dkd", "dkd_parts",
           "energy_kd", "energy_score", "energy_temperatures", "energy_thresholds", "ensemble_kd", "fitnet", "kd",
           "kl_divergence_per_example", "logit_standardized_kd", "pearson_correlation", "r2kd", "r2kd_rank_loss",
           "r2kd_teacher_logits", "r2kd_value_loss", "standardize_logits"]
