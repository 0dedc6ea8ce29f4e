"""CIFAR-100 CTKD (curriculum temperature KD).

Li et al., AAAI 2023 (arXiv:2211.16231), zhengli97/CTKD; CTKD numbers as the logit-standardization README lists them.
The config is experiments/cifar100_ctkd.py (reused, not copied); its docstring gives the reference and the
per-pair values.

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  res32x4_res8x4   73.39   (logit-standardization-KD README table 1)
  vgg13_vgg8       73.52   (logit-standardization-KD README table 1)
  wrn40_2_wrn40_1  73.93   (logit-standardization-KD README table 1)
  wrn40_2_wrn16_2  75.45   (logit-standardization-KD README table 1)
  res56_res20      71.19   (logit-standardization-KD README table 1)
  res110_res32     73.52   (logit-standardization-KD README table 1)
  res110_res20     70.99   (logit-standardization-KD README table 1)
  res32x4_shuv2    75.37   (logit-standardization-KD README table 2)
  res32x4_wrn16_2  74.57   (logit-standardization-KD README table 2)
  res32x4_wrn40_2  77.66   (logit-standardization-KD README table 2)
  wrn40_2_res8x4   74.61   (logit-standardization-KD README table 2)
  wrn40_2_mv2      68.34   (logit-standardization-KD README table 2)
  vgg13_mv2        68.50   (logit-standardization-KD README table 2)
  res50_mv2        68.67   (logit-standardization-KD README table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet56, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/ctkd.py:res56_res20 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet56 --workdir runs/c100_ctkd_res56_res20
"""

import c100_common  # noqa: F401  (puts experiments/ on the import path)
import cifar100_ctkd


def get_config(pair: str = "res56_res20"):
  return cifar100_ctkd.get_config(pair)
