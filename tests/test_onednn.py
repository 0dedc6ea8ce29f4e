"""oneDNN's CPU convolutions (kd_jax.backends.cpu.onednn, config.cpu_conv_kernels='onednn') against XLA's.

Tests that run oneDNN are skipped, with the reason, on a machine without oneDNN's headers and library or a
C++ compiler (kd_jax builds its handlers on first use); the error a user then gets is tested everywhere.
"""

from __future__ import annotations

import functools
import json
import os
import unittest.mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from helpers import small_config
from kd_jax import models
from kd_jax.backends.cpu import conv as kd_conv
from kd_jax.backends.cpu import onednn
from kd_jax.config import base_config, validate
from kd_jax.errors import KDJaxError

NHWC = ("NHWC", "HWIO", "NHWC")
needs_onednn = pytest.mark.skipif(not onednn.available(), reason=(
    f"kd_jax's oneDNN convolutions are not available here: {onednn.why_unavailable()}"))
TARGETS = ("kd_jax_onednn_conv_fwd", "kd_jax_onednn_conv_bwd_data", "kd_jax_onednn_conv_bwd_weights")


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


CASES = [  # (batch, height, width, c_in, c_out, kernel, stride, padding)
    (4, 8, 8, 3, 16, 3, 1, ((1, 1), (1, 1))),      # a stem: three input channels
    (3, 8, 8, 16, 32, 3, 2, ((1, 1), (1, 1))),
    (2, 7, 9, 8, 8, 3, 2, ((1, 1), (1, 1))),       # odd sizes at stride 2: the last padded row is unused
    (2, 9, 9, 8, 24, 1, 2, ((0, 0), (0, 0))),      # the 1x1 projection shortcut
    (2, 10, 6, 4, 6, 5, 1, ((2, 2), (2, 2))),
    (2, 8, 8, 6, 4, 3, 2, ((0, 1), (1, 0))),       # asymmetric padding
    (3, 11, 11, 3, 4, 5, 3, ((2, 1), (0, 2))),     # stride 3
    (2, 9, 9, 3, 4, 2, 3, ((0, 0), (1, 1))),       # kernel smaller than the stride: dx rows no tap reads
    (1, 5, 5, 7, 5, 5, 1, ((0, 0), (0, 0))),       # kernel as large as the image: one output position
]


@needs_onednn
@pytest.mark.parametrize("case", CASES, ids=[f"n{c[0]}h{c[1]}w{c[2]}c{c[3]}-{c[4]}k{c[5]}s{c[6]}" for c in CASES])
def test_forward_and_both_gradients_match_lax(case):
  n, h, w_, c_in, c_out, k, s, pads = case
  keys = jax.random.split(jax.random.PRNGKey(sum(case[:7])), 3)
  x = jax.random.normal(keys[0], (n, h, w_, c_in))
  w = jax.random.normal(keys[1], (k, k, c_in, c_out)) / np.sqrt(k * k * c_in)
  ref = lambda x, w: lax.conv_general_dilated(x, w, (s, s), pads, dimension_numbers=NHWC)
  got = lambda x, w: onednn.conv(x, w, (s, s), pads)
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  y, vjp = jax.jit(lambda x, w: jax.vjp(got, x, w))(x, w)
  assert y.shape == y_ref.shape and y.dtype == jnp.float32
  dy = jax.random.normal(keys[2], y.shape)
  # The same float32 products summed in another order: a few ulps of the sum's scale.
  assert _rel_err(y, y_ref) < 1e-5
  for got_grad, ref_grad in zip(vjp(dy), vjp_ref(dy)):
    assert got_grad.shape == ref_grad.shape
    assert _rel_err(got_grad, ref_grad) < 1e-5


@needs_onednn
def test_a_wrong_formula_would_be_caught():
  # The comparison above is sharp: swapping the kernel's spatial axes (a transposed-kernel bug) or
  # dropping the padding's asymmetry moves the result by O(1) of its scale.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 5))
  y = onednn.conv(x, w, (2, 2), ((0, 1), (1, 0)))
  assert _rel_err(y, lax.conv_general_dilated(x, w, (2, 2), ((0, 1), (1, 0)), dimension_numbers=NHWC)) < 1e-5
  assert _rel_err(y, lax.conv_general_dilated(x, jnp.swapaxes(w, 0, 1), (2, 2), ((0, 1), (1, 0)),
                                              dimension_numbers=NHWC)) > 0.1
  assert _rel_err(y, lax.conv_general_dilated(x, w, (2, 2), ((1, 0), (0, 1)), dimension_numbers=NHWC)) > 0.1


