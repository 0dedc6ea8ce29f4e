"""CIFAR-100 PKT (probabilistic knowledge transfer), RepDistiller's `--distill pkt -a 0 -b 30000`.

RepDistiller (HobbitLong/RepDistiller, `train_student.py`, `scripts/run_cifar_distill.sh`) runs every method but
KD as `-r 1 -a 0 -b β`: `1·CE + β·loss`, no KD term, on the recipe of experiments/cifar100_kd.py (SGD lr 0.05,
0.01 for MobileNetV2/ShuffleNet students, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at
150/180/210).
Passalis & Tefas, ECCV 2018 (arXiv:1803.10837), RepDistiller's `PKT` on the pooled embedding: cosine-kernel
conditional probabilities, KL averaged over the B² entries, ε 1e-7, β = 30000.

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  74.54   (RepDistiller README table 1 = CRD paper Table 1)
  wrn40_2_wrn40_1  73.45   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      70.34   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     70.25   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     72.61   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   73.64   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       72.88   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_mv2        67.13   (RepDistiller README table 2 = CRD paper Table 2)
  res50_mv2        66.52   (RepDistiller README table 2 = CRD paper Table 2)
  res50_vgg8       73.01   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv1    74.10   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv2    74.69   (RepDistiller README table 2 = CRD paper Table 2)
  wrn40_2_shuv1    73.89   (RepDistiller README table 2 = CRD paper Table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/pkt.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_pkt_res32x4_res8x4
"""

import c100_common


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  return c100_common.repdistiller(pair, "pkt", 30000.0)
