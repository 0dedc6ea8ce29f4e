"""A student trained compressed: any Flax model with pruning masks and/or fake quantisation, applied like one.

`CompressedModel(model, pruning, quant)` has the two methods the trainer calls on a network, `init` and
`apply`, with Flax's signatures, so the train step, evaluation, the teacher-output probes, checkpoints and
exports use it as they use the model itself. Its extra state lives in the model's own collections, so it is
checkpointed, sharded and restored with them:
  - `variables['batch_stats']['compression']`: `masks` (a bool tree shaped like the params, `pruning`) and
    `observers` (the activation quantisers' moving min/max, `quantize.QuantState.observers`);
  - `variables['params']['quantizer']`: LSQ's learned step sizes (`quant.weight_range`/`activation_range`
    'lsq'), trained with the weights.
`apply` computes with the masked weights (`where(mask, w, 0)`, so a pruned weight gets no gradient) and, when
`quantize` is on, fake-quantised weights and layer inputs (`quantize.quantized_apply`). The train step
calls `after_update` after each optimizer update: it sets pruned weights back to exactly zero (momentum and
weight decay would otherwise move them) and, on the schedule's update steps, prunes further
(`Pruning.masks` at Zhu & Gupta's polynomial schedule, as `pruning.gradual_masks`; one-shot when
`num_updates` is 0). `compact_export` turns a filter-pruned student into the smaller network it computes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax

from kd_jax.compression import pruning as kd_pruning
from kd_jax.compression import quantize as kd_quant
from kd_jax.errors import KDJaxError

COMPRESSION = "compression"  # key of the compression state in batch_stats
QUANTIZER = "quantizer"      # key of LSQ's learned step sizes in params
STRUCTURES = ("unstructured", "filters")


@dataclasses.dataclass(frozen=True)
class Pruning:
  """Unstructured magnitude pruning of the student's kernels during training (`kd_jax.compression.pruning`).

  Attributes:
    sparsity: s_f, the fraction of prunable weights that are zero at the end.
    scope: 'layer' (every kernel loses that fraction) or 'global' (one magnitude threshold over all).
    exclude: regular expressions of '/'-joined kernel paths to keep dense (e.g. the stem and classifier).
    initial: s_i, the sparsity of the first update.
    begin_step: t_0, the global step of the first mask update.
    num_updates: n, the number of Δt intervals after it (0: one-shot pruning to s_f at t_0).
    update_every: Δt in steps.
    structure: 'unstructured' (magnitude masks over every prunable kernel) or 'filters' (L1-norm filter
      pruning of each CIFAR ResNet block's first conv, `pruning.filter_masks`, at the same schedule; `scope`
      and `exclude` do not apply; `pruning.prune_filters` then removes them from the exported network).
  """

  sparsity: float
  scope: str = "layer"
  exclude: Tuple[str, ...] = ()
  initial: float = 0.0
  begin_step: int = 0
  num_updates: int = 0
  update_every: int = 1
  structure: str = "unstructured"

  def __post_init__(self):
    kd_pruning.polynomial_sparsity(0, initial=self.initial, final=self.sparsity, begin_step=self.begin_step,
                                   num_updates=self.num_updates, update_every=self.update_every)  # validates
    if self.scope not in ("layer", "global"):
      raise KDJaxError(f"pruning scope must be 'layer' or 'global', got {self.scope!r}.")
    if self.structure not in STRUCTURES:
      raise KDJaxError(f"pruning structure must be 'unstructured' or 'filters', got {self.structure!r}.")

  def masks(self, params: Any, sparsity: Any, previous: Optional[Any] = None) -> Any:
    """The masks at `sparsity` (possibly traced); `previous` keeps pruned weights pruned (unstructured;
    pruned filters, exactly zero, have the smallest L1 norm and so stay pruned)."""
    if self.structure == "filters":
      return kd_pruning.filter_masks(params, sparsity)
    return kd_pruning.magnitude_masks(params, sparsity, scope=self.scope, exclude=self.exclude, previous=previous)


def _split(variables: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
  """`(the wrapped model's variables, LSQ step sizes, compression state)` of a CompressedModel's variables."""
  params = dict(variables["params"])
  qparams = params.pop(QUANTIZER, {"weights": {}, "activations": {}})
  stats = dict(variables.get("batch_stats", {}))
  state = dict(stats.pop(COMPRESSION, {}))
  inner = {**variables, "params": params, "batch_stats": stats}
  return inner, qparams, state