# Each kernel mode of the model test: the mode a model is built with (kd_jax.backends.Kernels).
MODEL_MODES = {"xla": "xla", "auto": "auto", "matmul": "matmul", "onednn": kd_conv.AUTO_ONEDNN}
# Allowed error of a float32 gradient against the float64 one: the L2 norm of the difference over all
# parameters, as a fraction of the float64 gradient's norm (`_grad_error`). Why so loose, and why float64:
# in a train-mode ReLU network any float32 forward (XLA's or oneDNN's, each correct to float32 rounding)
# can flip the sign of a pre-activation that lies within rounding of zero, and a flipped ReLU changes the
# gradients of every layer below it by O(1/sqrt(positions)) of their sums. In shufflenetv1 at batch 8,
# oneDNN's forward here flipped 3 of ~10^6 pre-activations (|value| ~1e-5 of the layer's scale) and its
# gradient was 1.3e-2 from float64 while XLA's float32 modes were 2e-5 (no flip, by luck); comparing two
# float32 runs with each other, as this test once did, fails on whichever machine flips one (1.7e-2 on an
# AMD host). A wrong formula moves the gradient by O(1): the transposed-kernel check below must exceed the
# tolerance tenfold. The per-convolution tests above (no ReLU) hold oneDNN to 1e-5.
GRAD_TOLERANCE = 5e-2


def _model_loss(name, mode, dtype):
  """A jitted (loss, gradient) of a model's mean cross-entropy in train mode, built in `dtype` with `mode`."""
  from kd_jax.backends import Kernels
  model = models.create_model(name, 10, dtype=dtype, param_dtype=dtype, kernels=Kernels(mode))

  def loss(params, batch_stats, x, labels):
    out, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
    logp = jax.nn.log_softmax(out.logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1))

  return model, jax.jit(jax.value_and_grad(loss))


@functools.lru_cache(maxsize=None)
def _float64_truth(name):
  """A model's float32 initial variables, its 8 inputs (float32) and labels, and the (loss, gradient) of
  the same float32 values cast to float64 with XLA's convolutions in float64: the reference for every
  float32 mode. Also the float64 gradient with every 3x3 kernel transposed in its spatial axes (what a
  transposed-kernel bug computes), to show the tolerance catches a wrong formula."""
  model, _ = _model_loss(name, "xla", jnp.float32)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 3))
  labels = jnp.arange(8) % 10
  variables = jax.jit(model.init, static_argnames="train")(jax.random.PRNGKey(1), x[:1], train=False)
  with jax.enable_x64(True):
    _, grad64 = _model_loss(name, "xla", jnp.float64)
    up = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float64), tree)
    args = (up(variables["batch_stats"]), np.asarray(x, np.float64), np.asarray(labels))
    loss, grads = jax.device_get(grad64(up(variables["params"]), *args))
    swap = lambda tree: jax.tree.map(lambda a: np.swapaxes(a, 0, 1) if a.ndim == 4 and a.shape[0] == a.shape[1] == 3
                                     else a, tree)
    _, swapped = jax.device_get(grad64(swap(up(variables["params"])), *args))
  assert jax.tree.leaves(grads)[0].dtype == np.float64
  return variables, x, labels, (loss, grads), swap(swapped)


def _grad_error(grads, truth) -> float:
  """||grads − truth|| / ||truth||, the L2 norms over every parameter of the model."""
  diff = sum(float(np.sum((np.asarray(g, np.float64) - t) ** 2)) for g, t in
             zip(jax.tree.leaves(grads), jax.tree.leaves(truth)))
  return (diff / sum(float(np.sum(t ** 2)) for t in jax.tree.leaves(truth))) ** 0.5


