"""ImageNet DIST, after hunto/DIST_KD's baseline setting (`configs/strategies/distill/resnet_dist.yaml`).

DIST (arXiv:2205.10536): `CE + DIST`, β = γ = 1, T = 1 (the ImageNet code's values, docs/methods.md) on the
standard recipe, batch 256, lr 0.1 [assume: the reference yaml lives in a submodule not readable here, so its
batch, lr schedule and loss weights were not checked].
Recipe: experiments/imagenet/im_common.py (100 epochs, SGD momentum 0.9, wd 1e-4, × 0.1 at 30/60/90).

Published top-1 (%, experiments/imagenet/published.py):
  r34_r18  72.07  (hunto/DIST_KD README.md)
  r50_mv1  73.24  (hunto/DIST_KD README.md)
kd_jax reports the last epoch's top-1 on the official validation split (its test split here).

Launch (teacher: torchvision's ResNet-34 converted into a kd_jax run, e.g. with
`python -m kd_jax import-torch ...` into runs/in_resnet34; `:r50_mv1` for ResNet-50 → MobileNetV1):
  python -m kd_jax train --config experiments/imagenet/dist.py:r34_r18 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/in_resnet34 --workdir runs/in_dist_r34_r18
"""

import im_common


def get_config(pair: str = im_common.DEFAULT_PAIR):
  c = im_common.student_config(pair, batch_size=256)
  c.loss.dist = {"weight": 1.0, "beta": 1.0, "gamma": 1.0, "temperature": 1.0}
  return c
