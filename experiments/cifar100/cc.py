"""CIFAR-100 CC (correlation congruence), RepDistiller's `--distill correlation -a 0 -b 0.02`.

RepDistiller (HobbitLong/RepDistiller, `train_student.py`, `scripts/run_cifar_distill.sh`) runs every method but
KD as `-r 1 -a 0 -b β`: `1·CE + β·loss`, no KD term, on the recipe of experiments/cifar100_kd.py (SGD lr 0.05,
0.01 for MobileNetV2/ShuffleNet students, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at
150/180/210).
Peng et al., ICCV 2019 (arXiv:1904.01802), RepDistiller's `Correlation` on two trained linear embeddings
(`LinearEmbed`, `--feat_dim 128`) of the pooled features, β = 0.02 (kd_jax `form='reference'`).

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  73.56   (RepDistiller README table 1 = CRD paper Table 1)
  wrn40_2_wrn40_1  72.21   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      69.63   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     69.48   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     71.48   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   72.97   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       70.71   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_mv2        64.86   (RepDistiller README table 2 = CRD paper Table 2)
  res50_mv2        65.43   (RepDistiller README table 2 = CRD paper Table 2)
  res50_vgg8       70.25   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv1    71.14   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv2    71.29   (RepDistiller README table 2 = CRD paper Table 2)
  wrn40_2_shuv1    71.38   (RepDistiller README table 2 = CRD paper Table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/cc.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_cc_res32x4_res8x4
"""

import c100_common


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  return c100_common.repdistiller(pair, "cc", 0.02, embed_dim=128, form="reference")
