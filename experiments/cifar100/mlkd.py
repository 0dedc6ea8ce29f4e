"""CIFAR-100 MLKD (multi-level logit distillation).

Jin, Wang, Lin, CVPR 2023, Jin-Ying/Multi-Level-Logit-Distillation; MLKD numbers as the logit-standardization README lists them.
The config is experiments/cifar100_mlkd.py (reused, not copied); its docstring gives the reference and the
per-pair values.

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  res32x4_res8x4   77.08   (logit-standardization-KD README table 1)
  vgg13_vgg8       75.18   (logit-standardization-KD README table 1)
  wrn40_2_wrn40_1  75.35   (logit-standardization-KD README table 1)
  wrn40_2_wrn16_2  76.63   (logit-standardization-KD README table 1)
  res56_res20      72.19   (logit-standardization-KD README table 1)
  res110_res32     74.11   (logit-standardization-KD README table 1)
  res110_res20     71.89   (logit-standardization-KD README table 1)
  res32x4_shuv2    78.44   (logit-standardization-KD README table 2)
  res32x4_wrn16_2  76.52   (logit-standardization-KD README table 2)
  res32x4_wrn40_2  79.26   (logit-standardization-KD README table 2)
  wrn40_2_res8x4   77.33   (logit-standardization-KD README table 2)
  wrn40_2_mv2      70.78   (logit-standardization-KD README table 2)
  vgg13_mv2        70.57   (logit-standardization-KD README table 2)
  res50_mv2        71.04   (logit-standardization-KD README table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/mlkd.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_mlkd_res32x4_res8x4
"""

import c100_common  # noqa: F401  (puts experiments/ on the import path)
import cifar100_mlkd


def get_config(pair: str = "res32x4_res8x4"):
  return cifar100_mlkd.get_config(pair)
