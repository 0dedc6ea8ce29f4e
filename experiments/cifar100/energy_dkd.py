"""CIFAR-100 Energy DKD, vgg13 → vgg8: the reference's only Energy-DKD config.

Kim et al., KBS 2024 (arXiv:2311.14334), Seonghak35/EnergyKD `configs/cifar100/energy_dkd/vgg13_vgg8.yaml`.
The config is experiments/cifar100_energy_dkd.py (reused, not copied); it takes no other pair.

Published: none retrieved (METHODS.md item 7).
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=vgg13, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/energy_dkd.py:vgg13_vgg8 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_vgg13 --workdir runs/c100_energy_dkd_vgg13_vgg8
"""

import c100_common
import cifar100_energy_dkd
from kd_jax.errors import KDJaxError

TABLE_PAIRS = ("vgg13_vgg8",)


def get_config(pair: str = "vgg13_vgg8"):
  if c100_common.cifar100_pairs.pair_name(pair) not in TABLE_PAIRS:
    raise KDJaxError("energy_dkd.py: the reference has an Energy-DKD config for vgg13_vgg8 only.")
  return cifar100_energy_dkd.get_config()
