"""ImageNet KD, as mdistiller's `configs/imagenet/{r34_r18,r50_mv1}/kd.yaml`.

Hinton KD with mdistiller's ImageNet values: `0.5·CE + 0.5·T²·KL` at T = 1, batch 512, lr 0.2.
(DIST's README also lists KD at T = 4: 71.21 for ResNet-34 → ResNet-18.)
Recipe: experiments/imagenet/im_common.py (100 epochs, SGD momentum 0.9, wd 1e-4, × 0.1 at 30/60/90).

Published top-1 (%, experiments/imagenet/published.py):
  r34_r18  71.03  (megvii-research/mdistiller README.md)
  r50_mv1  70.50  (megvii-research/mdistiller README.md)
kd_jax reports the last epoch's top-1 on the official validation split (its test split here).

Launch (teacher: torchvision's ResNet-34 converted into a kd_jax run, e.g. with
`python -m kd_jax import-torch ...` into runs/in_resnet34; `:r50_mv1` for ResNet-50 → MobileNetV1):
  python -m kd_jax train --config experiments/imagenet/kd.py:r34_r18 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/in_resnet34 --workdir runs/in_kd_r34_r18
"""

import im_common


def get_config(pair: str = im_common.DEFAULT_PAIR):
  c = im_common.student_config(pair, batch_size=512)
  c.loss = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 1.0}}
  return c