@dataclasses.dataclass(frozen=True)
class CompressedModel:
  """`model` trained with pruning masks (`pruning`) and/or fake quantisation (`quant`; active while
  `quantize` is True, so a run can switch it on in a later phase). See the module docstring."""

  model: nn.Module
  pruning: Optional[Pruning] = None
  quant: Optional[kd_quant.QuantConfig] = None
  quantize: bool = True

  @property
  def quantized(self) -> bool:
    return self.quant is not None and self.quantize

  def _qstate(self, inner: Dict[str, Any], inputs: Any, observers: Dict[str, Any]) -> kd_quant.QuantState:
    """The quantiser state: the layer layout (static: found by an abstract pass, which costs tracing only)
    with the stored observers."""
    layout, _ = jax.eval_shape(lambda v, x: kd_quant.init_quant_state(self.model, v, x, self.quant), inner, inputs)
    return kd_quant.QuantState(observers=observers, layers=layout.layers, first=layout.first, last=layout.last)

  def init(self, rngs: Any, inputs: Any, train: bool = False, **kwargs: Any) -> Dict[str, Any]:
    """The wrapped model's variables plus the compression state: no weight pruned yet (masks all True),
    observers and LSQ step sizes initialised from an eval-mode pass over `inputs` (`init_quant_state`)."""
    variables = dict(self.model.init(rngs, inputs, train=train, **kwargs))
    params, stats = dict(variables["params"]), dict(variables.get("batch_stats", {}))
    state = {}
    if self.pruning is not None:
      state["masks"] = self.pruning.masks(params, 0.0)
    if self.quant is not None:
      qstate, qparams = kd_quant.init_quant_state(self.model, variables, inputs, self.quant)
      state["observers"] = qstate.observers
      if qparams["weights"] or qparams["activations"]:
        params[QUANTIZER] = qparams
    stats[COMPRESSION] = state
    return {**variables, "params": params, "batch_stats": stats}

  def apply(self, variables: Dict[str, Any], inputs: Any, train: bool = False, mutable: Any = False,
            **kwargs: Any) -> Any:
    """As `flax.linen.Module.apply`: the output, and with `mutable` (['batch_stats']) also the updated
    collections, the compression state's observers included."""
    inner, qparams, state = _split(variables)
    if "masks" in state:
      inner["params"] = kd_pruning.apply_masks(inner["params"], state["masks"])
    if self.quantized:
      qstate = self._qstate(inner, inputs, state.get("observers", {}))
      out, qstate, stats = kd_quant.quantized_apply(self.model, inner, inputs, qstate, qparams, self.quant,
                                                    train=bool(train and mutable), **kwargs)
      if stats is None or not mutable:
        return out if not mutable else (out, {})
      return out, {"batch_stats": {**stats, COMPRESSION: {**state, "observers": qstate.observers}}}
    if not mutable:
      return self.model.apply(inner, inputs, train=train, **kwargs)
    out, updates = self.model.apply(inner, inputs, train=train, mutable=mutable, **kwargs)
    if "batch_stats" not in updates:
      return out, updates
    return out, {**updates, "batch_stats": {**updates["batch_stats"], COMPRESSION: state}}

  def after_update(self, params: Any, batch_stats: Any, step: Any) -> Tuple[Any, Any]:
    """`(params, batch_stats)` after the optimizer update of global step `step` (the update just applied):
    the masks for `step` (new ones on the schedule's update steps, as `gradual_masks`) and the params with
    every pruned weight exactly zero."""
    if self.pruning is None:
      return params, batch_stats
    params, stats = dict(params), dict(batch_stats)
    state = dict(stats[COMPRESSION])
    quantizer = params.pop(QUANTIZER, None)
    p = self.pruning
    schedule = dict(begin_step=p.begin_step, num_updates=p.num_updates, update_every=p.update_every)
    target = kd_pruning.polynomial_sparsity(step, initial=p.initial, final=p.sparsity, **schedule)
    masks = jax.lax.cond(kd_pruning.is_update_step(step, **schedule),
                         lambda: p.masks(params, target, previous=state["masks"]),
                         lambda: jax.tree.map(lambda m: jax.numpy.asarray(m, bool), state["masks"]))
    params = kd_pruning.apply_masks(params, masks)
    if quantizer is not None:
      params[QUANTIZER] = quantizer
    stats[COMPRESSION] = {**state, "masks": masks}
    return params, stats


