"""CIFAR-100 NKD, resnet32x4 → resnet8x4, on the recipe of experiments/cifar100_kd.py.

Normalized KD (Yang et al., ICCV 2023, arXiv:2303.13005) with the reference's CIFAR-100 values
(yzd-v/cls_KD, `configs/distillers/cifar100/res34_distill_res18_cifar.py`): `NKDLoss(temp=3.0, gamma=3.5)`
added at weight 1 to the student's CE at weight 1 (`ClassificationDistiller`). That config is for
resnet34 → resnet18 with mmcls's CIFAR recipe; here the pair and the training recipe are RepDistiller's
(SGD lr 0.05, batch 64, 240 epochs). The reference's published results (`nkd.md`) are ImageNet only
(ResNet-34 → ResNet-18: 71.96%); it gives no CIFAR-100 number for resnet32x4 → resnet8x4. For comparison,
RepDistiller reports 73.33% for KD and 72.50% for the CE student on this pair.

Launch:
  python -m kd_jax train --config experiments/cifar100_nkd.py \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_nkd_r8x4
"""

import cifar100_kd


def get_config(pair: str = "res32x4_res8x4"):
  c = cifar100_kd.get_config(pair)
  c.loss = {"ce": {"weight": 1.0}, "nkd": {"weight": 1.0, "temperature": 3.0, "gamma": 3.5}}
  return c
