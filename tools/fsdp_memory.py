"""Per-device memory of a train state and a frozen teacher, replicated against FSDP (`config.sharding.params`).

For each `config.sharding.params` mode, builds the run of a config (`base_config()`: the student with
cross-entropy and the default SGD-momentum optimizer) with `kd_jax.train.run.build_run`, which places the
frozen teacher's variables (freshly initialised, passed in with `teachers=`), and its train state with
`init_state` (student, SGD momentum state, placed), exactly as the training loop does, and sums the bytes
each device holds. The run's data is one random image per device (`kd_jax.data.from_arrays`): sizes
depend on shapes only. Forces `--devices` CPU devices, so it runs on any machine:

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
  import numpy as np

  from kd_jax import data as kd_data
  from kd_jax import models
  from kd_jax.config import base_config
  from kd_jax.train import sharding
  from kd_jax.train.run import build_run, init_state
  from kd_jax.train.teachers import Teachers

  mesh = sharding.make_mesh()
  # One batch of random images per device: the state's and the teacher's sizes depend on shapes only.
  rng = np.random.default_rng(0)
  dataset = kd_data.from_arrays(
      rng.standard_normal((mesh.size, args.image_size, args.image_size, 3)).astype(np.float32),
      np.arange(mesh.size) % args.num_classes, num_classes=args.num_classes, val_fraction=0.0)
  config = base_config()  # the default optimizer: SGD with momentum
  config.student.model = args.student
  config.batch_size = config.eval_batch_size = mesh.size
  config.loss = {"ce": {"weight": 1.0}}
  config.sharding.fsdp_min_size = args.min_size
  teacher = models.create_model(args.teacher, args.num_classes)
  teachers = (Teachers((teacher,), (1.0,)),
              (teacher.init(jax.random.PRNGKey(1), dataset.train.get(np.arange(1))["image"]),))

  def per_device_mib(tree) -> float:
    return max(sum(s.data.nbytes for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards
                   if s.device == d) for d in mesh.devices.flat) / 2**20

  print(f"{args.student} (train state: params, BatchNorm statistics, SGD momentum) and frozen {args.teacher}, "
        f"{mesh.size} devices, fsdp_min_size {args.min_size}\n")
  print("| mode | train state MiB per device | teacher MiB per device |")
  print("|---|---:|---:|")
  for mode in sharding.PARAM_SHARDINGS:
    config.sharding.params = mode
    run = build_run(config, dataset, teachers=teachers, mesh=mesh)  # places the teacher's variables
    print(f"| {mode} | {per_device_mib(init_state(run)):.2f} | {per_device_mib(run.teacher_variables):.2f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
