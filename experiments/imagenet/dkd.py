"""ImageNet DKD, as mdistiller's `configs/imagenet/{r34_r18,r50_mv1}/dkd.yaml`.

Decoupled KD (arXiv:2203.08679): CE 1, α 1, T 1, warm-up 1 epoch, β 0.5 for ResNet-34 → ResNet-18 and 2 for
ResNet-50 → MobileNetV1; batch 512, lr 0.2.
Recipe: experiments/imagenet/im_common.py (100 epochs, SGD momentum 0.9, wd 1e-4, × 0.1 at 30/60/90).

Published top-1 (%, experiments/imagenet/published.py):
  r34_r18  71.70  (megvii-research/mdistiller README.md)
  r50_mv1  72.05  (megvii-research/mdistiller README.md)
kd_jax reports the last epoch's top-1 on the official validation split (its test split here).

Launch (teacher: torchvision's ResNet-34 converted into a kd_jax run, e.g. with
`python -m kd_jax import-torch ...` into runs/in_resnet34; `:r50_mv1` for ResNet-50 → MobileNetV1):
  python -m kd_jax train --config experiments/imagenet/dkd.py:r34_r18 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/in_resnet34 --workdir runs/in_dkd_r34_r18
"""

import im_common

BETA = {"r34_r18": 0.5, "r50_mv1": 2.0}


def get_config(pair: str = im_common.DEFAULT_PAIR):
  c = im_common.student_config(pair, batch_size=512)
  c.loss.dkd = {"weight": 1.0, "alpha": 1.0, "beta": BETA[im_common.pair_name(pair)], "temperature": 1.0,
                "warmup_epochs": 1.0}
  return c
