"""CIFAR-100 DIST (KD from a stronger teacher), on RepDistiller's recipe.

Huang, You, Wang, Qian, Xu, NeurIPS 2022 (arXiv:2205.10536), hunto/DIST_KD: `CE + DIST`, DIST = β·inter-class
+ γ·intra-class Pearson-correlation distances of the softened predictions, β = γ = 1 and T = 4 (kd_jax's
documented CIFAR setting, docs/methods.md) [assume: the reference's `configs/strategies/distill/dist_cifar.yaml`
lives in a submodule that could not be read here, so its loss weights, epochs and warm-up were not checked].
The README trains MobileNetV2/ShuffleNet students at lr 0.01, as here.

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn40_1  74.43   (DIST_KD README, CIFAR-100 table (mean of runs))
  res56_res20      71.75   (DIST_KD README, CIFAR-100 table (mean of runs))
  res32x4_res8x4   76.31   (DIST_KD README, CIFAR-100 table (mean of runs))
  res50_mv2        68.66   (DIST_KD README, CIFAR-100 table (mean of runs))
  res32x4_shuv1    76.34   (DIST_KD README, CIFAR-100 table (mean of runs))
  res32x4_shuv2    77.35   (DIST_KD README, CIFAR-100 table (mean of runs))
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/dist.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_dist_res32x4_res8x4
"""

import c100_common


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  c = c100_common.student_config(pair)
  c.loss.dist = {"weight": 1.0, "beta": 1.0, "gamma": 1.0, "temperature": 4.0}
  return c