# resnet8 in every mode; shufflenetv1 (whose programs take several times longer to compile: ~30 s each on
# 2 cores) only with oneDNN, the case that once failed.
MODEL_CASES = [("resnet8", m) for m in MODEL_MODES] + [("shufflenetv1", "onednn")]


@pytest.mark.parametrize("name, mode", [pytest.param(n, m, marks=needs_onednn) if m == "onednn" else (n, m)
                                        for n, m in MODEL_CASES], ids=[f"{n}-{m}" for n, m in MODEL_CASES])
def test_model_gradients_match_float64_in_every_kernel_mode(name, mode):
  # resnet8: 3x3 stride 1 and 2, 1x1 stride-2 projections; shufflenetv1: grouped 1x1 convolutions (split
  # into ordinary ones, each in oneDNN) and depthwise ones (shifted multiply-adds in every CPU mode).
  variables, x, labels, (loss64, grads64), transposed = _float64_truth(name)
  # The check is sharp: a transposed kernel (the same model otherwise) is O(1) of the scale away.
  assert _grad_error(transposed, grads64) > 10 * GRAD_TOLERANCE
  _, fn = _model_loss(name, MODEL_MODES[mode], jnp.float32)
  loss, grads = fn(variables["params"], variables["batch_stats"], x, labels)
  np.testing.assert_allclose(loss, loss64, rtol=1e-5)
  assert _grad_error(grads, grads64) < GRAD_TOLERANCE, mode
  if mode == "onednn":
    hlo = fn.lower(variables["params"], variables["batch_stats"], x, labels).compile().as_text()
    for target in TARGETS:
      assert f'custom_call_target="{target}"' in hlo, target
    # No convolution is left to XLA: every one went to oneDNN (or, depthwise, to multiply-adds).
    assert " convolution(" not in hlo


@needs_onednn
def test_oneDNN_on_cpu_only_and_not_for_dilated_convolutions():
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 8))
  kwargs = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), dimension_numbers=NHWC)
  with kd_conv.conv_backward(kd_conv.resolve_conv_backward("auto", "onednn")):
    def export(platform, dtype=jnp.float32, **extra):
      grad = jax.jit(jax.grad(lambda x, w: jnp.sum(kd_conv.conv_general_dilated(x, w, **kwargs, **extra) ** 2),
                              (0, 1)))
      # jax.export refuses custom calls unless told they need no compatibility guarantee (nothing is kept).
      checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in TARGETS]
      return jax.export.export(grad, platforms=[platform], disabled_checks=checks)(
          x.astype(dtype), w.astype(dtype)).mlir_module()
    for platform, calls, convolutions in (("cpu", 3, 0), ("cuda", 0, 3), ("tpu", 0, 3)):
      text = export(platform)
      assert sum(text.count(t) for t in TARGETS) == calls, platform
      assert text.count("stablehlo.convolution") == convolutions, platform
    # bfloat16 goes to oneDNN where it has bfloat16 convolutions on this CPU, else stays XLA's.
    assert sum(export("cpu", jnp.bfloat16).count(t) for t in TARGETS) == (3 if onednn.bf16_supported() else 0)
    # A dilated kernel is not a form the handlers take: lax's convolution, on CPU too.
    text = export("cpu", rhs_dilation=(2, 2))
    assert not any(t in text for t in TARGETS) and "stablehlo.convolution" in text


@needs_onednn
@pytest.mark.parametrize("stride, pads", [(1, ((1, 1), (1, 1))), (2, ((0, 1), (1, 0)))])
def test_bfloat16_rounds_once_and_sums_the_weight_gradient_in_float32(stride, pads):
  if not onednn.bf16_supported():  # oneDNN 3.x on a CPU without AVX-512 (kd_jax then keeps bf16 in XLA)
    pytest.skip("this oneDNN has no bfloat16 convolutions on this CPU")
  keys = jax.random.split(jax.random.PRNGKey(stride), 3)
  x = jax.random.normal(keys[0], (8, 16, 16, 32)).astype(jnp.bfloat16)
  w = (jax.random.normal(keys[1], (3, 3, 32, 48)) / np.sqrt(9 * 32)).astype(jnp.bfloat16)
  conv = lambda x, w: onednn.conv(x, w, (stride, stride), pads)
  y, vjp = jax.vjp(conv, x, w)
  dy = jax.random.normal(keys[2], y.shape).astype(jnp.bfloat16)
  dx, dw = vjp(dy)
  assert y.dtype == dx.dtype == dw.dtype == jnp.bfloat16
  # Exact reference: the same bf16 values, float32 arithmetic. dw sums 8·8·8 (or 8·16·16) products per
  # entry; accumulated in bf16 it would be off by far more than the one final rounding (2^-8 relative).
  f32 = lambda a: a.astype(jnp.float32)
  ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=NHWC)
  y_ref, vjp_ref = jax.vjp(ref, f32(x), f32(w))
  for got, expected in zip((y, *vjp(dy)), (y_ref, *vjp_ref(f32(dy)))):
    assert _rel_err(f32(got), expected) < 2 ** -8


