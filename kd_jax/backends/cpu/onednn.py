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

Nothing is downloaded at run time: the handlers are compiled once, on first use, with the machine's C++
compiler against jaxlib's FFI headers and a oneDNN found in this order (`locate`):

1. `DNNL_ROOT`, if set: a oneDNN install with include/ and lib/ (or lib64/);
2. the package registry's oneDNN 3.x wheels in this Python (`_WHEELS`): Intel's CPU-only build,
   `pip install onednn-devel-cpu-gomp` (oneDNN 3.2 with GNU OpenMP; it brings `onednn-cpu-gomp`, the
   library; kd_jax's `cpu` and `test` extras), or the newer `onednn` + `onednn-devel` where theirs is not
   a SYCL build. Library and headers are found through the wheels' own file lists (`importlib.metadata`),
   wherever pip put them (a venv, `--user`, a conda prefix);
3. the system's (Debian/Ubuntu: `apt-get install libdnnl-dev`, oneDNN 2.x), on the compiler's default paths.

The library is linked with an RPATH to the directory oneDNN was found in (old-style DT_RPATH, which the
dynamic loader also applies to libdnnl's own dependencies, e.g. the TBB or Intel OpenMP runtimes that
sibling wheels put beside it), so no LD_LIBRARY_PATH is needed. It is cached under
`$KD_JAX_CACHE_DIR` (default `~/.cache/kd_jax`), keyed by a hash of the source, the jaxlib version, the
oneDNN found and the compile command, and written atomically so that concurrent processes may build it at
once. The source compiles against oneDNN 2.x and 3.x (`DNNL_VERSION_MAJOR`).

Several devices (a data-parallel step on forced CPU devices): each handler is wrapped in a
`custom_partitioning` rule, so XLA's SPMD partitioner gives each device its own rows of the batch and sums
the weight gradient over the devices, instead of gathering the whole batch onto every device (what it does
with a custom call it knows nothing about).

bfloat16 (`config.compute_dtype='bfloat16'`): the same handlers take bfloat16 operands, accumulate in
float32 and round each result once, the weight gradient included, where this oneDNN has bfloat16
convolutions on the CPU (`bf16_supported`: oneDNN 3.x needs AVX-512 or AVX2-VNNI-2; elsewhere bfloat16
convolutions stay XLA's); on CPUs with AMX (Intel Xeon since
Sapphire Rapids) oneDNN runs them on its AMX kernels (docs/benchmarks.md).

Limits: float32 and bfloat16 only, one feature group (the callers split grouped convolutions), no dilation, first-order
gradients (a custom VJP whose backward calls the handlers is not differentiable again), CPU only. oneDNN
runs its own threads, one per core (OpenMP in Debian's build and the gomp wheel: `OMP_NUM_THREADS` limits
them).

`config.cpu_conv_kernels='auto'` (the default) uses these handlers only where they build and pass
`self_check` (once per process): forward and both gradients of a stride-1 and a stride-2 convolution
against `lax.conv_general_dilated`; anywhere else it keeps XLA's kernels (`kd_jax.backends.cpu.conv.
auto_cpu_conv_kernels`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Callable, List, Optional, Sequence, Tuple

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
_HOW_TO = ("Install oneDNN's library and headers: `pip install onednn-devel-cpu-gomp` (kd_jax's extra: "
           "`pip install -e '.[cpu]'`), or Debian/Ubuntu's `apt-get install libdnnl-dev`, or set DNNL_ROOT to a "
           "oneDNN install with include/ and lib/; and a C++17 compiler (`g++`, or set CXX). Or use "
           "config.cpu_conv_kernels='xla'.")


def cache_dir() -> Path:
  return Path(os.environ.get("KD_JAX_CACHE_DIR") or Path.home() / ".cache" / "kd_jax")


@dataclasses.dataclass(frozen=True)
class Install:
  """A oneDNN to build against: `origin` in words (for logs and errors) and its include and library
  directories (None: the compiler's default paths)."""

  origin: str
  include: Optional[Path] = None
  lib: Optional[Path] = None
  note: str = ""  # why installed oneDNN wheels were passed over, for a build error's message


def _wheel_file(dist: metadata.Distribution, match: Callable[[PurePosixPath], bool]) -> Optional[Path]:
  """The first file of an installed wheel that `match`es and exists. The oneDNN wheels list their files
  relative to site-packages and outside it (`../../libdnnl.so`, `../../../include/...`: sys.prefix's
  lib/ and include/), hence `locate_file` and `resolve`."""
  for entry in dist.files or ():
    if match(PurePosixPath(str(entry))):
      path = Path(dist.locate_file(entry)).resolve()
      if path.is_file():
        return path
  return None


# The registry's oneDNN wheels, (library, headers), in the order they are tried. Intel's CPU-only builds
# (oneDNN 3.2, 2023.2.0; GNU OpenMP, Intel OpenMP or TBB threads) come first: the newer `onednn` wheels
# (2025+) are SYCL builds whose CPU engine needs a SYCL CPU device (an OpenCL CPU runtime reached through
# the Unified Runtime's OpenCL adapter, which those wheels do not bring), so they are used only where their
# headers say their CPU runtime is not SYCL.
_WHEELS = (("onednn-cpu-gomp", "onednn-devel-cpu-gomp"), ("onednn-cpu-iomp", "onednn-devel-cpu-iomp"),
           ("onednn-cpu-tbb", "onednn-devel-cpu-tbb"), ("onednn", "onednn-devel"))


def _sycl_cpu_runtime(include: Path) -> bool:
  """Whether the oneDNN whose headers are in `include` runs its CPU engine on SYCL (`dnnl_config.h`)."""
  try:
    config = (include / "oneapi" / "dnnl" / "dnnl_config.h").read_text()
  except OSError:
    return False
  return "#define DNNL_CPU_RUNTIME DNNL_RUNTIME_SYCL" in config


def _pip_installs() -> Tuple[Optional[Install], List[str]]:
  """The first usable pair of oneDNN wheels in this Python (library and headers both installed), and why
  others that are installed were passed over."""
  skipped = []
  for library_name, headers_name in _WHEELS:
    try:
      library, headers = metadata.distribution(library_name), metadata.distribution(headers_name)
    except metadata.PackageNotFoundError:
      continue
    lib = _wheel_file(library, lambda p: p.name.startswith("libdnnl.so"))
    header = _wheel_file(headers, lambda p: p.as_posix().endswith("oneapi/dnnl/dnnl.hpp"))
    if lib is None or header is None:
      continue
    origin = f"pip {library_name} {library.version}"
    if _sycl_cpu_runtime(header.parents[2]):
      skipped.append(f"{origin} was passed over: its CPU engine runs on SYCL and needs a SYCL CPU device "
                     "(`pip install onednn-devel-cpu-gomp` is a CPU-only oneDNN)")
      continue
    return Install(origin, header.parents[2], lib.parent), skipped
  return None, skipped


def locate() -> Install:
  """The oneDNN the handlers are built against: `DNNL_ROOT` if set, else a pair of pip wheels, else the
  system's (the module docstring says why in this order)."""
  root = os.environ.get("DNNL_ROOT")
  if root:
    lib = next((Path(root) / d for d in ("lib", "lib64") if (Path(root) / d).is_dir()), Path(root) / "lib")
    return Install(f"DNNL_ROOT={root}", Path(root) / "include", lib)
  found, skipped = _pip_installs()
  return found or Install("the system's", note="; ".join(skipped))


def _compile_command(output: str, install: Optional[Install] = None) -> list:
  install = locate() if install is None else install
  command = [os.environ.get("CXX", "g++"), "-O2", "-std=c++17", "-shared", "-fPIC",
             f"-I{jax.ffi.include_dir()}"]
  if install.include is not None:
    command.append(f"-I{install.include}")
  if install.lib is not None:
    # DT_RPATH rather than DT_RUNPATH: the loader searches it for libdnnl's own dependencies too.
    command += [f"-L{install.lib}", f"-Wl,--disable-new-dtags,-rpath,{install.lib}"]
  return command + [str(_SOURCE), "-ldnnl", "-o", output]


def _library_path(install: Optional[Install] = None) -> Path:
  install = locate() if install is None else install
  key = hashlib.sha256(_SOURCE.read_bytes())
  key.update(jaxlib.__version__.encode())
  key.update(install.origin.encode())
  key.update(" ".join(_compile_command("OUT", install)).encode())
  return cache_dir() / "onednn" / f"kd_jax_onednn_{key.hexdigest()[:16]}.so"


def _build(path: Path, install: Optional[Install] = None) -> None:
  install = locate() if install is None else install
  compiler = _compile_command("OUT", install)[0]
  if shutil.which(compiler) is None:
    raise KDJaxError(f"cpu_conv_kernels='onednn' needs a C++ compiler to build kd_jax's oneDNN convolutions "
                     f"once, and {compiler!r} was not found. {_HOW_TO}")
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
  os.close(fd)
  try:
    command = _compile_command(tmp, install)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
      tail = "\n".join(done.stderr.strip().splitlines()[-12:])
      note = f" ({install.note})" if install.note else ""
      # The first line says what happened (a run's log shows only it); the command and its errors follow.
      what = ("oneDNN was not found (no oneDNN headers where the compiler looks)" if "dnnl.hpp" in done.stderr
              and "No such file" in done.stderr else "Building kd_jax's oneDNN convolutions failed")
      raise KDJaxError(f"{what}; tried {install.origin} oneDNN{note}.\n{' '.join(command)}\n{tail}\n{_HOW_TO}")
    os.replace(tmp, path)  # atomic: a concurrent build replaces an identical file
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


@functools.lru_cache(maxsize=None)
def _load() -> Tuple[ctypes.CDLL, str, str, bool]:
  """(the library, oneDNN's version, where that oneDNN came from, whether it has bfloat16 convolutions on
  this CPU), building the library on first use."""
  install = locate()
  path = _library_path(install)
  if not path.exists():
    _build(path, install)
  try:
    lib = ctypes.CDLL(str(path))
  except OSError as e:  # e.g. a oneDNN that was uninstalled after the build
    raise KDJaxError(f"Loading kd_jax's oneDNN convolutions ({path}, built against {install.origin} oneDNN) "
                     f"failed: {e}. {_HOW_TO}") from e
  for name in _TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
  major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
  lib.kd_jax_onednn_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
  return (lib, f"{major.value}.{minor.value}.{patch.value}", install.origin,
          bool(lib.kd_jax_onednn_bf16_supported()))


def ensure_available() -> str:
  """Builds (once) and registers the oneDNN handlers; returns oneDNN's version. KDJaxError if it cannot."""
  return _load()[1]


def describe() -> str:
  """oneDNN's version and where it came from, e.g. 'oneDNN 3.13.2 (pip onednn 2026.1.0)'; builds and
  registers the handlers like `ensure_available` (KDJaxError if it cannot)."""
  _, version, origin, _ = _load()
  return f"oneDNN {version} ({origin})"


@functools.lru_cache(maxsize=None)
def why_unavailable() -> Optional[str]:
  """None if `ensure_available()` succeeds on this machine (it builds the library if needed), else why not."""
  try:
    ensure_available()
    return None
  except (KDJaxError, OSError) as e:
    return str(e)


# Self-check cases: (batch, height, width, c_in, c_out, kernel, stride, padding). A stride-2 convolution
# with asymmetric padding and odd sizes (the cases a wrong stride, padding or kernel layout gets wrong) and
# a stride-1 one with a 3-channel input (a stem).
_CHECKS = ((2, 9, 7, 8, 16, 3, 2, ((0, 1), (1, 0))), (2, 8, 8, 3, 8, 3, 1, ((1, 1), (1, 1))))
# Relative error allowed against XLA: float32 sums in another order are ~1e-6 of the result's scale; any
# wrong formula is O(1).
_CHECK_TOLERANCE = 1e-4


@functools.lru_cache(maxsize=None)
def self_check() -> Optional[str]:
  """None if the handlers build, load and compute what XLA computes here, else what went wrong.

  Runs (once per process) the forward pass and both gradients of `_CHECKS` through `conv` and through
  `lax.conv_general_dilated`, jitted on the CPU backend, and compares them within `_CHECK_TOLERANCE` of
  each result's largest magnitude. Catches a oneDNN that builds but cannot run here (a SYCL build without a
  SYCL CPU device: "could not create an engine") as well as a wrong result.
  """
  try:
    ensure_available()
  except (KDJaxError, OSError) as e:
    return str(e)
  cpu = jax.local_devices(backend="cpu")[0]
  try:
    for n, h, w_, c_in, c_out, k, s, pads in _CHECKS:
      rng = np.random.default_rng(n * h + k * s)
      x = jax.device_put(rng.standard_normal((n, h, w_, c_in), np.float32), cpu)
      w = jax.device_put((rng.standard_normal((k, k, c_in, c_out)) / np.sqrt(k * k * c_in)).astype(np.float32), cpu)
      y_shape = (n, *_out_hw(x.shape, w.shape, (s, s), pads), c_out)
      dy = jax.device_put(rng.standard_normal(y_shape, np.float32), cpu)

      def forward_and_grads(conv_fn):
        y, vjp = jax.vjp(conv_fn, x, w)
        return (y, *vjp(dy))

      ours = jax.jit(lambda: forward_and_grads(lambda a, b: conv(a, b, (s, s), pads)))()
      ref = jax.jit(lambda: forward_and_grads(lambda a, b: jax.lax.conv_general_dilated(
          a, b, (s, s), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))))()
      for name, got, expected in zip(("forward", "input gradient", "weight gradient"), ours, ref):
        got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
        error = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-30))
        if not error < _CHECK_TOLERANCE:  # also catches NaN
          return (f"oneDNN's {name} of a {k}x{k} stride-{s} convolution differs from XLA's by {error:.2g} of "
                  f"its scale (allowed {_CHECK_TOLERANCE:g})")
  except Exception as e:  # noqa: BLE001 - anything that stops oneDNN running here (e.g. no engine) is an answer
    return f"oneDNN failed to run here: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
  return None


def available() -> bool:
  """Whether kd_jax's oneDNN convolutions can be used here (`why_unavailable()` says why not)."""
  return why_unavailable() is None


DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def bf16_supported() -> bool:
  """Whether this oneDNN has bfloat16 convolutions on this CPU (oneDNN 3.x: not without AVX-512 or
  AVX2-VNNI-2, e.g. on AMD Zen 2/3). Builds and loads the handlers like `ensure_available`."""
  return _load()[3]


def supports(x: jax.Array, w: jax.Array) -> bool:
  """Whether `conv` takes these operands: rank-4 input and kernel, both float32, or both bfloat16 where
  this oneDNN has bfloat16 convolutions here (`bf16_supported`)."""
  if not (x.ndim == 4 and w.ndim == 4 and x.dtype == w.dtype and x.dtype in DTYPES):
    return False
  return x.dtype != jnp.bfloat16 or bf16_supported()


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
