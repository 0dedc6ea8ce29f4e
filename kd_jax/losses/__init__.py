"""Pure distillation losses: arrays in, scalar out.

Each function's docstring gives its formula, its paper and its reduction. These names are public and
stable; users compose them freely in their own code.
"""

from kd_jax.losses.features import (activation_boundary, activation_mismatch, attention_transfer,
                                    correlation_congruence, factor_transfer, fitnet, fsp, nst, pkt,
                                    similarity_preserving)
from kd_jax.losses.logits import (cross_entropy, dist, dist_relations, dkd, dkd_parts, energy_kd, energy_score,
                                  energy_temperatures, energy_thresholds, ensemble_kd, kd, dgkd, teacher_keep_mask,
                                  kl_divergence_per_example, logit_standardized_kd,
                                  pearson_correlation, standardize_logits)
from kd_jax.losses.logits import nkd, ttm, wttm
from kd_jax.losses.logits import (ctkd_lambda, energy_dkd, gradient_reversal, kd_per_sample_temperature, mlkd,
                                  mlkd_batch_loss, mlkd_class_loss, mlkd_parts)
from kd_jax.losses.contrastive import (crd, crd_available_negatives, crd_memory_init, crd_memory_update,
                                       crd_nce_loss, crd_normalizer, crd_sample_indices, crd_scores,
                                       crd_softmax_loss)
from kd_jax.losses.features import review_kd
from kd_jax.losses.regression import ensemble_confidence, pseudo_label_loss
from kd_jax.losses.recommender import (distillation_experts, entity_topology, expert_selection, group_topology,
                                       interaction_log_loss, pointwise_distillation, rank_discrepancy_logits,
                                       rank_discrepancy_probability, rank_discrepancy_weight, ranking_distillation,
                                       relaxed_ranking, topology_distillation)
from kd_jax.losses.relations import area_rkd, rkd_angle, rkd_distance, vid
from kd_jax.losses.segmentation import cwd, pixel_kd
from kd_jax.losses.super_resolution import feature_affinity, fakd, lsfd, lsfd_attention, output_l1
from kd_jax.losses.similarity import (cskd, cskd_cswt, cswt_temperatures, r2kd, r2kd_rank_loss,
                                      r2kd_teacher_logits, r2kd_value_loss)

__all__ = ["activation_boundary", "activation_mismatch", "factor_transfer", "area_rkd", "attention_transfer", "correlation_congruence", "cross_entropy", "cskd", "cskd_cswt",
           "cswt_temperatures", "dist", "dist_relations", "dkd", "dkd_parts", "energy_kd", "energy_score",
           "energy_temperatures", "energy_thresholds", "ensemble_kd", "dgkd", "teacher_keep_mask", "fitnet", "fsp", "kd",
           "kl_divergence_per_example", "logit_standardized_kd", "nst", "pearson_correlation", "pkt", "r2kd",
           "r2kd_rank_loss", "r2kd_teacher_logits", "r2kd_value_loss", "review_kd", "rkd_angle", "rkd_distance",
           "similarity_preserving", "standardize_logits", "vid",
           "crd", "crd_available_negatives", "crd_memory_init", "crd_memory_update", "crd_nce_loss",
           "crd_normalizer", "crd_sample_indices", "crd_scores", "crd_softmax_loss",
           "fakd", "feature_affinity", "lsfd", "lsfd_attention", "output_l1",
           "nkd", "ttm", "wttm",
           "ensemble_confidence", "pseudo_label_loss"]
__all__ += ["distillation_experts", "expert_selection", "interaction_log_loss", "pointwise_distillation",
            "rank_discrepancy_probability", "ranking_distillation", "relaxed_ranking", "topology_distillation",
            "entity_topology", "group_topology", "rank_discrepancy_logits", "rank_discrepancy_weight"]
__all__ += ["cwd", "pixel_kd"]
__all__ += ["ctkd_lambda", "energy_dkd", "gradient_reversal", "kd_per_sample_temperature", "mlkd", "mlkd_batch_loss",
            "mlkd_class_loss", "mlkd_parts"]