@needs_onednn
def test_a_training_run_with_onednn_kernels_matches_xla_kernels(tmp_path, digits):
  from kd_jax.train import checkpoint as ckpt
  from kd_jax.train.loop import train_and_evaluate
  params, traced = {}, []
  real = onednn.conv

  def spy(*args, **kwargs):
    traced.append(args[0].shape)
    return real(*args, **kwargs)

  for kernels in ("xla", "onednn"):
    workdir = str(tmp_path / kernels)
    with unittest.mock.patch.object(onednn, "conv", spy):
      result = train_and_evaluate(small_config(cpu_conv_kernels=kernels, max_steps=4), workdir, dataset=digits)
    assert result["steps"] == 4
    assert bool(traced) == (kernels == "onednn")  # cnn_tiny's convolutions went through oneDNN, or none did
    image = digits.train.get(np.arange(1))["image"]
    params[kernels] = ckpt.load_exported_model(workdir, models.create_model("cnn_tiny", 10), image)
  chex.assert_trees_all_close(params["onednn"], params["xla"], rtol=1e-4, atol=1e-5)


def test_config_accepts_onednn_and_the_error_without_a_compiler_says_what_to_install(tmp_path, monkeypatch):
  config = base_config()
  config.cpu_conv_kernels = "onednn"
  validate(config)
  assert kd_conv.compiler_options("onednn", "cpu") == kd_conv.compiler_options("xla", "cpu")
  assert kd_conv.compiler_options("onednn", "gpu") is None
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
  with pytest.raises(KDJaxError, match=r"(?s)needs a C\+\+ compiler.*apt-get install libdnnl-dev"):
    onednn._build(tmp_path / "lib.so")
  # A compiler that fails (here `false`): the command, and again what to install; nothing is left behind.
  monkeypatch.setenv("CXX", "false")
  with pytest.raises(KDJaxError, match=r"(?s)Building kd_jax's oneDNN convolutions failed.*libdnnl-dev"):
    onednn._build(tmp_path / "lib.so")
  assert os.listdir(tmp_path) == []


