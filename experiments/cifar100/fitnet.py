"""CIFAR-100 FitNet, RepDistiller's `--distill hint -a 0 -b 100` (hint layer 2).

RepDistiller (HobbitLong/RepDistiller, `train_student.py`, `scripts/run_cifar_distill.sh`) runs every method but
KD as `-r 1 -a 0 -b β`: `1·CE + β·loss`, no KD term, on the recipe of experiments/cifar100_kd.py (SGD lr 0.05,
0.01 for MobileNetV2/ShuffleNet students, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at
150/180/210).
Romero et al., ICLR 2015 (arXiv:1412.6550). `CE + 100·MSE(ConvReg(f_s), f_t)` at RepDistiller's `--hint_layer 2`,
the second stage's output (`ModelOutput.stages[1]`); the regressor is trained with the student. The config is
experiments/cifar100_fitnet.py (reused). RepDistiller trains FitNet in one stage (no separate hint phase).

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  73.58   (RepDistiller README table 1 = CRD paper Table 1)
  wrn40_2_wrn40_1  72.24   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      69.21   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     68.99   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     71.06   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   73.50   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       71.02   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_mv2        64.14   (RepDistiller README table 2 = CRD paper Table 2)
  res50_mv2        63.16   (RepDistiller README table 2 = CRD paper Table 2)
  res50_vgg8       70.69   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv1    73.59   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv2    73.54   (RepDistiller README table 2 = CRD paper Table 2)
  wrn40_2_shuv1    73.73   (RepDistiller README table 2 = CRD paper Table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/fitnet.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_fitnet_res32x4_res8x4
"""

import c100_common  # noqa: F401  (puts experiments/ on the import path)
import cifar100_fitnet


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  return cifar100_fitnet.get_config(pair)
