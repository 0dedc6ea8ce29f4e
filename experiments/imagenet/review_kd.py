"""ImageNet ReviewKD, as mdistiller's `configs/imagenet/*/reviewkd.yaml` and ReviewKD's README.

ReviewKD (arXiv:2104.09044): `CE + w·HCL`, w = 1 for ResNet-34 → ResNet-18 and 8 for ResNet-50 → MobileNetV1
(`--review-kd-loss-weight`), warm-up 1 epoch, student features pre-activation (`STU_PREACT: True`), fusion
width at most 512 (256 for MobileNetV1, `MAX_MID_CHANNEL`); batch 256, lr 0.1.
Recipe: experiments/imagenet/im_common.py (100 epochs, SGD momentum 0.9, wd 1e-4, × 0.1 at 30/60/90).

Published top-1 (%, experiments/imagenet/published.py):
  r34_r18  71.61  (dvlab-research/ReviewKD ImageNet/README.md)
  r50_mv1  72.56  (dvlab-research/ReviewKD ImageNet/README.md)
kd_jax reports the last epoch's top-1 on the official validation split (its test split here).

Launch (teacher: torchvision's ResNet-34 converted into a kd_jax run, e.g. with
`python -m kd_jax import-torch ...` into runs/in_resnet34; `:r50_mv1` for ResNet-50 → MobileNetV1):
  python -m kd_jax train --config experiments/imagenet/review_kd.py:r34_r18 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/in_resnet34 --workdir runs/in_review_kd_r34_r18
"""

import im_common

WEIGHT = {"r34_r18": 1.0, "r50_mv1": 8.0}
MID_CHANNELS = {"r34_r18": 512, "r50_mv1": 256}


def get_config(pair: str = im_common.DEFAULT_PAIR):
  pair = im_common.pair_name(pair)
  c = im_common.student_config(pair, batch_size=256)
  c.loss.review_kd = {"weight": WEIGHT[pair], "warmup_epochs": 1.0, "student_preact": True,
                      "max_mid_channels": MID_CHANNELS[pair]}
  return c
