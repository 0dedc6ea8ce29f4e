"""Segmentation student alone: unet_tiny on the EO channels of the `buildings` tiles, CE only.

Launch:
  python -m kd_jax train --config experiments/seg_student.py --workdir runs/seg_student
"""

from seg_configs import seg_config


def get_config():
  return seg_config("student")
