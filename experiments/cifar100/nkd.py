"""CIFAR-100 NKD (normalized KD).

Yang et al., ICCV 2023 (arXiv:2303.13005), yzd-v/cls_KD.
The config is experiments/cifar100_nkd.py (reused, not copied); its docstring gives the reference and the
per-pair values.

Published: the reference publishes ImageNet numbers only (nkd.md).
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/nkd.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_nkd_res32x4_res8x4
"""

import c100_common  # noqa: F401  (puts experiments/ on the import path)
import cifar100_nkd


def get_config(pair: str = "res32x4_res8x4"):
  return cifar100_nkd.get_config(pair)
