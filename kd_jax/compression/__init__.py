"""Making a student small, to combine with any distiller: pruning, quantisation-aware training, cheap convs.

Park, Yoo, Kwak, "On the Orthogonality of Knowledge Distillation with Other Techniques: From an Ensemble
Perspective", arXiv:2009.04120, argue that KD's gain adds to theirs. Everything here is a pure function of
parameter pytrees (`pruning`) or of a Flax model's apply (`quantize`); the cheap convolutions are model
options (`kd_jax.models.resnet_cifar.block_conv`, the `conv` argument of the CIFAR ResNets and WRNs).
"""

from kd_jax.compression.pruning import (apply_masks, filter_masks, gradual_masks, is_update_step, keep_pruned,
                                        magnitude_masks, masked_gradients, masked_update, polynomial_sparsity,
                                        prune_by_magnitude, prune_filters, prunable_paths, sparsity,
                                        sparsity_report)
from kd_jax.compression.quantize import (QuantConfig, QuantState, dequantize_weights, export_int_weights,
                                         fake_quant, init_quant_state, lsq_init_scale, lsq_quant,
                                         minmax_activation_qparams, quant_range, quantize_params, quantized_apply,
                                         quantized_model_bytes, symmetric_weight_qparams)

__all__ = [
    "apply_masks", "filter_masks", "gradual_masks", "is_update_step", "keep_pruned", "magnitude_masks",
    "masked_gradients", "masked_update", "polynomial_sparsity", "prune_by_magnitude", "prune_filters",
    "prunable_paths", "sparsity", "sparsity_report",
    "QuantConfig", "QuantState", "dequantize_weights", "export_int_weights", "fake_quant", "init_quant_state",
    "lsq_init_scale", "lsq_quant", "minmax_activation_qparams", "quant_range", "quantize_params",
    "quantized_apply", "quantized_model_bytes", "symmetric_weight_qparams",
]
