"""How far a float32 train-mode gradient is from float64, with and without an XLA CPU compiler option.

Why: a faster XLA setting is only usable if it computes the same numbers. This tool takes the gradient of
a model's cross-entropy (train mode, BatchNorm on batch statistics) with respect to its parameters in
float32, compiled with XLA's defaults and with each `--option KEY=VALUE` given, and compares every
parameter's gradient with a float64 reference (default options; `jax_enable_x64`): per leaf,
max |g32 − g64| / max |g64|. The worst leaves are printed. Float32 rounding gives about 1e-6 here.

    python tools/xla_cpu_numerics.py --model resnet8x4 \\
        --option xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT

docs/benchmarks.md ("What did not help") reports what it found for that option: XLA's own CPU convolution
kernels (instead of YNNPACK's) made the resnet32x4 → resnet8x4 KD step 8% faster and the teacher forward
25% faster, but the resnet8x4 gradient moved 3.7e-2 away from float64 in one layer, so it is not used.
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


def _loss(params, batch_stats, images, labels, model):
  out, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"])
  log_p = jax.nn.log_softmax(out.logits)
  return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))


def gradient_errors(model_name: str, batch: int, options: Dict[str, str], seed: int = 0,
                    num_classes: int = 100, image_size: int = 32) -> List[Tuple[str, float]]:
  """(parameter path, relative error against float64) for every leaf of the float32 gradient, worst first."""
  model = models.create_model(model_name, num_classes)
  rng = np.random.RandomState(seed)
  images = rng.randn(batch, image_size, image_size, 3)
  labels = jnp.asarray(rng.randint(0, num_classes, batch))
  variables = model.init(jax.random.PRNGKey(seed), jnp.asarray(images[:2], jnp.float32), train=False)
  as64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
  grad = jax.grad(_loss)
  reference = jax.jit(grad, static_argnums=4)(as64(variables["params"]), as64(variables["batch_stats"]),
                                              jnp.asarray(images), labels, model)
  got = jax.jit(grad, static_argnums=4, compiler_options=options or None)(
      variables["params"], variables["batch_stats"], jnp.asarray(images, jnp.float32), labels, model)
  errors = jax.tree.map(
      lambda g, r: float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(r))) / max(float(np.max(np.abs(r))), 1e-30)),
      got, reference)
  leaves = [(jax.tree_util.keystr(path), e) for path, e in jax.tree_util.tree_leaves_with_path(errors)]
  return sorted(leaves, key=lambda kv: -kv[1])


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="resnet8x4")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="an XLA compiler option for the float32 program (repeatable)")
  parser.add_argument("--worst", type=int, default=3, help="leaves shown per setting")
  args = parser.parse_args(argv)
  settings = {"defaults": {}}
  if args.option:
    if not all("=" in o for o in args.option):
      parser.error(f"--option takes KEY=VALUE, got {args.option}")
    settings["with " + ", ".join(args.option)] = dict(o.split("=", 1) for o in args.option)
  print(f"{args.model}, batch {args.batch}: float32 gradient against float64, max |diff| / max |ref| per leaf")
  for name, options in settings.items():
    worst = gradient_errors(args.model, args.batch, options)[:args.worst]
    print(f"  {name}: " + ", ".join(f"{path} {error:.1e}" for path, error in worst))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
