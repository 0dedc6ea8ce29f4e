"""ImageNet CRD, as mdistiller's `configs/imagenet/{r34_r18,r50_mv1}/crd.yaml`.

Contrastive representation distillation (arXiv:1910.10699): `CE + 0.8·CRD`, 128-d heads, 16384 negatives,
T 0.07, memory momentum 0.5 (RepDistiller's values; mdistiller's CFG.CRD), batch 256, lr 0.1. The memory banks
hold 1.28M × 128 floats per model, split by rows across devices.
Recipe: experiments/imagenet/im_common.py (100 epochs, SGD momentum 0.9, wd 1e-4, × 0.1 at 30/60/90).

Published top-1 (%, experiments/imagenet/published.py):
  r34_r18  71.17  (CRD's ImageNet numbers as quoted in WangYZ1608/Knowledge-Distillation-via-ND README.md)
  r50_mv1  71.37  (CRD's ImageNet numbers as quoted in WangYZ1608/Knowledge-Distillation-via-ND README.md)
kd_jax reports the last epoch's top-1 on the official validation split (its test split here).

Launch (teacher: torchvision's ResNet-34 converted into a kd_jax run, e.g. with
`python -m kd_jax import-torch ...` into runs/in_resnet34; `:r50_mv1` for ResNet-50 → MobileNetV1):
  python -m kd_jax train --config experiments/imagenet/crd.py:r34_r18 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/in_resnet34 --workdir runs/in_crd_r34_r18
"""

import im_common


def get_config(pair: str = im_common.DEFAULT_PAIR):
  c = im_common.student_config(pair, batch_size=256)
  c.loss.crd = {"weight": 0.8, "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5, "mode": "nce"}
  return c
