"""CIFAR-100 Hinton KD, RepDistiller's `--distill kd -r 0.1 -a 0.9 -b 0` (T = 4).

Hinton, Vinyals, Dean 2015 (arXiv:1503.02531): `0.1·CE + 0.9·T²·KL(p_t^T‖p_s^T)`, T = 4 (RepDistiller's `--kd_T`
default; mdistiller's CFG.KD: CE 0.1, KD 0.9, T 4). The config is experiments/cifar100_kd.py (reused, not copied).

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  74.92   (RepDistiller README table 1 = CRD paper Table 1)
  wrn40_2_wrn40_1  73.54   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      70.66   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     70.67   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     73.08   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   73.33   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       72.98   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_mv2        67.37   (RepDistiller README table 2 = CRD paper Table 2)
  res50_mv2        67.35   (RepDistiller README table 2 = CRD paper Table 2)
  res50_vgg8       73.81   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv1    74.07   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv2    74.45   (RepDistiller README table 2 = CRD paper Table 2)
  wrn40_2_shuv1    74.83   (RepDistiller README table 2 = CRD paper Table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/kd.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_kd_res32x4_res8x4
"""

import c100_common


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  return c100_common.cifar100_kd.get_config(pair)
