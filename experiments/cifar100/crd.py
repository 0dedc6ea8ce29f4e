"""CIFAR-100 CRD (contrastive representation distillation), RepDistiller's `--distill crd -a 0 -b 0.8`.

RepDistiller (HobbitLong/RepDistiller, `train_student.py`, `scripts/run_cifar_distill.sh`) runs every method but
KD as `-r 1 -a 0 -b β`: `1·CE + β·loss`, no KD term, on the recipe of experiments/cifar100_kd.py (SGD lr 0.05,
0.01 for MobileNetV2/ShuffleNet students, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at
150/180/210).
Tian, Krishnan, Isola, ICLR 2020 (arXiv:1910.10699), RepDistiller's `CRDLoss` with its defaults: linear + L2
heads to `--feat_dim 128`, `--nce_k 16384` negatives drawn from other classes (`--mode exact`), `--nce_t 0.07`,
memory momentum `--nce_m 0.5`, β = 0.8. (`-a 1` adds KD: the README's CRD+KD row, not carried here.)

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  75.48   (RepDistiller README table 1 = CRD paper Table 1)
  wrn40_2_wrn40_1  74.14   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      71.16   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     71.46   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     73.48   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   75.51   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       73.94   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_mv2        69.73   (RepDistiller README table 2 = CRD paper Table 2)
  res50_mv2        69.11   (RepDistiller README table 2 = CRD paper Table 2)
  res50_vgg8       74.30   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv1    75.11   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv2    75.65   (RepDistiller README table 2 = CRD paper Table 2)
  wrn40_2_shuv1    76.05   (RepDistiller README table 2 = CRD paper Table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/crd.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_crd_res32x4_res8x4
"""

import c100_common


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  return c100_common.repdistiller(pair, "crd", 0.8, feat_dim=128, nce_k=16384, nce_t=0.07, nce_m=0.5, mode="nce")
