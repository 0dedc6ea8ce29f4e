"""Per-device memory of a train state and a frozen teacher, replicated against FSDP (`config.sharding.params`).

Builds the library's `TrainState` (student, SGD momentum state) and the teacher's variables, places them
with `kd_jax.train.sharding` exactly as the training loop does, and sums the bytes each device holds. Forces
`--devices` CPU devices, so it runs on any machine:

    python tools/fsdp_memory.py --student resnet8x4 --teacher resnet32x4 --devices 8
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--student", default="resnet8x4")
  parser.add_argument("--teacher", default="resnet32x4")
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--num-classes", type=int, default=100)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--min-size", type=int, default=1024, help="config.sharding.fsdp_min_size")
  args = parser.parse_args(argv)
  # Before JAX starts: the device count is fixed when the backend comes up.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={args.devices}").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  import jax
  import jax.numpy as jnp

  from kd_jax import distillers, models
  from kd_jax.config import base_config
  from kd_jax.train import optim, sharding
  from kd_jax.train.step import create_train_state

  mesh = sharding.make_mesh()
  config = base_config()
  student = models.create_model(args.student, args.num_classes)
  teacher = models.create_model(args.teacher, args.num_classes)
  images = jnp.zeros((mesh.size, args.image_size, args.image_size, 3))
  batch = {"image": images, "label": jnp.zeros((mesh.size,), jnp.int32), "index": jnp.arange(mesh.size)}
  tx = optim.make_optimizer(config.optim, optim.learning_rate_schedule(config.optim, 100, 1000))
  state = create_train_state(jax.random.PRNGKey(0), student, distillers.from_config({"ce": {"weight": 1.0}}),
                             tx, batch)
  teacher_variables = teacher.init(jax.random.PRNGKey(1), images[:1])

  def per_device_mib(tree) -> float:
    return max(sum(s.data.nbytes for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards
                   if s.device == d) for d in mesh.devices.flat) / 2**20

  print(f"{args.student} (train state: params, BatchNorm statistics, SGD momentum) and frozen {args.teacher}, "
        f"{mesh.size} devices, fsdp_min_size {args.min_size}\n")
  print("| mode | train state MiB per device | teacher MiB per device |")
  print("|---|---:|---:|")
  for mode in sharding.PARAM_SHARDINGS:
    placed = jax.device_put(state, sharding.state_shardings(state, mesh, mode, args.min_size))
    placed_teacher = sharding.place_params(teacher_variables, mesh, mode, args.min_size)
    print(f"| {mode} | {per_device_mib(placed):.2f} | {per_device_mib(placed_teacher):.2f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