def test_the_cli_refuses_onednn_kernels_it_cannot_build_and_says_what_to_install(tmp_path):
  # A fresh process with no compiler to be found: the run stops before training with exit status 2.
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), KD_JAX_CACHE_DIR=str(tmp_path / "cache"))
  done = subprocess.run([sys.executable, "-m", "kd_jax", "train", "--config",
                         os.path.join(repo, "experiments", "digits_teacher.py"), "--workdir", str(tmp_path / "run"),
                         "--config.cpu_conv_kernels=onednn", "--config.max_steps=1"],
                        capture_output=True, text=True, cwd=repo, env=env, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "apt-get install libdnnl-dev" in done.stderr and "cpu_conv_kernels='xla'" in done.stderr
  checkpoints = tmp_path / "run" / "checkpoints"
  assert not checkpoints.exists() or not os.listdir(checkpoints)


def test_the_library_path_depends_on_source_jaxlib_and_compile_command(monkeypatch, tmp_path):
  monkeypatch.setenv("KD_JAX_CACHE_DIR", str(tmp_path))
  first = onednn._library_path()
  assert first.parent == tmp_path / "onednn"
  monkeypatch.setenv("DNNL_ROOT", str(tmp_path / "elsewhere"))
  assert onednn._library_path() != first
  command = onednn._compile_command("out.so")
  assert f"-I{tmp_path / 'elsewhere' / 'include'}" in command and "-ldnnl" in command


def test_pip_wheels_are_found_by_their_file_lists_and_sycl_builds_passed_over(tmp_path, monkeypatch):
  # A fake install laid out as the registry's wheels are: the library in the prefix's lib/, the headers in
  # its include/, both listed relative to site-packages.
  from importlib import metadata
  from pathlib import PurePosixPath
  prefix = (tmp_path / "prefix").resolve()
  site = prefix / "lib" / "python3" / "site-packages"
  headers = prefix / "include" / "oneapi" / "dnnl"
  site.mkdir(parents=True)
  headers.mkdir(parents=True)
  (prefix / "lib" / "libdnnl.so.3").write_bytes(b"")
  (headers / "dnnl.hpp").write_text("")
  (headers / "dnnl_config.h").write_text("#define DNNL_CPU_RUNTIME DNNL_RUNTIME_OMP\n")

  class Wheel:
    def __init__(self, files):
      self.version, self.files = "2026.1.0", [PurePosixPath(f) for f in files]

    def locate_file(self, entry):
      return site / entry

  wheels = {"onednn": Wheel(["../../libdnnl.so.3"]), "onednn-devel": Wheel(["../../../include/oneapi/dnnl/dnnl.hpp"])}

  def distribution(name):
    if name not in wheels:
      raise metadata.PackageNotFoundError(name)
    return wheels[name]

  monkeypatch.setattr(metadata, "distribution", distribution)
  monkeypatch.delenv("DNNL_ROOT", raising=False)
  assert onednn.locate() == onednn.Install("pip onednn 2026.1.0", prefix / "include", prefix / "lib")
  command = onednn._compile_command("out.so")
  # The headers, and the library with an RPATH that also serves libdnnl's own dependencies.
  assert f"-I{prefix / 'include'}" in command and f"-Wl,--disable-new-dtags,-rpath,{prefix / 'lib'}" in command
  # A SYCL build is passed over (its CPU engine needs a SYCL device), the reason kept for the build error.
  (headers / "dnnl_config.h").write_text("#define DNNL_CPU_RUNTIME DNNL_RUNTIME_SYCL\n")
  found = onednn.locate()
  assert found.origin == "the system's" and "needs a SYCL CPU device" in found.note


@needs_onednn
def test_data_parallel_devices_each_convolve_their_own_rows():
  # The suite's 8 forced CPU devices: batch-sharded operands stay sharded through oneDNN (each device's
  # custom calls see 2 of the 16 rows, nothing is gathered), the weight gradient is summed over devices,
  # and values and gradients equal the one-device lax ones. A kernel split over devices (FSDP) is gathered
  # first; a batch that does not divide over the devices is computed replicated.
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P
  devices = jax.devices()
  assert len(devices) == 8
  mesh = Mesh(np.array(devices), ("data",))
  loss = lambda conv_fn: lambda x, w: jnp.sum(jnp.sin(conv_fn(x, w)))
  ours = loss(lambda x, w: onednn.conv(x, w, (2, 2), ((1, 1), (0, 1))))
  ref = loss(lambda x, w: lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (0, 1)), dimension_numbers=NHWC))
  for n, x_spec, w_spec in ((16, P("data"), P()), (16, P("data"), P(None, None, None, "data")), (12, P(), P())):
    x = jax.random.normal(jax.random.PRNGKey(n), (n, 9, 9, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 8))
    expected = jax.value_and_grad(ref, argnums=(0, 1))(x, w)
    xs, ws = jax.device_put(x, NamedSharding(mesh, x_spec)), jax.device_put(w, NamedSharding(mesh, w_spec))
    step = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))
    got = step(xs, ws)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)
    for g, e in zip(got[1], expected[1]):
      assert _rel_err(g, e) < 1e-5
    hlo = step.lower(xs, ws).compile().as_text()
    calls = [line for line in hlo.splitlines() if "custom-call(" in line]
    assert {t for t in TARGETS if any(t in line for line in calls)} == set(TARGETS)
    rows = 2 if x_spec == P("data") else n
    assert all(f"f32[{rows}," in line for line in calls if "bwd_weights" not in line), calls
    if x_spec == P("data"):
      assert got[1][0].sharding.spec == P("data")
    if x_spec == P("data") and w_spec == P():  # without the partitioning rule XLA gathered the whole batch
      assert "all-gather" not in hlo


