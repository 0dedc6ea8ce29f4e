"""ImageNet student trained alone (the 'Student' baseline).

Batch 256, lr 0.1, CE alone.
Recipe: experiments/imagenet/im_common.py (100 epochs, SGD momentum 0.9, wd 1e-4, × 0.1 at 30/60/90).

Published top-1 (%, experiments/imagenet/published.py):
  r34_r18  69.76  (hunto/DIST_KD README.md)
  r50_mv1  70.13  (hunto/DIST_KD README.md)
kd_jax reports the last epoch's top-1 on the official validation split (its test split here).

Launch (`:r50_mv1` for MobileNetV1):
  python -m kd_jax train --config experiments/imagenet/ce.py:r34_r18 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --workdir runs/in_ce_r34_r18
"""

import im_common


def get_config(pair: str = im_common.DEFAULT_PAIR):
  c = im_common.student_config(pair)
  c.teacher.model = ""
  return c
