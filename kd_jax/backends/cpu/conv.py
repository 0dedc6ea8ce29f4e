"""A drop-in `lax.conv_general_dilated` whose backward pass is fast on CPUs.

XLA's CPU backend differentiates a convolution into two more convolutions. The input gradient is fine at
stride 1, but the weight gradient becomes a convolution whose "kernel" is the output gradient (e.g. a 16x16
window over the batch-as-features input, producing a 3x3 output) and which needs its input transposed to
batch-last first; inside the resnet8x4 train step these two (the odd convolution and the transposes)
took about half of the step's time (docs/benchmarks.md). Two CPU backward passes address it, one per CPU
kernel setting.

The matmul backward ("matmul"; what "auto" runs on CPU with YNNPACK's kernels): the same weight gradient
is kh·kw ordinary matrix products,

    dW[i, j] = sum over (n, h, w) of  x_pad[n, s·h + i, s·w + j, :]ᵀ · dy[n, h, w, :]     ([C_in, C_out])

one per kernel tap (i, j), each contracting N·H_out·W_out, which the CPU runs at near matmul speed. With
stride > 1, XLA's input gradient is an lhs-dilated convolution that its fast CPU convolution path does not
take either, so for strided convolutions the input gradient is formed the same way: one matmul
`dy · Wᵀ` gives every tap's contribution, and each tap is added back at its strided position
(a "col2im"). The forward pass stays XLA's convolution.

Numerics: the matmul forms compute the same sums of the same float32 products as XLA's convolutions, in
another order (float32 reassociation: differences of a few ulps of the sum's scale, tested against
`lax.conv_general_dilated`). With bf16 inputs and kernels the products are accumulated in float32
(`preferred_element_type`) and rounded to bf16 once, as the cotangent of a bf16 kernel must be bf16.

The blocked backward ("blocked", what "auto" runs on CPU with XLA's own convolution kernels, the default)
keeps XLA's convolutions and changes two things about how they are fed:

- Weight gradient, summed over blocks of the batch: dW = Σ_b conv(x_b, dy_b). XLA's CPU weight-gradient
  convolution reads its input batch-minor ([C, H, W, N]), and XLA computes that copy inside the fusion that
  produces the activation (BatchNorm, ReLU, the residual sum), a loop over the output that reads the NHWC
  inputs with a stride of H·W·C: every element read costs a cache line, and for each of the C output rows the
  whole activation streams through the caches again. In profiles of the resnet8x4 train step these fused
  transposes took about a third of the step, many times what a plain transpose of the same array, once
  materialised, costs. (XLA removes `lax.optimization_barrier`s and carries the layout through loops, so the
  fusion cannot be stopped from JAX.) Blocks of at most `_BLOCK_POSITIONS` = 16384 positions (N_b·H·W; 16
  images at 32x32) keep one block's cache lines (16384 x 64 B = 1 MiB) in the per-core L2 cache; blocks that
  fit in L2 roughly halve those copies. Each block then reaches the convolution batch-minor through a product
  with the N_b x N_b identity (`_batch_minor`) rather than a transpose: a matrix product's operand is not
  fused, so XLA stores the activation and the batch-minor copy it still makes reads that stored array, instead
  of recomputing BatchNorm, ReLU and residual sums with strided reads; the products are cheap (at most 64
  multiply-adds per element). Of the students' CE steps, ShuffleNetV1's (whose copies recompute concatenated
  branches and several BatchNorms) gained most, resnet8x4's a little, ShuffleNetV2's lost a little, the others
  within noise (docs/benchmarks.md).
- Input gradient of a strided convolution, by output phase: XLA's is an lhs-dilated convolution (dy with s-1
  zeros between its elements), which its fast CPU path does not take (several times the forward's cost).
  Instead, each of the s² phases of dx (the rows and columns ≡ (p, q) mod s) is an ordinary stride-1
  convolution of dy with the kernel taps w[p::s, q::s], flipped; the phases are interleaved back.

Both compute the same products as XLA's gradients and sum them in another order (float32
reassociation); bf16 weight-gradient blocks are summed in float32 and rounded once.

The switch (`conv_backward`): "xla" is `lax.conv_general_dilated` unchanged; "matmul" and "blocked" always
use their backward; "auto" (the default) picks the blocked backward when lowering for CPU and "xla" on every
other platform (GPUs and TPUs keep cuDNN's/XLA's convolutions), via `lax.platform_dependent`; with
YNNPACK's CPU kernels (`cpu_conv_kernels='ynnpack'`) it picks the matmul backward on CPU instead
("auto-matmul", what `resolve_conv_backward` gives for that setting). Models pass their mode explicitly
(`mode=`, from the `kd_jax.backends.Kernels` they are built with, which a run builds from
`config.conv_backward` and `config.cpu_conv_kernels`). A direct call without `mode` reads this module's
current mode, which `conv_backward(mode)` sets for a block (the tests of these forms and the kernel
benchmarks use it); it is read at trace time, and JAX caches traces per Python function object, so
jitting the *same* function object again after changing it may reuse the earlier trace.

Which CPU kernels run the convolutions (`cpu_conv_kernels`, `compiler_options`): jax 0.10's CPU backend
hands convolutions, matrix products and reductions to YNNPACK. YNNPACK ran the 64-channel 32x32
convolutions of the CIFAR ResNets on one of the machine's two cores, while XLA's own convolution kernels
use both, about twice as fast there (docs/benchmarks.md). 'auto' (the default) runs them in oneDNN
where kd_jax's oneDNN handlers build and pass a self-check, with XLA's kernels otherwise
(`auto_cpu_conv_kernels`, `kd_jax.backends.cpu.onednn`). 'xla' compiles
every program with `xla_cpu_experimental_ynn_fusion_type` set to matrix products and reductions only, so
convolutions use XLA's kernels while reductions keep YNNPACK's (XLA's own reductions, which that option
would otherwise also bring back, made train-mode BatchNorm outputs about 10x further from float64);
'ynnpack' leaves XLA's defaults alone. The matmul backward pays off only against YNNPACK's kernels, the
blocked one only against XLA's (docs/benchmarks.md), so `conv_backward='auto'` follows the kernels in use
(`resolve_conv_backward`).

Grouped convolutions take forms of their own in every mode but 'xla' (on CPU only under 'auto'):
depthwise ones (feature groups = input = output channels) are shifted multiply-adds (`_depthwise_conv`),
and up to `_MAX_SPLIT_GROUPS` groups become that many ordinary convolutions (`_split_groups`). Anything
else the CPU forms do not cover (more groups, dilation, other layouts than NHWC/HWIO, 1-D/3-D, negative
padding, `preferred_element_type`) falls back to `lax.conv_general_dilated` in every mode.

Measurements and what did not help: docs/benchmarks.md, "CPU convolutions".
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from jax import lax

from kd_jax.backends.cpu import onednn
from kd_jax.errors import KDJaxError, one_of

# The values of config.conv_backward and config.cpu_conv_kernels (the first is the default); kd_jax.config
# validates configs against these.
CONV_BACKWARDS = ("auto", "xla", "matmul", "blocked")
CPU_CONV_KERNELS = ("auto", "xla", "ynnpack", "onednn")
# "auto" with YNNPACK's CPU kernels: the matmul backward when lowered for CPU, XLA's elsewhere. A resolved
# mode only (`resolve_conv_backward`), not a config value.
AUTO_MATMUL = "auto-matmul"
# "auto" with oneDNN's CPU kernels: float32 and bfloat16 convolutions (forward and both gradients) in oneDNN
# when lowered for CPU (kd_jax.backends.cpu.onednn), XLA's convolutions elsewhere. Also a resolved mode only.
AUTO_ONEDNN = "auto-onednn"
_RESOLVED = (AUTO_MATMUL, AUTO_ONEDNN)

# XLA's DebugOptions field and value (jax 0.10.2, XLA's CPU backend) that leave only matrix products and
# reductions to YNNPACK; its default also includes convolutions.
_YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_DOT_AND_REDUCE = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"

# The mode of direct calls of `conv_general_dilated` that pass none (models always pass theirs).
_mode = ["auto"]

Padding = Union[str, Sequence[Tuple[int, int]]]


def validate_conv_backward(mode: Any, resolved: bool = False) -> str:
  """`mode` if it is a config value of `conv_backward` (or, with `resolved`, also AUTO_MATMUL or
  AUTO_ONEDNN)."""
  if mode not in CONV_BACKWARDS + (_RESOLVED if resolved else ()):
    raise KDJaxError(f"conv_backward must be {one_of(CONV_BACKWARDS)}; got {mode!r}. "
                     "'auto' uses a CPU-specific backward pass on CPU and XLA's convolutions elsewhere.")
  return mode


def get_conv_backward() -> str:
  """The mode of calls of `conv_general_dilated` traced from now on without a `mode` ('auto', 'xla',
  'matmul', 'blocked', 'auto-matmul' or 'auto-onednn')."""
  return _mode[0]


def set_conv_backward(mode: str) -> None:
  """Sets the mode of calls traced from now on without a `mode` (until set again)."""
  _mode[0] = validate_conv_backward(mode, resolved=True)


def validate_cpu_conv_kernels(kernels: Any) -> str:
  if kernels not in CPU_CONV_KERNELS:
    raise KDJaxError(f"cpu_conv_kernels must be {one_of(CPU_CONV_KERNELS)}; got {kernels!r}. "
                     "'auto' runs CPU convolutions with oneDNN's kernels where they build and pass a self-check, "
                     "else XLA's; 'xla' with XLA's own kernels, 'ynnpack' with YNNPACK's (XLA's default), "
                     "'onednn' with oneDNN's (needs oneDNN: kd_jax.backends.cpu.onednn).")
  return kernels


# Set to 0 to make cpu_conv_kernels='auto' use XLA's kernels without trying oneDNN.
ONEDNN_ENV = "KD_JAX_ONEDNN"


def auto_cpu_conv_kernels(platform: Optional[str] = None) -> Tuple[str, str]:
  """What `cpu_conv_kernels='auto'` runs for programs compiled for `platform` (default: JAX's default
  backend), and why: `('onednn', why)` on CPU where kd_jax's oneDNN handlers build and pass their
  self-check (`onednn.self_check`, once per process), else `('xla', why)`: XLA's kernels, the forms
  'xla' uses. Off CPU the setting changes nothing (XLA's convolutions there in every case). `KD_JAX_ONEDNN=0`
  skips oneDNN (no build, no check). `why` completes "CPU convolutions: ..." for a run's log.
  """
  platform = jax.default_backend() if platform is None else platform
  if platform != "cpu":
    return "xla", f"XLA (the backend is {platform}, not CPU)"
  if os.environ.get(ONEDNN_ENV, "").strip() == "0":
    return "xla", f"XLA ({ONEDNN_ENV}=0)"
  problem = onednn.self_check()
  if problem is not None:
    return "xla", f"XLA (oneDNN not used: {problem.splitlines()[0]})"
  return "onednn", f"{onednn.describe()}, self-check passed"


def concrete_cpu_conv_kernels(kernels: str, platform: Optional[str] = None) -> str:
  """`kernels` with 'auto' replaced by what it runs (`auto_cpu_conv_kernels`)."""
  validate_cpu_conv_kernels(kernels)
  return auto_cpu_conv_kernels(platform)[0] if kernels == "auto" else kernels


def resolve_conv_backward(conv_backward: str, cpu_conv_kernels: str) -> str:
  """The mode to trace with: 'auto' (the blocked backward on CPU, XLA elsewhere) when CPU convolutions use
  XLA's kernels, AUTO_MATMUL (the matmul backward on CPU, XLA elsewhere) when they use YNNPACK's,
  asked for or because this jaxlib refuses the option, and AUTO_ONEDNN (oneDNN on CPU, XLA elsewhere)
  with oneDNN's, which are built and registered here (a KDJaxError says what to install if they cannot
  be); `cpu_conv_kernels='auto'` is first replaced by what it runs (`auto_cpu_conv_kernels`); the other
  modes are themselves."""
  validate_conv_backward(conv_backward)
  validate_cpu_conv_kernels(cpu_conv_kernels)
  if conv_backward == "auto":
    cpu_conv_kernels = concrete_cpu_conv_kernels(cpu_conv_kernels)
  if conv_backward == "auto" and cpu_conv_kernels == "onednn":
    onednn.ensure_available()  # a missing oneDNN stops the run here, before anything is traced
    return AUTO_ONEDNN
  if conv_backward == "auto" and compiler_options(cpu_conv_kernels, "cpu") is None:
    return AUTO_MATMUL
  return conv_backward


@functools.lru_cache(maxsize=None)
def _cpu_option_supported(key: str, value: str) -> bool:
  # Another jaxlib may not know the option (compiling then fails) or may have dropped YNNPACK.
  try:
    x = jax.device_put(jnp.zeros(()), jax.local_devices(backend="cpu")[0])
    jax.jit(lambda v: v + 1).lower(x).compile({key: value})
    return True
  except Exception:  # noqa: BLE001 - any refusal means "not supported here"
    return False


def compiler_options(cpu_conv_kernels: str, platform: Optional[str] = None) -> Optional[Dict[str, str]]:
  """XLA compiler options for a program compiled for `platform` (default: JAX's default backend).

  None (XLA's defaults) except on CPU with `cpu_conv_kernels='xla'`, 'onednn' or 'auto', where YNNPACK
  keeps matrix products and reductions and XLA's own kernels run the convolutions (with 'onednn', those the
  oneDNN form does not take: dilated ones, say). Where the installed jaxlib does not accept the
  option, a warning says so and XLA's defaults are used. Pass the result as `jax.jit(...,
  compiler_options=...)`; it takes precedence over the same field in `XLA_FLAGS` for that program.
  """
  validate_cpu_conv_kernels(cpu_conv_kernels)
  platform = jax.default_backend() if platform is None else platform
  if platform != "cpu" or cpu_conv_kernels == "ynnpack":
    return None
  if not _cpu_option_supported(_YNN_FUSION_OPTION, _DOT_AND_REDUCE):
    warnings.warn(f"This jaxlib ({jax.__version__}) does not accept the XLA option {_YNN_FUSION_OPTION}="
                  f"{_DOT_AND_REDUCE}; CPU convolutions use XLA's default kernels (set "
                  "config.cpu_conv_kernels = 'ynnpack' to silence this).", RuntimeWarning, stacklevel=2)
    return None
  return {_YNN_FUSION_OPTION: _DOT_AND_REDUCE}


def ynnpack_fusion_barrier(x: jax.Array) -> jax.Array:
  """The identity, lowered on CPU so that XLA cannot hand the computation of `x` to YNNPACK together with
  a reduction that reads it.

  Why: with `compiler_options` (YNNPACK keeps reductions) XLA starts a YNNPACK fusion at every reduction
  and takes in the chain of single-use producers YNNPACK supports, float32 convolutions included, which
  YNNPACK runs more slowly than XLA's own kernels. In training the batch statistics' reductions read every
  convolution's output a second time, which stops the chain; in an eval-mode network BatchNorm is
  elementwise, and a pool or a distiller's reduction over a feature map took in up to the whole last
  stage (7 of resnet32x4's 33 convolutions, 8 of vgg13's 10). On CPU `x` passes through
  `lax.reduce_precision` to its own exponent and mantissa widths: an exact identity (NaN, infinities,
  subnormals and signed zeros included) that XLA keeps, fuses into the loop that produces `x`, and YNNPACK
  does not take. Other platforms and non-float arrays get `x` itself.
  """
  if not jnp.issubdtype(x.dtype, jnp.floating):
    return x
  info = jnp.finfo(x.dtype)
  return lax.platform_dependent(
      x, cpu=lambda y: lax.reduce_precision(y, exponent_bits=info.nexp, mantissa_bits=info.nmant),
      default=lambda y: y)


@contextlib.contextmanager
def conv_backward(mode: str) -> Iterator[None]:
  """Within the block, calls of `conv_general_dilated` without a `mode` are traced with `mode`; the previous
  mode is restored on exit."""
  previous = _mode[0]
  set_conv_backward(mode)
  try:
    yield
  finally:
    _mode[0] = previous


# ----------------------------------------------------------------------------------------------------------
# The convolution with a matmul backward (NHWC input, HWIO kernel, explicit non-negative padding)

_NHWC = ("NHWC", "HWIO", "NHWC")


def _xla_conv(x: jax.Array, w: jax.Array, strides: Tuple[int, int], pads: Tuple[Tuple[int, int], ...],
              precision: Any) -> jax.Array:
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC, precision=precision)


def _taps(x_pad: jax.Array, kh: int, kw: int, out_hw: Tuple[int, int], strides: Tuple[int, int]):
  """For each kernel tap (i, j) the strided window of the padded input it multiplies: [N, H_out, W_out, C]."""
  n, _, _, c = x_pad.shape
  (ho, wo), (sh, sw) = out_hw, strides
  for i in range(kh):
    for j in range(kw):
      yield lax.slice(x_pad, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))


def _weight_grad(x: jax.Array, dy: jax.Array, w_shape: Tuple[int, ...], w_dtype: Any,
                 strides: Tuple[int, int], pads: Tuple[Tuple[int, int], ...], precision: Any) -> jax.Array:
  """dW[i, j] = Σ_{n,h,w} x_pad[n, s·h+i, s·w+j, :]ᵀ dy[n, h, w, :], one matmul per tap, float32 accumulation.

  Written as dW[i, j]ᵀ = dyᵀ · tap with dy transposed once to [C_out, N·H·W]: the CPU matmul wants its left
  operand contraction-minor, so this costs one transpose of dy instead of one of every tap (measured: the
  per-tap form `tapᵀ · dy` made XLA transpose all kh·kw windows and was slower than XLA's own gradient).
  """
  kh, kw, c_in, c_out = w_shape
  x_pad = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  acc = jnp.promote_types(jnp.float32, jnp.result_type(x.dtype, dy.dtype))
  dy_t = jnp.transpose(dy, (3, 0, 1, 2)).reshape(c_out, -1)
  per_tap = [lax.dot_general(dy_t, tap.reshape(-1, c_in), (((1,), (0,)), ((), ())), precision=precision,
                             preferred_element_type=acc)
             for tap in _taps(x_pad, kh, kw, dy.shape[1:3], strides)]
  return jnp.transpose(jnp.stack(per_tap), (0, 2, 1)).reshape(w_shape).astype(w_dtype)


def _strided_input_grad(w: jax.Array, dy: jax.Array, x_shape: Tuple[int, ...], x_dtype: Any,
                        strides: Tuple[int, int], pads: Tuple[Tuple[int, int], ...], precision: Any) -> jax.Array:
  """dx of a strided convolution: cols = dy·Wᵀ (every tap's contribution), then each tap added at its place.

  Tap (i, j) of output position (h, w) reads x_pad[s·h+i, s·w+j]; `lax.pad` with interior padding s-1 puts
  cols[..., i, j, :] exactly there, so the sum of the kh·kw padded pieces is dx_pad (one fused loop).
  """
  kh, kw, c_in, c_out = w.shape
  n, ho, wo, _ = dy.shape
  (sh, sw), (ph, pw) = strides, pads
  hp, wp = x_shape[1] + ph[0] + ph[1], x_shape[2] + pw[0] + pw[1]
  acc = jnp.promote_types(jnp.float32, jnp.result_type(w.dtype, dy.dtype))
  cols = lax.dot_general(dy, w.reshape(kh * kw * c_in, c_out), (((3,), (1,)), ((), ())), precision=precision,
                         preferred_element_type=acc).reshape(n, ho, wo, kh, kw, c_in)
  zero = jnp.zeros((), acc)
  dx_pad = None
  for i in range(kh):
    for j in range(kw):
      high_h = hp - (i + sh * (ho - 1) + 1)
      high_w = wp - (j + sw * (wo - 1) + 1)
      piece = lax.pad(cols[:, :, :, i, j, :], zero,
                      ((0, 0, 0), (i, high_h, sh - 1), (j, high_w, sw - 1), (0, 0, 0)))
      dx_pad = piece if dx_pad is None else dx_pad + piece
  dx = dx_pad[:, ph[0]:ph[0] + x_shape[1], pw[0]:pw[0] + x_shape[2], :]
  return dx.astype(x_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _matmul_backward_conv(x: jax.Array, w: jax.Array, strides: Tuple[int, int],
                          pads: Tuple[Tuple[int, int], ...], precision: Any) -> jax.Array:
  return _xla_conv(x, w, strides, pads, precision)


def _fwd(x, w, strides, pads, precision):
  return _xla_conv(x, w, strides, pads, precision), (x, w)


def _xla_input_grad(w: jax.Array, dy: jax.Array, x_shape: Tuple[int, ...], x_dtype: Any,
                    strides: Tuple[int, int], pads: Tuple[Tuple[int, int], ...], precision: Any) -> jax.Array:
  """XLA's own input gradient (at stride 1 a plain convolution of dy with the flipped kernel, which is fast)."""
  conv_of_x = lambda x_: _xla_conv(x_, w, strides, pads, precision)
  (dx,) = jax.linear_transpose(conv_of_x, jax.ShapeDtypeStruct(x_shape, x_dtype))(dy)
  return dx


def _matmul_bwd(strides, pads, precision, residuals, dy):
  x, w = residuals
  if strides == (1, 1):
    dx = _xla_input_grad(w, dy, x.shape, x.dtype, strides, pads, precision)
  else:
    dx = _strided_input_grad(w, dy, x.shape, x.dtype, strides, pads, precision)
  dw = _weight_grad(x, dy, w.shape, w.dtype, strides, pads, precision)
  return dx, dw


_matmul_backward_conv.defvjp(_fwd, _matmul_bwd)


# ----------------------------------------------------------------------------------------------------------
# The blocked backward: XLA's convolutions, the weight gradient over batch blocks, strided input gradients
# by output phase (see the module docstring for why)

# Positions (images x H x W) per weight-gradient block: one cache line each is 1 MiB, an L2 cache's worth.
_BLOCK_POSITIONS = 16384
# At most this many blocks, so a large image (one block per image at 128x128) does not unroll into
# hundreds of convolutions.
_MAX_BLOCKS = 16


def _block_rows(n: int, h: int, w: int) -> int:
  """Images per weight-gradient block for a batch of n images of h x w positions."""
  blocks = min(max(-(-n * h * w // _BLOCK_POSITIONS), 1), _MAX_BLOCKS, n)
  return -(-n // blocks)


# Images per identity product in `_batch_minor`: at most this many multiply-adds per element of x.
_IDENTITY_COLUMNS = 64


def _batch_minor(x: jax.Array) -> jax.Array:
  """x [N, H, W, C] as [H, W, C, N]: Σ_n x[n, h, w, c] · I[n, m], the product with the N x N identity.

  Why a product and not `jnp.transpose`: XLA fuses a transpose into the loop that computes x (BatchNorm,
  ReLU, residual sums), which then reads its inputs with a stride of H·W·C (module docstring); a matrix
  product's operand is computed and stored first. Exact for finite values (one product x·1, the rest
  zeros; -0 becomes +0); an Inf or NaN in image n makes that position NaN in every image of its chunk,
  where the weight gradient is not finite anyway. HIGHEST precision keeps float32 exact on TPUs. A block
  can hold up to 16384 / (H·W) images (1024 at 4x4), so the product runs over chunks of at most
  `_IDENTITY_COLUMNS` images, concatenated, and never costs more than 64 multiply-adds per element.
  """
  parts = []
  for start in range(0, x.shape[0], _IDENTITY_COLUMNS):
    chunk = x[start:start + _IDENTITY_COLUMNS]
    eye = jnp.eye(chunk.shape[0], dtype=x.dtype)
    parts.append(lax.dot_general(chunk, eye, (((0,), (0,)), ((), ())), precision=lax.Precision.HIGHEST))
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _blocked_weight_grad(x: jax.Array, dy: jax.Array, w_shape: Tuple[int, ...], w_dtype: Any,
                         strides: Tuple[int, int], pads: Tuple[Tuple[int, int], ...], precision: Any) -> jax.Array:
  """dW = Σ over batch blocks b of XLA's weight-gradient convolution of (x_b, dy_b), summed in float32.

  Each block is the convolution jax's own VJP writes for the weight gradient, x with its batch as the
  features and its channels as the batch, dy as the kernel ("IHWO", dilated by the stride), giving
  dW[i, j, c_in, c_out] = Σ_{n,h,w} x_pad[n, s·h+i, s·w+j, c_in] · dy[n, h, w, c_out]; x_b enters it as
  `_batch_minor(x_b)` ([H, W, C_in, N_b], spec "HWNC"). The high padding is trimmed so the output has
  exactly kh x kw taps (rows of x_pad no tap reads are dropped).
  """
  kh, kw = w_shape[:2]
  n, height, width = x.shape[:3]
  (sh, sw), ((lo_h, _), (lo_w, _)) = strides, pads
  ho, wo = dy.shape[1:3]
  trimmed = ((lo_h, kh + sh * (ho - 1) - height - lo_h), (lo_w, kw + sw * (wo - 1) - width - lo_w))
  acc = jnp.promote_types(jnp.float32, jnp.result_type(x.dtype, dy.dtype))
  rows = _block_rows(n, height, width)
  total = None
  for start in range(0, n, rows):
    part = lax.conv_general_dilated(_batch_minor(x[start:start + rows]), dy[start:start + rows], (1, 1),
                                    trimmed, rhs_dilation=strides, dimension_numbers=("HWNC", "IHWO", "HWNC"),
                                    precision=precision, preferred_element_type=acc)
    total = part if total is None else total + part
  return total.astype(w_dtype)


def _phase_input_grad(w: jax.Array, dy: jax.Array, x_shape: Tuple[int, ...], x_dtype: Any,
                      strides: Tuple[int, int], pads: Tuple[Tuple[int, int], ...], precision: Any) -> jax.Array:
  """dx of a strided convolution as s_h·s_w stride-1 convolutions, one per output phase, interleaved.

  Padded-input row r = s·a + p receives dy[a - m]·w[p + s·m] for every m with a tap there, so phase p of
  dx_pad is the full correlation of dy with the flipped sub-kernel w[p::s] (input and output channels
  swapped), padded low by its length − 1 and high up to the phase's A = ceil(H_pad / s) rows. A phase
  with no taps (kernel smaller than the stride) is zero. Stacking the phases as [N, A, s_h, B, s_w, C]
  and reshaping interleaves them; the padding rows are then cut off.
  """
  kh, kw, c_in, _ = w.shape
  n, ho, wo, _ = dy.shape
  (sh, sw), ((lo_h, hi_h), (lo_w, hi_w)) = strides, pads
  a_len, b_len = -(-(x_shape[1] + lo_h + hi_h) // sh), -(-(x_shape[2] + lo_w + hi_w) // sw)
  phase_rows = []
  for p in range(sh):
    phases = []
    for q in range(sw):
      taps = w[p::sh, q::sw]
      kp, kq = taps.shape[:2]
      if kp == 0 or kq == 0:
        phases.append(jnp.zeros((n, a_len, b_len, c_in), x_dtype))
        continue
      flipped = jnp.transpose(taps[::-1, ::-1], (0, 1, 3, 2))
      phases.append(lax.conv_general_dilated(dy, flipped, (1, 1), ((kp - 1, a_len - ho), (kq - 1, b_len - wo)),
                                             dimension_numbers=_NHWC, precision=precision).astype(x_dtype))
    phase_rows.append(jnp.stack(phases, axis=3))                        # [N, A, B, s_w, C]
  dx_pad = jnp.stack(phase_rows, axis=2).reshape(n, a_len * sh, b_len * sw, c_in)
  return dx_pad[:, lo_h:lo_h + x_shape[1], lo_w:lo_w + x_shape[2], :]


def _blocked_bwd(strides, pads, precision, residuals, dy):
  x, w = residuals
  input_grad = _xla_input_grad if strides == (1, 1) else _phase_input_grad
  dx = input_grad(w, dy, x.shape, x.dtype, strides, pads, precision)
  dw = _blocked_weight_grad(x, dy, w.shape, w.dtype, strides, pads, precision)
  return dx, dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _blocked_backward_conv(x: jax.Array, w: jax.Array, strides: Tuple[int, int],
                           pads: Tuple[Tuple[int, int], ...], precision: Any) -> jax.Array:
  return _xla_conv(x, w, strides, pads, precision)


_blocked_backward_conv.defvjp(_fwd, _blocked_bwd)


# ----------------------------------------------------------------------------------------------------------
# Depthwise convolutions (MobileNetV2, ShuffleNet) as shifted multiply-adds

def _depthwise_correlate(x_pad: jax.Array, w: jax.Array, strides: Tuple[int, int], out_hw: Tuple[int, int],
                         acc: Any) -> jax.Array:
  """y[n, h, w, c] = Σ_{i,j} x_pad[n, s·h+i, s·w+j, c] · w[i, j, 0, c], accumulated in `acc`."""
  kh, kw = w.shape[:2]
  out = None
  for t, tap in enumerate(_taps(x_pad, kh, kw, out_hw, strides)):
    term = tap.astype(acc) * w[t // kw, t % kw, 0].astype(acc)
    out = term if out is None else out + term
  return out


def _depthwise_out_hw(x_shape, w_shape, strides, pads) -> Tuple[int, int]:
  return tuple((x_shape[1 + d] + pads[d][0] + pads[d][1] - w_shape[d]) // strides[d] + 1 for d in range(2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_conv(x: jax.Array, w: jax.Array, strides: Tuple[int, int],
                    pads: Tuple[Tuple[int, int], ...]) -> jax.Array:
  """A depthwise convolution (w: [kh, kw, 1, C], one filter per channel) as kh·kw shifted multiply-adds.

  Why: XLA's CPU backend runs grouped convolutions, forward and backward, on a generic path far slower than
  this form (docs/benchmarks.md). Written with slices and multiplies, the whole forward (padding included)
  fuses into one loop, as does the input gradient; the weight gradient is one variadic reduction of the kh·kw
  products, over (h, w) and then over the batch (two levels keep the float32 sum within 1e-6 of float64: 7e-7
  against lax's 4.5e-6 for 65536 terms). Products are accumulated in float32 and rounded once.
  """
  out_hw = _depthwise_out_hw(x.shape, w.shape, strides, pads)
  acc = jnp.promote_types(jnp.float32, jnp.result_type(x.dtype, w.dtype))
  x_pad = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  return _depthwise_correlate(x_pad, w, strides, out_hw, acc).astype(jnp.result_type(x.dtype, w.dtype))


def _depthwise_fwd(x, w, strides, pads):
  return _depthwise_conv(x, w, strides, pads), (x, w)


def _depthwise_bwd(strides, pads, residuals, dy):
  """dx: dy dilated by the stride and padded by k − 1 − lo, correlated with the flipped filters (stride 1).
  dW[i, j, 0, c] = Σ_{n,h,w} x_pad[n, s·h+i, s·w+j, c] · dy[n, h, w, c]."""
  x, w = residuals
  kh, kw = w.shape[:2]
  acc = jnp.promote_types(jnp.float32, jnp.result_type(x.dtype, dy.dtype))
  ho, wo = dy.shape[1:3]
  dilated = []
  for d, (size, k, out) in enumerate(zip(x.shape[1:3], (kh, kw), (ho, wo))):
    lo = k - 1 - pads[d][0]
    dilated.append((lo, size + k - 1 - lo - (strides[d] * (out - 1) + 1), strides[d] - 1))
  dy_pad = lax.pad(dy, jnp.zeros((), dy.dtype), ((0, 0, 0), dilated[0], dilated[1], (0, 0, 0)))
  dx = _depthwise_correlate(dy_pad, w[::-1, ::-1], (1, 1), x.shape[1:3], acc).astype(x.dtype)
  x_pad = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  products = [tap.astype(acc) * dy.astype(acc) for tap in _taps(x_pad, kh, kw, (ho, wo), strides)]
  zeros = [jnp.zeros((), acc)] * len(products)
  per_image = lax.reduce(products, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (1, 2))
  dw = jnp.stack([jnp.sum(p, axis=0) for p in per_image]).reshape(w.shape).astype(w.dtype)
  return dx, dw


_depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


# Grouped convolutions with at most this many groups (ShuffleNetV1's 1x1 convolutions: 2-8) are run as that
# many ordinary convolutions; more groups (other than depthwise) stay XLA's grouped convolution.
_MAX_SPLIT_GROUPS = 16


def _split_groups(conv: Any, x: jax.Array, w: jax.Array, groups: int) -> jax.Array:
  """A grouped convolution as `groups` ordinary ones: group g maps input channels [g·C_in/G, (g+1)·C_in/G)
  through kernel columns [g·C_out/G, (g+1)·C_out/G), and the outputs are concatenated in that order.

  Why: XLA's CPU backend differentiates a grouped convolution on a generic path far slower than g ordinary
  ones (docs/benchmarks.md); the forward values are identical.
  """
  if groups == 1:
    return conv(x, w)
  c_in, c_out = x.shape[-1] // groups, w.shape[-1] // groups
  return jnp.concatenate([conv(x[..., g * c_in:(g + 1) * c_in], w[..., g * c_out:(g + 1) * c_out])
                          for g in range(groups)], axis=-1)


# ----------------------------------------------------------------------------------------------------------
# The drop-in replacement for lax.conv_general_dilated (the `conv_general_dilated` field of flax's nn.Conv)


def _is_nhwc_hwio(dimension_numbers: Any) -> bool:
  if dimension_numbers is None:  # lax's default is NCHW/OIHW
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return (tuple(dimension_numbers.lhs_spec) == (0, 3, 1, 2)
            and tuple(dimension_numbers.rhs_spec) == (3, 2, 0, 1)
            and tuple(dimension_numbers.out_spec) == (0, 3, 1, 2))
  return tuple(dimension_numbers) == _NHWC


def _explicit_pads(padding: Padding, x_shape: Sequence[int], w_shape: Sequence[int],
                   strides: Tuple[int, int]) -> Optional[Tuple[Tuple[int, int], ...]]:
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(tuple(x_shape[1:3]), tuple(w_shape[:2]), strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  if len(pads) != 2 or any(lo < 0 or hi < 0 for lo, hi in pads):
    return None
  return pads


def _all_ones(values: Optional[Sequence[int]]) -> bool:
  return values is None or all(int(v) == 1 for v in values)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Padding,
                         lhs_dilation: Optional[Sequence[int]] = None,
                         rhs_dilation: Optional[Sequence[int]] = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None, mode: Optional[str] = None) -> jax.Array:
  """`lax.conv_general_dilated` with the same signature and values; its backward pass depends on `mode`.

  `mode` (models pass their `kd_jax.backends.Kernels`' mode; a direct call without one uses
  `get_conv_backward()`, read at trace time): 'xla' calls `lax.conv_general_dilated` as is; 'matmul' computes
  the weight gradient (and, for strides > 1, the input gradient) with matmuls; 'blocked' keeps XLA's
  convolutions, the weight gradient over batch blocks and strided input gradients by output phase; 'auto' uses
  'blocked' when lowered for CPU and 'xla' on other platforms, AUTO_MATMUL ('auto-matmul') uses 'matmul' on
  CPU and 'xla' elsewhere, and AUTO_ONEDNN ('auto-onednn') oneDNN on CPU (the blocked backward for operands it
  does not take, `onednn.supports`) and 'xla' elsewhere. Depthwise convolutions (one filter per channel) are
  shifted multiply-adds (`_depthwise_conv`) and convolutions of up to `_MAX_SPLIT_GROUPS` groups are split
  into ordinary ones, wherever the mode would use a CPU form. Unsupported cases (see the module docstring) use
  `lax.conv_general_dilated` in every mode.
  """
  mode = _mode[0] if mode is None else validate_conv_backward(mode, resolved=True)
  plain = functools.partial(lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation,
                            rhs_dilation, dimension_numbers, feature_group_count, batch_group_count, precision,
                            preferred_element_type)
  groups = feature_group_count
  depthwise = (lhs.ndim == 4 and rhs.ndim == 4 and groups > 1 and groups == lhs.shape[-1] == rhs.shape[-1]
               and rhs.shape[2] == 1)
  supported = (lhs.ndim == 4 and rhs.ndim == 4 and _is_nhwc_hwio(dimension_numbers)
               and (groups <= _MAX_SPLIT_GROUPS or depthwise) and batch_group_count == 1
               and preferred_element_type is None and _all_ones(lhs_dilation) and _all_ones(rhs_dilation)
               and len(window_strides) == 2)
  if mode == "xla" or not supported:
    return plain()
  strides = (int(window_strides[0]), int(window_strides[1]))
  pads = _explicit_pads(padding, lhs.shape, rhs.shape, strides)
  if pads is None:
    return plain()
  xla = lambda x, w: lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC,
                                              feature_group_count=groups, precision=precision)
  if depthwise:
    cpu = lambda x, w: _depthwise_conv(x, w, strides, pads)
  elif mode == AUTO_ONEDNN and onednn.supports(lhs, rhs):
    cpu = lambda x, w: _split_groups(lambda x_, w_: onednn.conv(x_, w_, strides, pads), x, w, groups)
  else:
    single = _matmul_backward_conv if mode in ("matmul", AUTO_MATMUL) else _blocked_backward_conv
    cpu = lambda x, w: _split_groups(lambda x_, w_: single(x_, w_, strides, pads, precision), x, w, groups)
  if mode in ("matmul", "blocked"):
    return cpu(lhs, rhs)
  return lax.platform_dependent(lhs, rhs, cpu=cpu, default=xla)
