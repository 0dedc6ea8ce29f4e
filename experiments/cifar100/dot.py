"""CIFAR-100 KD trained with DOT (distillation-oriented trainer).

mdistiller's DOT: KD's loss with momenta 0.9 ∓ 0.075 for the task and distillation gradients.
The config is experiments/cifar100_dot.py (reused, not copied); its docstring gives the reference and the
per-pair values.

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  res32x4_res8x4   75.12   (mdistiller README, DOT CIFAR-100 table)
  vgg13_vgg8       73.77   (mdistiller README, DOT CIFAR-100 table)
  res32x4_shuv2    75.55   (mdistiller README, DOT CIFAR-100 table)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/dot.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_dot_res32x4_res8x4
"""

import c100_common  # noqa: F401  (puts experiments/ on the import path)
import cifar100_dot


def get_config(pair: str = "res32x4_res8x4"):
  return cifar100_dot.get_config(pair)
