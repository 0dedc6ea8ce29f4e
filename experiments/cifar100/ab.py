"""CIFAR-100 AB (activation boundaries), RepDistiller's `--distill abound -a 0 -b 1` with its init phase.

RepDistiller (HobbitLong/RepDistiller, `train_student.py`, `scripts/run_cifar_distill.sh`) runs every method but
KD as `-r 1 -a 0 -b β`: `1·CE + β·loss`, no KD term, on the recipe of experiments/cifar100_kd.py (SGD lr 0.05,
0.01 for MobileNetV2/ShuffleNet students, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at
150/180/210).
Heo et al., AAAI 2019 (arXiv:1811.03233). RepDistiller first trains the student's feature layers and the
connectors on the AB loss alone for `--init_epochs 30` (`helper/pretrain.py`), then the student on CE alone
(its `train_distill` sets the AB term to 0 in the main stage, so `-b 1` has no effect there). The config is
experiments/cifar100_ab.py (reused), whose docstring lists the remaining differences.

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  72.50   (RepDistiller README table 1 = CRD paper Table 1)
  wrn40_2_wrn40_1  72.38   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      69.47   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     69.53   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     70.98   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   73.17   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       70.94   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_mv2        66.06   (RepDistiller README table 2 = CRD paper Table 2)
  res50_mv2        67.20   (RepDistiller README table 2 = CRD paper Table 2)
  res50_vgg8       70.65   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv1    73.55   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv2    74.31   (RepDistiller README table 2 = CRD paper Table 2)
  wrn40_2_shuv1    73.34   (RepDistiller README table 2 = CRD paper Table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/ab.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_ab_res32x4_res8x4
"""

import c100_common  # noqa: F401  (puts experiments/ on the import path)
import cifar100_ab


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  return cifar100_ab.get_config(pair)