@needs_onednn
def test_a_resumed_onednn_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, digits):
  # Resuming reproduces a run exactly only if every kernel is deterministic: oneDNN's convolutions (and
  # their weight gradients, reduced over OpenMP threads) must give the same bits for the same inputs.
  from kd_jax.train import checkpoint as ckpt
  from kd_jax.train.loop import train_and_evaluate
  overrides = {"cpu_conv_kernels": "onednn", "data.crop_pad": 1, "data.flip": True}
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(small_config(max_steps=5, **overrides), straight, dataset=digits)
  train_and_evaluate(small_config(max_steps=2, **overrides), resumed, dataset=digits)
  assert train_and_evaluate(small_config(max_steps=5, **overrides), resumed, dataset=digits)["steps"] == 5
  image = digits.train.get(np.arange(1))["image"]
  model = models.create_model("cnn_tiny", 10)
  chex.assert_trees_all_equal(ckpt.load_exported_model(straight, model, image),
                              ckpt.load_exported_model(resumed, model, image))


# ----------------------------------------------------------------------------------------------------------
# cpu_conv_kernels='auto' (the default): oneDNN where it builds and passes its self-check, XLA's otherwise


@needs_onednn
def test_auto_picks_onednn_where_it_passes_its_self_check_and_says_so(tmp_path, capsys):
  from kd_jax.train import workdir as kd_workdir
  assert base_config().cpu_conv_kernels == "auto"
  assert onednn.self_check() is None
  kernels, why = kd_conv.auto_cpu_conv_kernels("cpu")
  assert kernels == "onednn" and why.startswith(f"oneDNN {onednn.ensure_available()} (") and "self-check passed" in why
  assert kd_conv.resolve_conv_backward("auto", "auto") == kd_conv.AUTO_ONEDNN
  assert kd_conv.compiler_options("auto", "cpu") == kd_conv.compiler_options("xla", "cpu")
  assert kd_conv.auto_cpu_conv_kernels("gpu")[0] == "xla"  # GPUs and TPUs: nothing changes
  # A fresh run's workdir records the choice, and its log says which kernels and why.
  pinned = kd_workdir.pin_cpu_conv_kernels(str(tmp_path), small_config(), resuming=False)
  assert pinned.cpu_conv_kernels == "onednn"
  assert f"[kd_jax] CPU convolutions: {why}" in capsys.readouterr().out
  with open(tmp_path / kd_workdir.KERNELS) as f:
    assert json.load(f)["cpu_conv_kernels"] == "onednn"


def _transposed_conv(x, w, strides, pads):
  """A wrong formula for the self-check to catch: the kernel's spatial axes swapped."""
  return lax.conv_general_dilated(x, jnp.swapaxes(w, 0, 1), strides, pads, dimension_numbers=NHWC)


def test_auto_falls_back_to_xla_when_onednn_is_off_missing_or_wrong(monkeypatch):
  # A failed build, a wrong result and KD_JAX_ONEDNN=0 all leave 'auto' on XLA's kernels, with the reason.
  monkeypatch.setattr(onednn, "ensure_available", unittest.mock.Mock(side_effect=KDJaxError("no oneDNN here")))
  assert onednn.self_check.__wrapped__() == "no oneDNN here"
  monkeypatch.setattr(onednn, "ensure_available", lambda: "0.0.0")
  monkeypatch.setattr(onednn, "conv", _transposed_conv)
  assert "differs from XLA's by" in onednn.self_check.__wrapped__()  # the check is not fooled by a wrong formula
  monkeypatch.setattr(onednn, "self_check", lambda: "simulated failure")
  assert kd_conv.auto_cpu_conv_kernels("cpu") == ("xla", "XLA (oneDNN not used: simulated failure)")
  assert kd_conv.resolve_conv_backward("auto", "auto") == "auto"  # the blocked backward with XLA's kernels
  monkeypatch.setattr(onednn, "self_check", unittest.mock.Mock(side_effect=AssertionError("must not be tried")))
  monkeypatch.setenv(kd_conv.ONEDNN_ENV, "0")
  assert kd_conv.auto_cpu_conv_kernels("cpu") == ("xla", "XLA (KD_JAX_ONEDNN=0)")
  assert kd_conv.resolve_conv_backward("auto", "auto") == "auto"


