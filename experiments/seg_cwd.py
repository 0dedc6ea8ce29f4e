"""Segmentation student (EO only) with channel-wise distillation (CWD, Shu et al., ICCV 2021, arXiv:2011.13256)
from the EO+SAR teacher: `CE + 3·CWD` at τ = 1 (experiments/seg_configs.py).

Launch (after experiments/seg_teacher.py):
  python -m kd_jax train --config experiments/seg_cwd.py --config.teacher.workdir=runs/seg_teacher \
      --workdir runs/seg_cwd
"""

from seg_configs import CWD, seg_config


def get_config():
  return seg_config("student", CWD)
