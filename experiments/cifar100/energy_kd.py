"""CIFAR-100 Energy KD.

Kim et al., KBS 2024 (arXiv:2311.14334), Seonghak35/EnergyKD.
The config is experiments/cifar100_energy_kd.py (reused, not copied); its docstring gives the reference and the
per-pair values.

Published: no per-pair accuracy was retrieved from the reference (METHODS.md item 7).
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet56, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/energy_kd.py:res56_res20 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet56 --workdir runs/c100_energy_kd_res56_res20
"""

import c100_common  # noqa: F401  (puts experiments/ on the import path)
import cifar100_energy_kd


def get_config(pair: str = "res56_res20"):
  return cifar100_energy_kd.get_config(pair)
