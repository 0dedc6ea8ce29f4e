"""The ImageNet table: experiments/cifar100/run_table.py with `--table imagenet` (teachers are never trained:
give them with --teacher-workdir MODEL=DIR or import them into <workdir>/teachers/<model>/seed=0).

  python experiments/imagenet/run_table.py --workdir runs/in_table --data-dir $HOME/tensorflow_datasets \
      --methods kd,dkd --pairs r34_r18 --seeds 0 \
      --teacher-workdir imagenet_resnet34=runs/in_resnet34 --teacher-workdir imagenet_resnet50=runs/in_resnet50
"""

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # im_common, for published.pair_name
# Loaded by path: this file has the same name as the shared script.
_spec = importlib.util.spec_from_file_location(
    "cifar100_run_table", os.path.join(os.path.dirname(HERE), "cifar100", "run_table.py"))
run_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_table)

if __name__ == "__main__":
  sys.exit(run_table.main(table="imagenet"))