def test_a_resumed_run_keeps_the_kernels_it_started_with(tmp_path, digits, monkeypatch, capsys):
  # Started where oneDNN failed (simulated): XLA's kernels, recorded. Resumed where oneDNN works: still XLA's.
  from kd_jax.train import workdir as kd_workdir
  from kd_jax.train.loop import train_and_evaluate
  workdir = str(tmp_path / "run")
  monkeypatch.setattr(onednn, "self_check", lambda: "simulated failure")
  train_and_evaluate(small_config(max_steps=2), workdir, dataset=digits)
  assert "[kd_jax] CPU convolutions: XLA (oneDNN not used: simulated failure)" in capsys.readouterr().out
  with open(os.path.join(workdir, kd_workdir.KERNELS)) as f:
    assert json.load(f)["cpu_conv_kernels"] == "xla"
  traced = []
  monkeypatch.setattr(onednn, "self_check", lambda: None)
  monkeypatch.setattr(onednn, "describe", lambda: "oneDNN 9.9.9 (simulated)")
  monkeypatch.setattr(onednn, "conv", lambda *args: traced.append(args) or _transposed_conv(*args))
  assert kd_workdir.pin_cpu_conv_kernels(str(tmp_path), small_config(), False).cpu_conv_kernels == "onednn"
  assert train_and_evaluate(small_config(max_steps=3), workdir, dataset=digits)["steps"] == 3
  assert "CPU convolutions: XLA (recorded in kernels.json" in capsys.readouterr().out
  assert not traced  # no convolution went to (the simulated) oneDNN
  # A run recorded with oneDNN, resumed where oneDNN fails: refused, saying how to go on.
  with open(os.path.join(workdir, kd_workdir.KERNELS), "w") as f:
    json.dump({"cpu_conv_kernels": "onednn"}, f)
  monkeypatch.setattr(onednn, "self_check", lambda: "simulated failure")
  with pytest.raises(KDJaxError, match=r"(?s)trained with oneDNN's CPU convolutions.*simulated failure.*"
                                       r"--config.cpu_conv_kernels=xla"):
    train_and_evaluate(small_config(max_steps=4), workdir, dataset=digits)


def test_the_processes_of_a_run_agree_on_auto_kernels(tmp_path, monkeypatch, capsys):
  from kd_jax.train import workdir as kd_workdir
  assert kd_workdir.agree_on_kernels("onednn", "why", ["onednn", "onednn"]) == ("onednn", "why")
  kernels, why = kd_workdir.agree_on_kernels("onednn", "why", ["onednn", "xla", "onednn", "xla"])
  assert kernels == "xla" and "process(es) 1, 3" in why
  assert kd_workdir.agree_on_kernels("xla", "why", ["xla", "onednn"])[0] == "xla"
  # pin_cpu_conv_kernels gathers the choices of a multi-process run (simulated: two processes, the other
  # without oneDNN) and records the agreed one; an explicit setting is not gathered.
  monkeypatch.setattr(onednn, "self_check", lambda: None)
  monkeypatch.setattr(onednn, "describe", lambda: "oneDNN 9.9.9 (simulated)")
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  gathered = []
  monkeypatch.setattr(kd_workdir, "_gather_choices", lambda k: gathered.append(k) or [k, "xla"])
  assert kd_workdir.pin_cpu_conv_kernels(str(tmp_path), small_config(), False).cpu_conv_kernels == "xla"
  assert gathered == ["onednn"] and "not usable on process(es) 1" in capsys.readouterr().out
  with open(os.path.join(tmp_path, kd_workdir.KERNELS)) as f:
    assert json.load(f)["cpu_conv_kernels"] == "xla"
  pinned = kd_workdir.pin_cpu_conv_kernels(str(tmp_path), small_config(cpu_conv_kernels="onednn"), False)
  assert pinned.cpu_conv_kernels == "onednn" and gathered == ["onednn"]
