"""How far float32 train-mode activations and gradients are from float64, with and without XLA CPU options.

Why: a faster XLA setting is only usable if it computes the same numbers. For a model of the zoo in train
mode (BatchNorm on batch statistics) this tool compiles, in float32, (1) the forward pass with every
module's output captured and (2) the gradient of the cross-entropy with respect to the parameters, once with
XLA's defaults and once with each `--option KEY=VALUE` set given, and compares them with the same
computation done by a float64 copy of the model (`jax_enable_x64`, `dtype=param_dtype=float64`, XLA's
defaults). Per array: max |x32 − x64| / max |x64|. It prints the worst activations and gradient leaves.

    python tools/xla_cpu_numerics.py --model resnet8x4 --library     # the options kd_jax compiles with
    python tools/xla_cpu_numerics.py --model resnet8x4 \\
        --option xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT

Reading it: activations are a continuous function of the inputs, so their error is plain float32 rounding
(about 1e-6 here) and compares kernels fairly. Gradients of ReLU networks are not continuous: a
pre-activation within rounding error of 0 may take the other branch in float32, which moves a gradient leaf
by a discrete amount (up to 5e-2 relative in resnet8x4 at batches 16 and 64, for some seeds and not
others, with XLA's default kernels as with others). Compare gradients over several `--seed`s, not one.

An earlier version of this tool built the float64 reference from the float32 model (whose modules cast
their inputs to float32), so its "float64" was float32 with XLA's defaults, and it reported XLA's own
convolution kernels as 3e-2 off; docs/benchmarks.md tells that story.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # before any array exists: the reference needs float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kd_jax import models  # noqa: E402
from kd_jax.backends.cpu import conv  # noqa: E402


def _loss(params, batch_stats, images, labels, model):
  out, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"])
  log_p = jax.nn.log_softmax(out.logits)
  return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))


def _activations(params, batch_stats, images, model):
  _, state = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                         mutable=["batch_stats", "intermediates"], capture_intermediates=True)
  return state["intermediates"]


def _relative_errors(got, reference) -> List[Tuple[str, float]]:
  """(path, max |got − reference| / max |reference|) for every leaf, worst first."""
  def error(g, r):
    r = np.asarray(r)
    return float(np.max(np.abs(np.asarray(g, np.float64) - r)) / max(float(np.max(np.abs(r))), 1e-30))
  errors = jax.tree.map(error, got, reference)
  leaves = [(jax.tree_util.keystr(path), e) for path, e in jax.tree_util.tree_leaves_with_path(errors)]
  return sorted(leaves, key=lambda kv: -kv[1])


def errors_against_float64(model_name: str, batch: int, options: Dict[str, str], seed: int = 0,
                           num_classes: int = 100, image_size: int = 32
                           ) -> Tuple[List[Tuple[str, float]], List[Tuple[str, float]]]:
  """(activation errors, gradient errors) of the float32 programs compiled with `options`, worst first."""
  model = models.create_model(model_name, num_classes)
  # The zoo's modules cast to their `dtype`, so float64 inputs alone would still compute in float32.
  model64 = models.create_model(model_name, num_classes, dtype=jnp.float64, param_dtype=jnp.float64)
  rng = np.random.RandomState(seed)
  images = rng.randn(batch, image_size, image_size, 3)
  labels = jnp.asarray(rng.randint(0, num_classes, batch))
  variables = model.init(jax.random.PRNGKey(seed), jnp.asarray(images[:2], jnp.float32), train=False)
  params64, stats64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (variables["params"],
                                                                          variables["batch_stats"]))
  inputs32 = (variables["params"], variables["batch_stats"], jnp.asarray(images, jnp.float32))
  inputs64 = (params64, stats64, jnp.asarray(images))
  results = []
  for fn, extra in ((_activations, ()), (jax.grad(_loss), (labels,))):
    static = len(inputs32) + len(extra)  # the model's position
    reference = jax.jit(fn, static_argnums=static)(*inputs64, *extra, model64)
    got = jax.jit(fn, static_argnums=static, compiler_options=options or None)(*inputs32, *extra, model)
    results.append(_relative_errors(got, reference))
  return results[0], results[1]


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="resnet8x4")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seed", type=int, action="append", default=[],
                      help="random images, labels and initialisation (repeatable; default 0)")
  parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="XLA compiler options for the float32 programs (repeatable; all together form one "
                           "setting, compared with XLA's defaults)")
  parser.add_argument("--library", action="store_true",
                      help="also compare the options kd_jax compiles CPU programs with by default "
                           "(config.cpu_conv_kernels='xla', kd_jax.backends.cpu.conv.compiler_options)")
  parser.add_argument("--worst", type=int, default=3, help="arrays shown per setting")
  args = parser.parse_args(argv)
  settings = {"defaults": {}}
  if args.option:
    if not all("=" in o for o in args.option):
      parser.error(f"--option takes KEY=VALUE, got {args.option}")
    settings["with " + ", ".join(args.option)] = dict(o.split("=", 1) for o in args.option)
  if args.library:
    options = conv.compiler_options("xla", "cpu") or {}
    settings["kd_jax (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"] = options
  print(f"{args.model}, batch {args.batch}, train mode: float32 against float64, max |diff| / max |ref| per array")
  for seed in args.seed or [0]:
    for name, options in settings.items():
      activations, gradients = errors_against_float64(args.model, args.batch, options, seed=seed)
      show = lambda errors: ", ".join(f"{path} {error:.1e}" for path, error in errors[:args.worst])
      print(f"  seed {seed}, {name}:\n    activations: {show(activations)}\n    gradient:    {show(gradients)}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
