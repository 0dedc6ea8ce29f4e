"""oneDNN's CPU convolutions inside jitted XLA programs, for `config.cpu_conv_kernels='onednn'`.

Why: XLA's own CPU convolution kernels are the largest part of a CIFAR-sized KD step on CPU, and oneDNN's
convolutions (the library PyTorch uses on CPUs) are faster than XLA's CPU kernels, its weight gradients
much faster (docs/benchmarks.md). XLA calls C++ functions through its FFI: `onednn_conv.cc`
beside this file defines three handlers (forward, input gradient, weight gradient), and `conv` below binds
them into one differentiable function with `jax.custom_vjp`:

    y  = conv(x, w):  y[n, h, w, o] = Σ_{i,j,c} x_pad[n, s_h·h + i, s_w·w + j, c] · w[i, j, c, o]
    dx = conv_transpose(dy, w),   dW[i, j, c, o] = Σ_{n,h,w} x_pad[n, s_h·h + i, s_w·w + j, c] · dy[n, h, w, o]

the same float32 sums as `lax.conv_general_dilated` (NHWC input, HWIO kernel, explicit padding) and its
gradients, added in another order (float32 reassociation; `tests/test_onednn.py` checks values and both
gradients against XLA's).

Nothing is downloaded: the handlers are compiled once, on first use, with the machine's C++ compiler
against the oneDNN the system has (Debian/Ubuntu: `apt-get install libdnnl-dev`; elsewhere set
`DNNL_ROOT` to a oneDNN install with include/ and lib/) and jaxlib's FFI headers; the library is cached
under `$KD_JAX_CACHE_DIR` (default `~/.cache/kd_jax`), keyed by a hash of the source, the jaxlib version
and the compile command, and written atomically so that concurrent processes may build it at once.

Several devices (a data-parallel step on forced CPU devices): each handler is wrapped in a
`custom_partitioning` rule, so XLA's SPMD partitioner gives each device its own rows of the batch and sums
the weight gradient over the devices, instead of gathering the whole batch onto every device (what it does
with a custom call it knows nothing about).

bfloat16 (`config.compute_dtype='bfloat16'`): the same handlers take bfloat16 operands, accumulate in
float32 and round each result once, the weight gradient included; on CPUs with AMX (Intel Xeon since
Sapphire Rapids) oneDNN runs them on its AMX kernels (docs/benchmarks.md).

Limits: float32 and bfloat16 only, one feature group (the callers split grouped convolutions), no dilation, first-order
gradients (a custom VJP whose backward calls the handlers is not differentiable again), CPU only. oneDNN
runs its own OpenMP threads, one per core unless `OMP_NUM_THREADS` says otherwise.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from kd_jax.errors import KDJaxError

_SOURCE = Path(__file__).with_name("onednn_conv.cc")
_TARGETS = ("kd_jax_onednn_conv_fwd", "kd_jax_onednn_conv_bwd_data", "kd_jax_onednn_conv_bwd_weights")
_HOW_TO = ("Install oneDNN's headers and library (Debian/Ubuntu: `apt-get install libdnnl-dev`; or set "
           "DNNL_ROOT to a oneDNN install with include/ and lib/) and a C++17 compiler (`g++`, or set CXX), or "
           "use config.cpu_conv_kernels='xla'.")


def cache_dir() -> Path:
  return Path(os.environ.get("KD_JAX_CACHE_DIR") or Path.home() / ".cache" / "kd_jax")


def _compile_command(output: str) -> list:
  command = [os.environ.get("CXX", "g++"), "-O2", "-std=c++17", "-shared", "-fPIC",
             f"-I{jax.ffi.include_dir()}"]
  root = os.environ.get("DNNL_ROOT")
  if root:
    lib = next((str(Path(root) / d) for d in ("lib", "lib64") if (Path(root) / d).is_dir()), str(Path(root) / "lib"))
    command += [f"-I{Path(root) / 'include'}", f"-L{lib}", f"-Wl,-rpath,{lib}"]
  return command + [str(_SOURCE), "-ldnnl", "-o", output]


def _library_path() -> Path:
  key = hashlib.sha256(_SOURCE.read_bytes())
  key.update(jaxlib.__version__.encode())
  key.update(" ".join(_compile_command("OUT")).encode())
  return cache_dir() / "onednn" / f"kd_jax_onednn_{key.hexdigest()[:16]}.so"


def _build(path: Path) -> None:
  compiler = _compile_command("OUT")[0]
  if shutil.which(compiler) is None:
    raise KDJaxError(f"cpu_conv_kernels='onednn' needs a C++ compiler to build kd_jax's oneDNN convolutions "
                     f"once, and {compiler!r} was not found. {_HOW_TO}")
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
  os.close(fd)
  try:
    done = subprocess.run(_compile_command(tmp), capture_output=True, text=True)
    if done.returncode != 0:
      tail = "\n".join(done.stderr.strip().splitlines()[-12:])
      raise KDJaxError(f"Building kd_jax's oneDNN convolutions failed ({' '.join(_compile_command(tmp))}):\n"
                       f"{tail}\n{_HOW_TO}")
    os.replace(tmp, path)  # atomic: a concurrent build replaces an identical file
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


@functools.lru_cache(maxsize=None)
def _load() -> Tuple[ctypes.CDLL, str]:
  path = _library_path()
  if not path.exists():
    _build(path)
  lib = ctypes.CDLL(str(path))
  for name in _TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
  major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
  lib.kd_jax_onednn_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
  return lib, f"{major.value}.{minor.value}.{patch.value}"


def ensure_available() -> str:
  """Builds (once) and registers the oneDNN handlers; returns oneDNN's version. KDJaxError if it cannot."""
  return _load()[1]


