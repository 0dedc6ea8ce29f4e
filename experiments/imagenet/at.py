"""ImageNet AT, as mdistiller's `configs/imagenet/{r34_r18,r50_mv1}/at.yaml`.

Attention transfer (arXiv:1612.03928) with mdistiller's CFG.AT defaults [assume: CE 1, AT weight 1000, p 2, on
every stage output, as its CIFAR values; the ImageNet yaml sets only the recipe], batch 512, lr 0.2.
Recipe: experiments/imagenet/im_common.py (100 epochs, SGD momentum 0.9, wd 1e-4, × 0.1 at 30/60/90).

Published: no ImageNet number for this method was found in a source readable here; none is carried.
kd_jax reports the last epoch's top-1 on the official validation split (its test split here).

Launch (teacher: torchvision's ResNet-34 converted into a kd_jax run, e.g. with
`python -m kd_jax import-torch ...` into runs/in_resnet34; `:r50_mv1` for ResNet-50 → MobileNetV1):
  python -m kd_jax train --config experiments/imagenet/at.py:r34_r18 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/in_resnet34 --workdir runs/in_at_r34_r18
"""

import im_common


def get_config(pair: str = im_common.DEFAULT_PAIR):
  c = im_common.student_config(pair, batch_size=512)
  c.loss.at = {"weight": 1000.0, "p": 2.0}
  return c
