"""Segmentation teacher: unet_small on the EO+SAR `buildings` tiles (experiments/seg_configs.py).

Launch:
  python -m kd_jax train --config experiments/seg_teacher.py --workdir runs/seg_teacher
"""

from seg_configs import seg_config


def get_config():
  return seg_config("teacher")
