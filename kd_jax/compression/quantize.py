"""Quantisation-aware training (QAT): fake quantisation, learned step sizes, observers and integer export.

Pure functions on arrays and parameter pytrees; a Flax model is quantised from the outside
(`quantized_apply`), so no model in `kd_jax.models` changes.

The scheme is the usual affine one: a real value x is stored as an integer q = clip(round(x/s) + z, qmin,
qmax) and read back as (q − z)·s (Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018, arXiv:1712.05877). Weights are quantised per output
channel and symmetrically (z = 0), activations per tensor, either with an asymmetric range tracked by a
moving min/max observer (PyTorch's `torch.ao.quantization.MovingAverageMinMaxObserver` + `FakeQuantize`)
or with a learned step size (Esser et al., "Learned Step Size Quantization", ICLR 2020, arXiv:1902.08153).
Rounding is not differentiable; the gradient is the straight-through estimator (Bengio, Léonard,
Courville, "Estimating or Propagating Gradients Through Stochastic Neurons for Conditional Computation",
arXiv:1308.3432): it passes unchanged where the value was not clipped and is zero where it was.

Used by the orthogonality study of KD with compression (Park, Yoo, Kwak, "On the Orthogonality of Knowledge
Distillation with Other Techniques: From an Ensemble Perspective", arXiv:2009.04120).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from kd_jax.errors import KDJaxError, one_of

# Smallest scale the qparam helpers return: PyTorch's observers clamp with torch.finfo(float32).eps too.
# A zero scale (an all-zero channel, a constant activation) would otherwise divide by zero.
SCALE_EPS = float(jnp.finfo(jnp.float32).eps)

RANGE_METHODS = ("minmax", "lsq")


# ------------------------------------------------------------------------------------------------------
# Integer ranges and argument checks


def quant_range(bits: int, signed: bool = True) -> Tuple[int, int]:
  """`(qmin, qmax)`: `(−2^(bits−1), 2^(bits−1) − 1)` if `signed`, else `(0, 2^bits − 1)`.

  Raises:
    KDJaxError: `bits` is not an integer in 2..16.
  """
  _check_bits(bits, "bits")
  if signed:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
  return 0, 2 ** bits - 1


def _check_bits(bits: Any, name: str) -> None:
  if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
    raise KDJaxError(f"{name} must be an integer from 2 to 16 (8, 4 and 2 are the usual widths); got {bits!r}.")


def _normalize_axis(axis: int, ndim: int) -> int:
  if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
    raise KDJaxError(f"axis must be an integer in [{-ndim}, {ndim}) for an input with {ndim} dimensions; "
                     f"got {axis!r}. Pass axis=None for a per-tensor scale.")
  return axis % ndim


def _per_axis(param: Any, x: jax.Array, axis: Optional[int], name: str, dtype: Any) -> jax.Array:
  """`param` as `dtype`, reshaped so it broadcasts against `x` along `axis` (a scalar if axis is None)."""
  param = jnp.asarray(param, dtype)
  if axis is None:
    if param.ndim != 0:
      raise KDJaxError(f"{name} has shape {param.shape} but axis=None means one per-tensor scalar; pass a "
                       f"scalar, or the channel axis of a 1-D per-channel {name}.")
    return param
  ax = _normalize_axis(axis, x.ndim)
  if param.shape != (x.shape[ax],):
    raise KDJaxError(f"per-channel {name} must have shape ({x.shape[ax]},) (x.shape[{axis}] for x of shape "
                     f"{x.shape}); got {param.shape}.")
  shape = [1] * x.ndim
  shape[ax] = x.shape[ax]
  return param.reshape(shape)


def _compute_dtype(x: jax.Array) -> Any:
  # bfloat16 activations are quantised in float32: at 8 bits, x/scale needs more than bf16's 8-bit mantissa.
  return jnp.promote_types(x.dtype, jnp.float32)


def _sum_to(g: jax.Array, shape: Tuple[int, ...]) -> jax.Array:
  """`g` summed over the axes that were broadcast from `shape` (same ndim, or a scalar)."""
  if len(shape) == 0:
    return jnp.sum(g)
  axes = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
  return jnp.sum(g, axis=axes, keepdims=True)


# ------------------------------------------------------------------------------------------------------
# Fake quantisation with the straight-through estimator


def _integer_code(x: jax.Array, scale: jax.Array, zero_point: jax.Array) -> jax.Array:
  # The one place the code is computed, so export and fake quantisation round identically.
  return jnp.round(x / scale) + zero_point


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fake_quant(x, scale, zero_point, qmin, qmax):
  return (jnp.clip(_integer_code(x, scale, zero_point), qmin, qmax) - zero_point) * scale


def _fake_quant_fwd(x, scale, zero_point, qmin, qmax):
  q = _integer_code(x, scale, zero_point)
  inside = (q >= qmin) & (q <= qmax)
  return (jnp.clip(q, qmin, qmax) - zero_point) * scale, (inside, scale, zero_point)


def _fake_quant_bwd(qmin, qmax, residuals, g):
  del qmin, qmax
  inside, scale, zero_point = residuals
  return jnp.where(inside, g, jnp.zeros_like(g)), jnp.zeros_like(scale), jnp.zeros_like(zero_point)


_fake_quant.defvjp(_fake_quant_fwd, _fake_quant_bwd)


def fake_quant(x: jax.Array, scale: Any, zero_point: Any, *, bits: int, signed: bool = True,
               axis: Optional[int] = None) -> jax.Array:
  """Quantise-dequantise: `(clip(round(x/scale) + zero_point, qmin, qmax) − zero_point) · scale`.

  `[qmin, qmax] = [−2^(bits−1), 2^(bits−1) − 1]` if `signed`, else `[0, 2^bits − 1]`; `round` is half to
  even (`jnp.round`, like `torch.round`, so 0.5 → 0, 1.5 → 2, 2.5 → 2). This is the forward value of
  PyTorch's `torch.fake_quantize_per_tensor_affine` / `fake_quantize_per_channel_affine`.

  Gradient (straight-through estimator): w.r.t. `x` it is 1 where `qmin ≤ round(x/scale) + zero_point ≤
  qmax` and 0 where the code was clipped (PyTorch's FakeQuantize mask); w.r.t. `scale` and `zero_point` it
  is zero: they come from observers or weight statistics and are not trained here (`lsq_quant` learns a
  scale).

  Args:
    x: the values to quantise, any float dtype (computed in at least float32, returned in x's dtype).
    scale: the step size, positive. Callers guarantee it; the qparam helpers of this module clamp it to
      `SCALE_EPS`. A scalar, or a 1-D array of length `x.shape[axis]`.
    zero_point: the integer code of the real value 0 (integer-valued, in [qmin, qmax]), same shape as
      `scale`.
    bits: integer width, 2 to 16.
    signed: the signed or the unsigned integer range.
    axis: the channel axis of per-channel `scale`/`zero_point`; None for per-tensor scalars.

  Raises:
    KDJaxError: bits outside 2..16, an invalid axis, or scale/zero_point of the wrong shape.
  """
  qmin, qmax = quant_range(bits, signed)
  x = jnp.asarray(x)
  dt = _compute_dtype(x)
  s = _per_axis(scale, x, axis, "scale", dt)
  z = _per_axis(zero_point, x, axis, "zero_point", dt)
  return _fake_quant(x.astype(dt), s, z, qmin, qmax).astype(x.dtype)


# ------------------------------------------------------------------------------------------------------
# Learned step size quantisation (LSQ)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _lsq(x, scale, grad_scale, qmin, qmax):
  return jnp.clip(jnp.round(x / scale), qmin, qmax) * scale


def _lsq_fwd(x, scale, grad_scale, qmin, qmax):
  return jnp.clip(jnp.round(x / scale), qmin, qmax) * scale, (x, scale, grad_scale)


def _lsq_bwd(qmin, qmax, residuals, g):
  x, scale, grad_scale = residuals
  v = x / scale
  # The paper's Eq. 3 and 5: strictly inside the range, ≤ qmin below, ≥ qmax above. At v = qmax exactly
  # the forward value is qmax·s on both sides, so ∂/∂s = qmax there (not round(v) − v = 0).
  inside = (v > qmin) & (v < qmax)
  dv_ds = jnp.where(inside, jnp.round(v) - v, jnp.where(v <= qmin, float(qmin), float(qmax)))
  dx = jnp.where(inside, g, jnp.zeros_like(g))
  ds = _sum_to(g * dv_ds * grad_scale, scale.shape).reshape(scale.shape)
  return dx, ds, jnp.zeros_like(grad_scale)


_lsq.defvjp(_lsq_fwd, _lsq_bwd)


def lsq_grad_scale(x_shape: Tuple[int, ...], bits: int, signed: bool = True, axis: Optional[int] = None) -> float:
  """LSQ's step-size gradient scale `g = 1/sqrt(N · qmax)` (Section 2.2 of the paper).

  N is the number of elements that share one scale: `x.size` per tensor (for activations this includes the
  batch dimension, as the widely used re-implementations do), `x.size / x.shape[axis]` per channel.
  """
  _, qmax = quant_range(bits, signed)
  size = math.prod(x_shape)
  n = size if axis is None else size // x_shape[_normalize_axis(axis, len(x_shape))]
  return 1.0 / math.sqrt(max(n, 1) * qmax)


def lsq_quant(x: jax.Array, scale: Any, *, bits: int, signed: bool = True, axis: Optional[int] = None,
              grad_scale: Optional[float] = None) -> jax.Array:
  """LSQ's quantiser: `clip(round(x/s), qmin, qmax) · s`, zero point 0, with a trained step size s.

  Esser, McKinstry, Bablani, Appuswamy, Modha, "Learned Step Size Quantization", ICLR 2020,
  arXiv:1902.08153. With v = x/s and `[qmin, qmax]` as in `quant_range` (the paper's `[−Q_N, Q_P]`):

  - ∂/∂x (Eq. 5, straight-through): 1 if qmin < v < qmax, else 0;
  - ∂/∂s (Eq. 3): round(v) − v if qmin < v < qmax; qmin if v ≤ qmin; qmax if v ≥ qmax; multiplied by
    `grad_scale` (Section 2.2; default `lsq_grad_scale`, 1/sqrt(N·qmax)) and summed over the elements
    that share the scale.

  The inequalities are the paper's (strict inside). An autograd implementation with `clamp` (e.g.
  zhutmost/lsq-net) counts v = qmin or qmax as inside; the two differ only on that set of measure zero.

  Args:
    x: values to quantise (computed in at least float32, returned in x's dtype).
    scale: positive step size (callers guarantee it; `quantized_apply` clamps learned scales to
      `SCALE_EPS`): a scalar, or 1-D of length `x.shape[axis]`.
    bits, signed, axis: as in `fake_quant`.
    grad_scale: the factor on the step-size gradient; None for the paper's `1/sqrt(N·qmax)`.
  """
  qmin, qmax = quant_range(bits, signed)
  x = jnp.asarray(x)
  dt = _compute_dtype(x)
  s = _per_axis(scale, x, axis, "scale", dt)
  if grad_scale is None:
    grad_scale = lsq_grad_scale(x.shape, bits, signed, axis)
  return _lsq(x.astype(dt), s, jnp.asarray(grad_scale, dt), qmin, qmax).astype(x.dtype)


def lsq_init_scale(x: jax.Array, bits: int, signed: bool = True, axis: Optional[int] = None) -> jax.Array:
  """LSQ's initial step size `2·mean|x| / sqrt(qmax)` (Section 2.1 of the paper), clamped to `SCALE_EPS`.

  Per tensor (axis None) a scalar; per channel the mean runs over every axis but `axis` (1-D result).
  """
  _, qmax = quant_range(bits, signed)
  x = jnp.abs(jnp.asarray(x, _compute_dtype(jnp.asarray(x))))
  if axis is None:
    mean = jnp.mean(x)
  else:
    ax = _normalize_axis(axis, x.ndim)
    mean = jnp.mean(x, axis=tuple(i for i in range(x.ndim) if i != ax))
  return jnp.maximum(2.0 * mean / math.sqrt(qmax), SCALE_EPS)


# ------------------------------------------------------------------------------------------------------
# Quantisation parameters


def symmetric_weight_qparams(kernel: jax.Array, bits: int) -> Tuple[jax.Array, jax.Array]:
  """Per-output-channel symmetric `(scale, zero_point)` of a Flax kernel (output channels last: Dense
  [in, out], Conv [kh, kw, in, out]): `scale = max|w| / qmax` over every other axis, clamped to
  `SCALE_EPS`, zero point 0 (int32) in the signed range.

  The largest |w| of a channel maps to the code ±qmax, so the signed range's extra code −2^(bits−1) is
  unused (the "restricted range" of Krishnamoorthi, arXiv:1806.08342; PyTorch's symmetric per-channel
  observer divides by (qmax − qmin)/2 instead).

  Raises:
    KDJaxError: bits outside 2..16, or a kernel with fewer than 2 dimensions.
  """
  _, qmax = quant_range(bits, signed=True)
  kernel = jnp.asarray(kernel)
  if kernel.ndim < 2:
    raise KDJaxError(f"symmetric_weight_qparams takes a kernel with output channels last (ndim ≥ 2); got "
                     f"shape {kernel.shape}.")
  amax = jnp.max(jnp.abs(kernel.astype(_compute_dtype(kernel))), axis=tuple(range(kernel.ndim - 1)))
  scale = jnp.maximum(amax / qmax, SCALE_EPS)
  return scale, jnp.zeros(scale.shape, jnp.int32)


def minmax_activation_qparams(lo: Any, hi: Any, bits: int) -> Tuple[jax.Array, jax.Array]:
  """Asymmetric unsigned `(scale, zero_point)` covering `[lo, hi]` (per tensor, or elementwise on arrays).

  The range is first extended to contain 0 (lo ← min(lo, 0), hi ← max(hi, 0)) so that 0, what zero padding
  and ReLU produce, is exactly representable; then `scale = max((hi − lo) / (2^bits − 1), SCALE_EPS)` and
  `zero_point = clip(round(−lo / scale), 0, 2^bits − 1)` (int32). This is PyTorch's `MinMaxObserver`
  in `quint8`-style affine mode (`torch.per_tensor_affine`, `_calculate_qparams`), at any width.
  """
  _, qmax = quant_range(bits, signed=False)
  lo = jnp.minimum(jnp.asarray(lo, jnp.float32), 0.0)
  hi = jnp.maximum(jnp.asarray(hi, jnp.float32), 0.0)
  scale = jnp.maximum((hi - lo) / qmax, SCALE_EPS)
  zero_point = jnp.clip(jnp.round(-lo / scale), 0, qmax).astype(jnp.int32)
  return scale, zero_point


# ------------------------------------------------------------------------------------------------------
# Configuration and state


@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """What `quantized_apply` quantises and how.

  Attributes:
    weight_bits: width of every conv/dense kernel (per output channel, symmetric, signed).
    activation_bits: width of the input of every `nn.Conv` and `nn.Dense` (per tensor).
    activation_range: 'minmax' (asymmetric unsigned, range from a moving min/max observer) or 'lsq'
      (signed, learned step size).
    weight_range: 'minmax' (scales max|w|/qmax recomputed from the current weights at every call) or
      'lsq' (learned per-channel step sizes, initialised by `lsq_init_scale`).
    observer_momentum: m in `new = m·old + (1 − m)·batch` for the activation min/max. PyTorch's
      MovingAverageMinMaxObserver writes `old + c·(batch − old)`, i.e. m = 1 − c (its default c = 0.01 is
      m = 0.99). m = 1 freezes the ranges found at initialisation.
    first_last_bits: width of the first quantised layer and the last Dense layer, weights and input
      activations (the LSQ paper keeps them at 8 bits); None gives them the widths of the others.
  """

  weight_bits: int = 8
  activation_bits: int = 8
  activation_range: str = "minmax"
  weight_range: str = "minmax"
  observer_momentum: float = 0.9
  first_last_bits: Optional[int] = 8

  def __post_init__(self):
    _check_bits(self.weight_bits, "QuantConfig.weight_bits")
    _check_bits(self.activation_bits, "QuantConfig.activation_bits")
    if self.first_last_bits is not None:
      _check_bits(self.first_last_bits, "QuantConfig.first_last_bits (or None for no exception)")
    for name in ("activation_range", "weight_range"):
      value = getattr(self, name)
      if value not in RANGE_METHODS:
        raise KDJaxError(f"QuantConfig.{name} must be {one_of(RANGE_METHODS)}; got {value!r}.")
    m = self.observer_momentum
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0:
      raise KDJaxError(f"QuantConfig.observer_momentum must be a number in [0, 1] (the weight of the old "
                       f"range; 0.9 is usual, 0.99 is PyTorch's default); got {m!r}.")


@flax.struct.dataclass
class QuantState:
  """The non-trained quantiser state: activation observers plus the static layer layout.

  Attributes:
    observers: per quantised layer ('/'-joined module path), `{'lo', 'hi'}` (float32 scalars: the moving
      min and max of the layer's input) and `initialized` (bool scalar); empty with 'lsq' activations.
    layers: the quantised layers' paths in the order the forward pass first calls them (static).
    first: the first of them (static), kept at `first_last_bits`.
    last: the last `nn.Dense` called (static), kept at `first_last_bits`; None if the model has none.
  """

  observers: Dict[str, Dict[str, jax.Array]]
  layers: Tuple[str, ...] = flax.struct.field(pytree_node=False, default=())
  first: Optional[str] = flax.struct.field(pytree_node=False, default=None)
  last: Optional[str] = flax.struct.field(pytree_node=False, default=None)


def layer_bits(path: str, config: QuantConfig, qstate: Optional[QuantState] = None) -> Tuple[int, int]:
  """`(weight bits, activation bits)` of the layer at module path `path` ('/'-joined)."""
  if config.first_last_bits is not None and qstate is not None and path in (qstate.first, qstate.last):
    return config.first_last_bits, config.first_last_bits
  return config.weight_bits, config.activation_bits


def _needs_qstate(config: QuantConfig, qstate: Optional[QuantState], caller: str) -> None:
  special = config.first_last_bits
  if qstate is None and special is not None and (special != config.weight_bits):
    raise KDJaxError(f"{caller}: QuantConfig.first_last_bits={special} differs from weight_bits="
                     f"{config.weight_bits}, so the first and last layers must be known: pass "
                     f"qstate=... (from init_quant_state).")


# ------------------------------------------------------------------------------------------------------
# Weights: a pure transform of the params tree


def _key_name(entry: Any) -> str:
  return str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))


def _kernel_path(path: Tuple[Any, ...], leaf: Any) -> Optional[str]:
  """The '/'-joined module path of a conv/dense kernel leaf (named 'kernel', ndim ≥ 2), else None."""
  if path and _key_name(path[-1]) == "kernel" and getattr(leaf, "ndim", 0) >= 2:
    return "/".join(_key_name(p) for p in path[:-1])
  return None


def _map_kernels(params: Any, fn: Callable[[str, jax.Array], jax.Array]) -> Any:
  def visit(path, leaf):
    name = _kernel_path(path, leaf)
    return leaf if name is None else fn(name, leaf)
  return jax.tree_util.tree_map_with_path(visit, params)


def _kernels(params: Any) -> Dict[str, jax.Array]:
  found = {}
  _map_kernels(params, lambda name, leaf: found.setdefault(name, leaf))
  return found


def _weight_qparams(path: str, kernel: jax.Array, qparams: Any, bits: int,
                    config: QuantConfig) -> Tuple[jax.Array, jax.Array]:
  if config.weight_range == "lsq":
    scales = qparams.get("weights", {}) if qparams else {}
    if path not in scales:
      raise KDJaxError(f"No learned weight scale for kernel {path!r} in qparams['weights']; build qparams "
                       f"with init_quant_state for this model and QuantConfig(weight_range='lsq').")
    scale = jnp.maximum(jnp.asarray(scales[path], jnp.float32), SCALE_EPS)
    return scale, jnp.zeros(scale.shape, jnp.int32)
  # The range follows the weights but is not differentiated through (fake_quant's scale gradient is 0).
  return symmetric_weight_qparams(jax.lax.stop_gradient(kernel), bits)


def quantize_params(params: Any, qparams: Any, config: QuantConfig, *,
                    qstate: Optional[QuantState] = None) -> Any:
  """`params` with every kernel (leaf named 'kernel', ndim ≥ 2) fake-quantised per output channel.

  'minmax' weights: `fake_quant` with `symmetric_weight_qparams` of the current kernel; 'lsq': `lsq_quant`
  with the learned scale `qparams['weights'][path]` (its gradient flows to that scale). Gradients reach
  the full-precision kernels through the straight-through estimator. Other leaves are returned unchanged.
  `qstate` tells the first/last layers (required when `first_last_bits` differs from `weight_bits`).
  """
  _needs_qstate(config, qstate, "quantize_params")

  def quantize(path, kernel):
    bits, _ = layer_bits(path, config, qstate)
    scale, zero_point = _weight_qparams(path, kernel, qparams, bits, config)
    if config.weight_range == "lsq":
      return lsq_quant(kernel, scale, bits=bits, signed=True, axis=-1)
    return fake_quant(kernel, scale, zero_point, bits=bits, signed=True, axis=-1)

  return _map_kernels(params, quantize)


# ------------------------------------------------------------------------------------------------------
# Activations: an interceptor on every nn.Conv / nn.Dense call


def _is_quantized_call(context: Any) -> bool:
  return context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense))


def _once_per_call(active: set) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Makes an interceptor act on the outermost `__call__` of each Conv/Dense only, passing others through.

  A subclass of nn.Conv whose `__call__` calls `super().__call__` is intercepted twice for one layer call;
  quantising (and, in train mode, observing) twice would be wrong, so the nested call is passed through.
  """
  def wrap(interceptor):
    def wrapped(next_fun, args, kwargs, context):
      if not _is_quantized_call(context) or id(context.module) in active:
        return next_fun(*args, **kwargs)
      active.add(id(context.module))
      try:
        return interceptor(next_fun, args, kwargs, context)
      finally:
        active.discard(id(context.module))
    return wrapped
  return wrap


def _with_input(args: tuple, kwargs: dict, fn: Callable[[jax.Array], jax.Array]) -> Tuple[tuple, dict]:
  if args:
    return (fn(args[0]),) + tuple(args[1:]), kwargs
  kwargs = dict(kwargs)
  kwargs["inputs"] = fn(kwargs["inputs"])
  return args, kwargs


def _input_of(args: tuple, kwargs: dict) -> jax.Array:
  return args[0] if args else kwargs["inputs"]


def init_quant_state(model: nn.Module, variables: Any, inputs: Any, config: QuantConfig,
                     **apply_kwargs: Any) -> Tuple[QuantState, Dict[str, Dict[str, jax.Array]]]:
  """`(qstate, qparams)` for `quantized_apply`, from one eval-mode, full-precision pass over `inputs`.

  The pass records, in call order, the input of every `nn.Conv` and `nn.Dense` `__call__` (keyed by the
  module's '/'-joined path, which is also the path of its kernel in `params`): `qstate.layers` is that
  order, `qstate.first` its first entry and `qstate.last` the last `nn.Dense` called (the classifier in
  every kd_jax model), the two layers `first_last_bits` applies to. Layers called more than once (shared
  modules) have one quantiser; their observed range covers every call.

  'minmax' activations: `qstate.observers[path]` starts at that batch's min/max, `initialized` True.
  'lsq' activations: `qparams['activations'][path] = lsq_init_scale(input, bits, signed=True)` (from the
  first call). 'lsq' weights: `qparams['weights'][path] = lsq_init_scale(kernel, bits, axis=-1)` for every
  kernel of `params`. `qparams` is what the optimizer trains along with the params (empty dicts with
  'minmax'); `qstate` is not trained.

  Raises:
    KDJaxError: the model calls no nn.Conv or nn.Dense.
  """
  order, kinds, stats = [], {}, {}
  active = set()

  @_once_per_call(active)
  def record(next_fun, args, kwargs, context):
    path = "/".join(context.module.path)
    x = jax.lax.stop_gradient(jnp.asarray(_input_of(args, kwargs), jnp.float32))
    order.append(path)
    kinds[path] = isinstance(context.module, nn.Dense)
    lo, hi = jnp.min(x), jnp.max(x)
    if path in stats:
      stats[path] = (jnp.minimum(stats[path][0], lo), jnp.maximum(stats[path][1], hi), stats[path][2])
    else:
      stats[path] = (lo, hi, x)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply(variables, inputs, train=False, **apply_kwargs)
  if not order:
    raise KDJaxError(f"init_quant_state found no nn.Conv or nn.Dense call in {type(model).__name__}; "
                     "quantisation-aware training needs a model built from them.")
  layers = tuple(dict.fromkeys(order))
  dense_calls = [p for p in order if kinds[p]]
  qstate = QuantState(observers={}, layers=layers, first=layers[0],
                      last=dense_calls[-1] if dense_calls else None)

  observers, act_scales, weight_scales = {}, {}, {}
  for path in layers:
    lo, hi, x = stats[path]
    _, abits = layer_bits(path, config, qstate)
    if config.activation_range == "minmax":
      observers[path] = {"lo": lo, "hi": hi, "initialized": jnp.asarray(True)}
    else:
      act_scales[path] = lsq_init_scale(x, abits, signed=True)
  if config.weight_range == "lsq":
    for path, kernel in _kernels(variables["params"]).items():
      wbits, _ = layer_bits(path, config, qstate)
      weight_scales[path] = lsq_init_scale(kernel, wbits, signed=True, axis=-1).astype(jnp.float32)
  return qstate.replace(observers=observers), {"weights": weight_scales, "activations": act_scales}


def quantized_apply(model: nn.Module, variables: Any, inputs: Any, qstate: QuantState, qparams: Any,
                    config: QuantConfig, *, train: bool, quantize_weights: bool = True,
                    **apply_kwargs: Any) -> Tuple[Any, QuantState, Optional[Any]]:
  """Applies `model` with fake-quantised weights and activations: `(output, new qstate, new batch_stats)`.

  Weights: `quantize_params` on `variables['params']` before `model.apply` (skipped with
  `quantize_weights=False`, for params that already hold dequantised integers, see `dequantize_weights`).

  Activations: the input of every `nn.Conv` / `nn.Dense` `__call__` is fake-quantised per tensor through
  `flax.linen.intercept_methods`, so the model's code is unchanged. Whether an input is non-negative
  cannot be known statically (a residual sum, a normalised image), so:
  - 'minmax': asymmetric unsigned with a zero point, `fake_quant(x, *minmax_activation_qparams(lo, hi))`.
    In train mode the layer's batch min/max first update the observer, `new = m·old + (1 − m)·batch`
    (the first observation, `initialized` False, sets it), and the updated range quantises the batch, as
    PyTorch's FakeQuantize does; in eval mode the stored range is used and nothing changes.
  - 'lsq': signed `lsq_quant` with the learned scale `qparams['activations'][path]` (clamped to
    `SCALE_EPS`). On a post-ReLU input half of the signed codes go unused; the LSQ paper uses unsigned
    there, which needs the sign known per layer.

  Args:
    model, variables, inputs: as for `model.apply`; `variables` holds 'params' (full precision) and
      whatever else the model reads ('batch_stats').
    qstate, qparams: from `init_quant_state` (qparams trained with the params, qstate carried along).
    config: the widths and range methods.
    train: the model's train flag. True applies it with `mutable=['batch_stats']` and returns the new
      batch statistics ({} if it has none), as `kd_jax.train.step.apply_train`; False returns None.
    quantize_weights: False leaves the kernels as given.
    **apply_kwargs: passed to `model.apply` (e.g. `rngs`).

  Raises:
    KDJaxError: a Conv/Dense that `init_quant_state` did not see (a layer used only in train mode, or
      state from another model).
  """
  params = variables["params"]
  variables = dict(variables)
  if quantize_weights:
    variables["params"] = quantize_params(params, qparams, config, qstate=qstate)
  observers = dict(qstate.observers)
  m = float(config.observer_momentum)

  def quantize_input(path, x):
    _, bits = layer_bits(path, config, qstate)
    if config.activation_range == "lsq":
      scale = jnp.maximum(jnp.asarray(qparams["activations"][path], jnp.float32), SCALE_EPS)
      return lsq_quant(x, scale, bits=bits, signed=True)
    obs = observers[path]
    if train:
      batch = jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
      lo = jnp.where(obs["initialized"], m * obs["lo"] + (1.0 - m) * jnp.min(batch), jnp.min(batch))
      hi = jnp.where(obs["initialized"], m * obs["hi"] + (1.0 - m) * jnp.max(batch), jnp.max(batch))
      obs = observers[path] = {"lo": lo, "hi": hi, "initialized": jnp.ones_like(obs["initialized"])}
    scale, zero_point = minmax_activation_qparams(obs["lo"], obs["hi"], bits)
    return fake_quant(x, scale, zero_point, bits=bits, signed=False)

  @_once_per_call(set())
  def interceptor(next_fun, args, kwargs, context):
    path = "/".join(context.module.path)
    known = qparams.get("activations", {}) if config.activation_range == "lsq" else observers
    if path not in qstate.layers or path not in known:
      raise KDJaxError(f"Layer {path!r} is not in the quantiser state (it knows {len(qstate.layers)} layers "
                       f"of {type(model).__name__}). Build qstate and qparams with init_quant_state on this "
                       "model and config; a layer that runs only in train mode is not supported.")
    args, kwargs = _with_input(args, kwargs, functools.partial(quantize_input, path))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    if train:
      out, updates = model.apply(variables, inputs, train=True, mutable=["batch_stats"], **apply_kwargs)
      batch_stats = updates.get("batch_stats", {})
    else:
      out = model.apply(variables, inputs, train=False, **apply_kwargs)
      batch_stats = None
  new_qstate = qstate.replace(observers=observers) if train and config.activation_range == "minmax" else qstate
  return out, new_qstate, batch_stats


# ------------------------------------------------------------------------------------------------------
# Export


def _int_dtype(bits: int) -> Any:
  return jnp.int8 if bits <= 8 else jnp.int16


def export_int_weights(params: Any, qparams: Any, config: QuantConfig, *,
                       qstate: Optional[QuantState] = None) -> Dict[str, Dict[str, Any]]:
  """The integer kernels: per kernel path ('/'-joined module path), `{'q', 'scale', 'zero_point', 'bits'}`.

  `q = clip(round(w/scale) + zero_point, qmin, qmax)` as int8 (bits ≤ 8) or int16, same shape as the
  kernel; `scale` (float32) and `zero_point` (int32, zero: symmetric) per output channel (the last axis);
  `bits` a Python int. The scales are those `quantize_params` uses, so `dequantize_weights` gives back its
  fake-quantised kernels bit for bit. `qstate` is required when `first_last_bits` differs from
  `weight_bits`.
  """
  _needs_qstate(config, qstate, "export_int_weights")
  exported = {}
  for path, kernel in _kernels(params).items():
    bits, _ = layer_bits(path, config, qstate)
    qmin, qmax = quant_range(bits, signed=True)
    scale, zero_point = _weight_qparams(path, kernel, qparams, bits, config)
    dt = _compute_dtype(kernel)
    s = _per_axis(scale, kernel, -1, "scale", dt)
    z = _per_axis(zero_point, kernel, -1, "zero_point", dt)
    q = jnp.clip(_integer_code(kernel.astype(dt), s, z), qmin, qmax).astype(_int_dtype(bits))
    exported[path] = {"q": q, "scale": jnp.asarray(scale, jnp.float32), "zero_point": zero_point,
                      "bits": bits}
  return exported


def dequantize_weights(exported: Dict[str, Dict[str, Any]], params: Any) -> Any:
  """`params` with each exported kernel replaced by `(q − zero_point) · scale` (per output channel).

  Raises:
    KDJaxError: an exported kernel missing from `params` or of a different shape.
  """
  kernels = _kernels(params)
  for path, entry in exported.items():
    if path not in kernels:
      raise KDJaxError(f"Exported kernel {path!r} is not in the params; export and params must come from "
                       "the same model.")
    if tuple(entry["q"].shape) != tuple(kernels[path].shape):
      raise KDJaxError(f"Exported kernel {path!r} has shape {tuple(entry['q'].shape)}, the params' kernel "
                       f"{tuple(kernels[path].shape)}; export and params must come from the same model.")

  def rebuild(path, kernel):
    if path not in exported:
      return kernel
    entry = exported[path]
    dt = _compute_dtype(kernel)
    s = _per_axis(entry["scale"], kernel, -1, "scale", dt)
    z = _per_axis(entry["zero_point"], kernel, -1, "zero_point", dt)
    return ((jnp.asarray(entry["q"]).astype(dt) - z) * s).astype(kernel.dtype)

  return _map_kernels(params, rebuild)


def quantized_model_bytes(params: Any, config: QuantConfig, *, qstate: Optional[QuantState] = None) -> int:
  """Bytes of the parameters at their bit widths: each kernel `ceil(size·bits/8)` (packed) plus one float32
  scale per output channel (zero points are 0 and not stored); every other parameter float32.

  Not counted: BatchNorm running statistics (foldable into the preceding kernel's scale and a bias) and
  the activation quantisers (8 bytes per layer). `qstate` as for `export_int_weights`.
  """
  _needs_qstate(config, qstate, "quantized_model_bytes")
  total = 0

  def count(path, leaf):
    nonlocal total
    name = _kernel_path(path, leaf)
    size = int(math.prod(leaf.shape))
    if name is None:
      total += 4 * size
    else:
      bits, _ = layer_bits(name, config, qstate)
      total += -(-size * bits // 8) + 4 * int(leaf.shape[-1])
    return leaf

  jax.tree_util.tree_map_with_path(count, params)
  return total