def inner_variables(variables: Dict[str, Any]) -> Dict[str, Any]:
  """A CompressedModel's variables as the wrapped model takes them: pruned weights zeroed, the compression
  state and LSQ step sizes left out (full precision: quantisation is not applied)."""
  inner, _, state = _split(variables)
  if "masks" in state:
    inner["params"] = kd_pruning.apply_masks(inner["params"], state["masks"])
  return inner


def compressed_weights_report(model: CompressedModel, variables: Dict[str, Any],
                              sample: Any) -> Dict[str, Any]:
  """Parameter count, non-zero parameters and model size in bytes at the run's bit widths (float32 where
  not quantised) of a CompressedModel's variables, on the host."""
  inner = inner_variables(variables)
  report = kd_pruning.sparsity_report(inner["params"])
  if model.quantized:
    qstate = model._qstate(inner, sample, {})
    report["bytes"] = kd_quant.quantized_model_bytes(inner["params"], model.quant, qstate=qstate)
  else:
    report["bytes"] = 4 * report["total"]
  return report


def compression_from_settings(settings: Dict[str, Any], steps_per_epoch: int = 1
                              ) -> Tuple[Optional[Pruning], Optional[kd_quant.QuantConfig]]:
  """`(pruning, quant)` from `config.compression` (as a dict; see `kd_jax.config.base_config`), each None
  where it is off. Epochs become steps with `steps_per_epoch`; one-shot pruning when `prune_end_epoch` is
  not after `prune_begin_epoch`."""
  pruning = quant = None
  if settings.get("sparsity", 0.0):
    begin = int(settings["prune_begin_epoch"]) * steps_per_epoch
    every = int(settings["prune_every_steps"])
    span = max(int(settings["prune_end_epoch"]) - int(settings["prune_begin_epoch"]), 0) * steps_per_epoch
    pruning = Pruning(sparsity=float(settings["sparsity"]), scope=settings["prune_scope"],
                      exclude=tuple(settings["prune_exclude"]), initial=float(settings["initial_sparsity"]),
                      begin_step=begin, num_updates=span // every, update_every=every,
                      structure=settings.get("prune_structure", "unstructured"))
  if settings.get("weight_bits", 0):
    quant = kd_quant.QuantConfig(weight_bits=int(settings["weight_bits"]),
                                 activation_bits=int(settings["activation_bits"]),
                                 activation_range=settings["activation_range"],
                                 weight_range=settings["weight_range"],
                                 observer_momentum=float(settings["observer_momentum"]),
                                 first_last_bits=int(settings["first_last_bits"]) or None)
  return pruning, quant


def compact_export(model: CompressedModel, variables: Dict[str, Any], settings: Dict[str, Any]
                   ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """`(variables, model.json entries)` to export a compressed network: a filter-pruned one as the physically
  smaller ResNet (`pruning.remove_masked_filters`: `inner_widths` in the record; quantisation, if any, kept,
  pruning settings dropped since nothing is masked any more); anything else as it is, with its settings."""
  record = {"compression": {**settings, "quantized": model.quantized}}
  if model.pruning is None or model.pruning.structure != "filters":
    return variables, record
  inner, qparams, state = _split(variables)
  params = kd_pruning.apply_masks(inner["params"], state["masks"])
  widths, params, stats = kd_pruning.remove_masked_filters(params, inner["batch_stats"], state["masks"])
  record["inner_widths"] = list(widths)
  record["compression"]["sparsity"] = 0.0
  if model.quant is None:
    return {**inner, "params": params, "batch_stats": stats}, {"inner_widths": list(widths)}
  return ({**inner, "params": params, "batch_stats": {**stats, COMPRESSION: {"observers": state["observers"]}}},
          record)
