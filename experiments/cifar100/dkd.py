"""CIFAR-100 DKD (decoupled KD), as mdistiller's `configs/cifar100/dkd/<pair>.yaml`.

Zhao et al., CVPR 2022 (arXiv:2203.08679), megvii-research/mdistiller (`mdistiller/distillers/DKD.py`,
`engine/cfg.py` CFG.DKD): `1·CE + min(epoch/20, 1)·(α·TCKD + β·NCKD)`, α 1, T 4, warm-up 20 epochs, β 8 except
where the pair's yaml sets it: 2 for resnet56 → resnet20 and resnet110 → resnet32, 6 for wrn_40_2 → wrn_16_2,
wrn_40_2 → wrn_40_1 and vgg13 → MobileNetV2. Recipe as RepDistiller's (the yaml files: SGD 0.05, 0.01 for
MobileNetV2/ShuffleNet students, batch 64, 240 epochs, × 0.1 at 150/180/210, wd 5e-4).

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  res56_res20      71.97   (mdistiller README, DKD CIFAR-100 tables)
  res110_res32     74.11   (mdistiller README, DKD CIFAR-100 tables)
  res32x4_res8x4   76.32   (mdistiller README, DKD CIFAR-100 tables)
  wrn40_2_wrn16_2  76.23   (mdistiller README, DKD CIFAR-100 tables)
  wrn40_2_wrn40_1  74.81   (mdistiller README, DKD CIFAR-100 tables)
  vgg13_vgg8       74.68   (mdistiller README, DKD CIFAR-100 tables)
  res32x4_shuv1    76.45   (mdistiller README, DKD CIFAR-100 tables)
  wrn40_2_shuv1    76.70   (mdistiller README, DKD CIFAR-100 tables)
  vgg13_mv2        69.71   (mdistiller README, DKD CIFAR-100 tables)
  res50_mv2        70.35   (mdistiller README, DKD CIFAR-100 tables)
  res32x4_shuv2    77.07   (mdistiller README, DKD CIFAR-100 tables)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/dkd.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_dkd_res32x4_res8x4
"""

import c100_common

# β where mdistiller's configs/cifar100/dkd/<pair>.yaml overrides CFG.DKD.BETA = 8.
BETA = {"res56_res20": 2.0, "res110_res32": 2.0, "wrn40_2_wrn16_2": 6.0, "wrn40_2_wrn40_1": 6.0, "vgg13_mv2": 6.0}


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  pair = c100_common.cifar100_pairs.pair_name(pair)
  c = c100_common.student_config(pair)
  c.loss.dkd = {"weight": 1.0, "alpha": 1.0, "beta": BETA.get(pair, 8.0), "temperature": 4.0, "warmup_epochs": 20.0}
  return c
