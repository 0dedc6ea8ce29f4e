"""CIFAR-100 student trained alone with cross-entropy: the 'Student' row of the benchmark tables.

RepDistiller's `train_student.py` recipe without a teacher (experiments/cifar100_kd.py's SGD lr 0.05, 0.01 for
MobileNetV2/ShuffleNet students, batch 64, 240 epochs, × 0.1 at 150/180/210); RepDistiller's README prints
these numbers as the 'Student' line of each column (its own vanilla runs, `train_teacher.py`).

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  73.26   (RepDistiller README table 1 = CRD paper Table 1)
  wrn40_2_wrn40_1  71.98   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      69.06   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     69.06   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     71.14   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   72.50   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       70.36   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_mv2        64.60   (RepDistiller README table 2 = CRD paper Table 2)
  res50_mv2        64.60   (RepDistiller README table 2 = CRD paper Table 2)
  res50_vgg8       70.36   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv1    70.50   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv2    71.82   (RepDistiller README table 2 = CRD paper Table 2)
  wrn40_2_shuv1    70.50   (RepDistiller README table 2 = CRD paper Table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':', or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/ce.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --workdir runs/c100_ce_res32x4_res8x4
"""

import c100_common


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  c = c100_common.student_config(pair)
  c.teacher.model = ""  # no teacher is read
  return c
