"""CIFAR-100 AT (attention transfer), RepDistiller's `--distill attention -a 0 -b 1000`.

RepDistiller (HobbitLong/RepDistiller, `train_student.py`, `scripts/run_cifar_distill.sh`) runs every method but
KD as `-r 1 -a 0 -b β`: `1·CE + β·loss`, no KD term, on the recipe of experiments/cifar100_kd.py (SGD lr 0.05,
0.01 for MobileNetV2/ShuffleNet students, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at
150/180/210).
Zagoruyko & Komodakis, ICLR 2017 (arXiv:1612.03928), RepDistiller's `distiller_zoo/AT.py` (p = 2): on every stage
output (`feat[1:-1]`), the squared mean difference of the L2-normalised `mean_c f²` maps, β = 1000 (kd_jax's
`form='reference'`, the default).

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  74.08   (RepDistiller README table 1 = CRD paper Table 1)
  wrn40_2_wrn40_1  72.77   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      70.55   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     70.22   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     72.31   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   73.44   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       71.43   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_mv2        59.40   (RepDistiller README table 2 = CRD paper Table 2)
  res50_mv2        58.58   (RepDistiller README table 2 = CRD paper Table 2)
  res50_vgg8       71.84   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv1    71.73   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv2    72.73   (RepDistiller README table 2 = CRD paper Table 2)
  wrn40_2_shuv1    73.32   (RepDistiller README table 2 = CRD paper Table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/at.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_at_res32x4_res8x4
"""

import c100_common


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  return c100_common.repdistiller(pair, "at", 1000.0, p=2.0)
