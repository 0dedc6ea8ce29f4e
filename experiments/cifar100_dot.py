"""CIFAR-100 KD trained with DOT, resnet32x4 → resnet8x4, as mdistiller's `configs/cifar100/dot/res32x4_res8x4.yaml`.

DOT (Zhao, Cui, Song, Liang, "DOT: A Distillation-Oriented Trainer", ICCV 2023, arXiv:2307.08436; reference
megvii-research/mdistiller, `mdistiller/engine/dot.py` and the `DOT` trainer in `mdistiller/engine/trainer.py`):
the KD loss of experiments/cifar100_kd.py (0.1·CE + 0.9·KD, T = 4, mdistiller's KD defaults) with SGD whose
momentum is 0.9 − 0.075 for the CE gradient and 0.9 + 0.075 for the KD gradient; lr 0.05, weight decay 5e-4,
batch 64, 240 epochs, lr × 0.1 at epochs 150/180/210, as the reference config.

Published top-1 on CIFAR-100 (mdistiller README, "DOT" table; KD rows from the CRD benchmark):
  resnet32x4 → resnet8x4:      KD 73.33, KD+DOT 75.12
  vgg13 → vgg8:                KD 72.98, KD+DOT 73.77  (--config experiments/cifar100_dot.py:vgg13_vgg8)
  resnet32x4 → ShuffleNet-V2:  KD 74.45, KD+DOT 75.55  (--config experiments/cifar100_dot.py:res32x4_shuv2,
                                                        which also sets its config's lr 0.01)
mdistiller reports the best test accuracy over epochs; kd_jax reports the last epoch's.

Launch (teacher from experiments/cifar100_teacher.py):
  python -m kd_jax train --config experiments/cifar100_dot.py \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_dot_r8x4
"""

import cifar100_kd


def get_config(pair: str = "res32x4_res8x4"):
  c = cifar100_kd.get_config(pair)
  c.optim.name = "dot"
  c.optim.momentum = 0.9
  c.optim.dot_delta = 0.075
  return c