@functools.lru_cache(maxsize=None)
def why_unavailable() -> Optional[str]:
  """None if `ensure_available()` succeeds on this machine (it builds the library if needed), else why not."""
  try:
    ensure_available()
    return None
  except (KDJaxError, OSError) as e:
    return str(e)


def available() -> bool:
  """Whether kd_jax's oneDNN convolutions can be used here (`why_unavailable()` says why not)."""
  return why_unavailable() is None


DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def supports(x: jax.Array, w: jax.Array) -> bool:
  """Whether `conv` takes these operands: rank-4 input and kernel, both float32 or both bfloat16."""
  return x.ndim == 4 and w.ndim == 4 and x.dtype == w.dtype and x.dtype in DTYPES


def _attrs(strides: Tuple[int, int], pads: Tuple[Tuple[int, int], ...]) -> dict:
  return {"strides": np.asarray(strides, np.int64),
          "padding": np.asarray([pads[0][0], pads[0][1], pads[1][0], pads[1][1]], np.int64)}


def _call(target: str, shape: Sequence[int], a: jax.Array, b: jax.Array, strides, pads) -> jax.Array:
  out = jax.ShapeDtypeStruct(tuple(shape), a.dtype)
  return jax.ffi.ffi_call(target, out, vmap_method="sequential")(a, b, **_attrs(strides, pads))


@functools.lru_cache(maxsize=None)
def _sharded_op(target: str):
  """`target` as an op that XLA's SPMD partitioner splits along the batch: each device runs oneDNN on its
  own rows, and the weight gradient's per-device sums are added with a psum over the batch's mesh axes.

  Without it the partitioner knows nothing of the custom call and gathers the whole batch onto every
  device (correct values, but every device computes every row). Operand dimensions other than the batch,
  and the kernel, are replicated; a batch that does not divide evenly over its axes is replicated too.
  The op's static `shape` is the whole result's; a device's result has its own rows of it (all of the
  weight gradient).
  """
  weight_grad = target == _TARGETS[2]

  def call(a, b, strides, pads, shape):
    return _call(target, shape if weight_grad else (a.shape[0], *shape[1:]), a, b, strides, pads)

  op = custom_partitioning(call, static_argnums=(2, 3, 4))

  def batch_axes(mesh, arg_shapes):
    shape, sharding = arg_shapes[0].shape, arg_shapes[0].sharding
    spec = getattr(sharding, "spec", ())
    axes = spec[0] if len(spec) else None
    if axes is None:
      return None
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    shards = int(np.prod([mesh.shape[name] for name in names]))
    return axes if shards > 1 and shape[0] % shards == 0 else None

  def result_sharding(mesh, axes):
    return NamedSharding(mesh, P() if weight_grad else P(axes))

  def infer(strides, pads, shape, mesh, arg_shapes, result_shape):
    return result_sharding(mesh, batch_axes(mesh, arg_shapes))

  def partition(strides, pads, shape, mesh, arg_shapes, result_shape):
    axes = batch_axes(mesh, arg_shapes)
    rows = NamedSharding(mesh, P(axes))
    second = rows if weight_grad else NamedSharding(mesh, P())

    def lower(a, b):
      out = call(a, b, strides, pads, shape)
      return jax.lax.psum(out, axes) if weight_grad and axes is not None else out

    return mesh, lower, result_sharding(mesh, axes), (rows, second)

  others = tuple("abcdefghijkl")
  if weight_grad:  # x [n a b c], dy [n d e f] -> dw [g h i j], summed over n
    rule, kwargs = "n a b c, n d e f -> g h i j", {"reduction_factors": ("n",)}
  else:  # x or dy [n a b c], w [d e f g] -> [n h i j]
    rule, kwargs = "n a b c, d e f g -> n h i j", {}
  op.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                   need_replication_factors=tuple(f for f in others if f in rule), **kwargs)
  return op


def _out_hw(x_shape, w_shape, strides, pads) -> Tuple[int, int]:
  return tuple((x_shape[1 + d] + pads[d][0] + pads[d][1] - w_shape[d]) // strides[d] + 1 for d in range(2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, w: jax.Array, strides: Tuple[int, int], pads: Tuple[Tuple[int, int], ...]) -> jax.Array:
  """`lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))` in oneDNN.

  x: [N, H, W, C_in]; w: [kh, kw, C_in, C_out], both float32 or both bfloat16 (`supports`); pads: ((top,
  bottom), (left, right)), each ≥ 0. Builds and registers the handlers on first use (`ensure_available`).
  bfloat16: products accumulated in float32 and each result rounded once (the weight gradient too).
  """
  ensure_available()  # before the program that calls them is compiled; cached after the first call
  strides, pads = tuple(strides), tuple(map(tuple, pads))
  shape = (x.shape[0], *_out_hw(x.shape, w.shape, strides, pads), w.shape[3])
  return _sharded_op(_TARGETS[0])(x, w, strides, pads, shape)


def _conv_fwd(x, w, strides, pads):
  return conv(x, w, strides, pads), (x, w)


def _conv_bwd(strides, pads, residuals, dy):
  x, w = residuals
  dx = _sharded_op(_TARGETS[1])(dy, w, strides, pads, tuple(x.shape))
  dw = _sharded_op(_TARGETS[2])(x, dy, strides, pads, tuple(w.shape))
  return dx, dw


conv.defvjp(_conv_fwd, _conv_bwd)
