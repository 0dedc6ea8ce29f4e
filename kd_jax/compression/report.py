"""What a trained (compressed) student costs: parameters, non-zero parameters, bytes, FLOPs and eval time.

The report of the orthogonality study (Park, Yoo, Kwak, "On the Orthogonality of Knowledge Distillation with
Other Techniques: From an Ensemble Perspective", arXiv:2009.04120; `experiments/orthogonality.py`), which
reads, for each way of making a student small, what it saves next to what it costs in accuracy with and
without KD. It takes what `kd_jax.load_model(workdir)` returns, a plain Flax model or a
`kd_jax.compression.model.CompressedModel`:

    model, variables = kd_jax.load_model(workdir)
    report = compression_report(model, variables, images[:64])

Counting conventions (each number says what it is, since the techniques save different things):
  - `params`, `nonzero`: the network's trainable parameters (LSQ step sizes and BatchNorm running
    statistics left out), `nonzero` after the pruning masks; `kernel_params`/`kernel_nonzero`: the same
    over the conv/dense kernels, where unstructured pruning acts.
  - `bytes`: dense storage at the run's bit widths (`compressed_weights_report`: packed kernels plus one
    float32 scale per output channel for QAT runs, float32 elsewhere). Pruned zeros are stored like any
    other weight: a sparse format's saving depends on the format, so it is not guessed here.
  - `flops`: XLA's cost analysis of one compiled eval forward of the *full-precision* network (for a
    CompressedModel: the wrapped model with the masked weights, fake quantisation left out, since it only
    simulates low-precision arithmetic that a deployed integer kernel performs with the same operations).
    XLA counts dense arithmetic (2 per multiply-add, padding taps excluded), so pruning does not lower it.
  - `flops_sparse`: the estimate with pruned weights skipped: `flops − Σ_layers flops_layer·(1 − density)`,
    `flops_layer` being XLA's count for that Conv/Dense layer's kernel product alone and `density` the
    fraction of its kernel that is non-zero (an estimate: it assumes the zeros spread evenly over the
    kernel's taps, which matters only near padded borders). Equal to `flops` for unpruned models.
  - `inference_ms`: the median wall time of `repeats` jitted eval calls of the model as loaded (fake
    quantisation included, XLA's dense kernels) on `sample_inputs`, after one warm-up call. On CPU neither
    pruning nor quantisation makes this faster; it is reported so that the cost of the simulation is visible.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Dict, List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax.compression import pruning as kd_pruning
from kd_jax.compression.model import CompressedModel, compressed_weights_report, inner_variables
from kd_jax.errors import KDJaxError


def xla_flops(fn: Any, *args: Any) -> float:
  """FLOPs of `jax.jit(fn)(*args)` from XLA's cost analysis of the compiled program (0 if it reports none)."""
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX returned one dict per program
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def _prediction(model: Any):
  return lambda v, x: model.apply(v, x, train=False).prediction


def _kernel_layers(model: nn.Module, variables: Dict[str, Any], inputs: Any) -> List[Tuple[str, nn.Module, Any]]:
  """`(kernel path, module, input shape)` of every Conv/Dense call of an eval forward, found by an abstract
  pass (tracing only) with an interceptor, in call order."""
  calls: List[Tuple[str, nn.Module, Any]] = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, (nn.Conv, nn.Dense)) and context.method_name == "__call__":
      calls.append(("/".join(context.module.path) + "/kernel", context.module,
                    jax.ShapeDtypeStruct(args[0].shape, args[0].dtype)))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(_prediction(model), variables, inputs)
  return calls


def _layer_flops(module: nn.Module, kernel: Any, inputs: jax.ShapeDtypeStruct) -> float:
  """XLA's FLOPs of `module`'s kernel product alone (its bias left out: pruning does not touch it)."""
  bare = module.clone(parent=None, use_bias=False)
  return xla_flops(lambda k, x: bare.apply({"params": {"kernel": k}}, x), kernel, inputs)


def compression_report(model: Any, variables: Dict[str, Any], sample_inputs: Any, *,
                       repeats: int = 5) -> Dict[str, Any]:
  """Parameters, non-zero parameters, bytes, FLOPs and eval time of a loaded run's model (see the module
  docstring for what each number counts).

  Args:
    model: a Flax model or a `CompressedModel` (what `kd_jax.load_model` returns).
    variables: its variables.
    sample_inputs: one batch of inputs (its batch size is the FLOPs' and the timing's).
    repeats: timed calls whose median is `inference_ms`.

  Returns:
    A dict of Python numbers: `params`, `nonzero`, `kernel_params`, `kernel_nonzero`, `sparsity` (over the
    kernels), `bytes`, `weight_bits` (32 for full precision), `flops`, `flops_sparse`, `batch`,
    `inference_ms`, and `layers` ({kernel path: {'size', 'nonzero', 'flops'}}).

  Raises:
    KDJaxError: `repeats` < 1, or `variables` has no 'params'.
  """
  if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
    raise KDJaxError(f"compression_report: repeats must be a positive integer (timed calls); got {repeats!r}.")
  if not isinstance(variables, dict) or "params" not in variables:
    raise KDJaxError("compression_report: pass the model's whole variables dict (with 'params'), as "
                     "kd_jax.load_model returns it.")
  sample_inputs = jax.tree.map(jnp.asarray, sample_inputs)
  if isinstance(model, CompressedModel):
    weights = compressed_weights_report(model, variables, sample_inputs)
    network, dense = model.model, inner_variables(variables)  # masked weights, no quantiser state
    bits = model.quant.weight_bits if model.quantized else 32
  else:
    weights = kd_pruning.sparsity_report(variables["params"])
    weights["bytes"] = 4 * weights["total"]
    network, dense, bits = model, variables, 32

  flops = xla_flops(_prediction(network), dense, sample_inputs)
  kernels = {kd_pruning.path_str(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(dense["params"])}
  layers, saved = {}, 0.0
  for path, module, inputs in _kernel_layers(network, dense, sample_inputs):
    kernel = kernels.get(path)
    if kernel is None or path in layers:  # a shared module called twice is counted once per kernel
      continue
    size, nonzero = int(np.size(kernel)), int(np.count_nonzero(np.asarray(kernel)))
    layer_flops = _layer_flops(module, kernel, inputs)
    layers[path] = {"size": size, "nonzero": nonzero, "flops": layer_flops}
    saved += layer_flops * (1.0 - nonzero / size) if size else 0.0

  timed = jax.jit(_prediction(model))
  jax.block_until_ready(timed(variables, sample_inputs))  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(timed(variables, sample_inputs))
    times.append(1000.0 * (time.perf_counter() - start))

  batch = jax.tree.leaves(sample_inputs)[0].shape[0]
  return {
      "params": weights["total"], "nonzero": weights["nonzero"],
      "kernel_params": weights["kernel_total"], "kernel_nonzero": weights["kernel_nonzero"],
      "sparsity": weights["kernel_sparsity"], "bytes": int(weights["bytes"]), "weight_bits": bits,
      "flops": flops, "flops_sparse": flops - saved, "batch": int(batch),
      "inference_ms": statistics.median(times), "layers": layers,
  }
