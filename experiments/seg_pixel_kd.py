"""Segmentation student (EO only) with per-pixel KD from the EO+SAR teacher (experiments/seg_configs.py).

`0.5·CE + 0.5·T²·KL` per valid pixel at T = 4; the teacher reads all four channels of the same batch.
Launch (after experiments/seg_teacher.py):
  python -m kd_jax train --config experiments/seg_pixel_kd.py --config.teacher.workdir=runs/seg_teacher \
      --workdir runs/seg_pixel_kd
"""

from seg_configs import PIXEL_KD, seg_config


def get_config():
  return seg_config("student", PIXEL_KD)
