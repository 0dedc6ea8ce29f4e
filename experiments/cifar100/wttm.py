"""CIFAR-100 WTTM (weighted transformed teacher matching).

Zheng & Yang, ICLR 2024 (arXiv:2402.11148), zkxufo/TTM.
The config is experiments/cifar100_wttm.py (reused, not copied); its docstring gives the reference and the
per-pair values.

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  res32x4_res8x4   76.06   (zkxufo/TTM README table 1)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/wttm.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_wttm_res32x4_res8x4
"""

import c100_common  # noqa: F401  (puts experiments/ on the import path)
import cifar100_wttm


def get_config(pair: str = "res32x4_res8x4"):
  return cifar100_wttm.get_config(pair)
