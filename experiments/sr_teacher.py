"""The SR teacher of the embedded-photo studies: edsr_8x32 (8 residual blocks, 32 channels) trained with L1.

Launch:
  python -m kd_jax train --config experiments/sr_teacher.py --workdir runs/sr_teacher
Its exported model (runs/sr_teacher/model) is the teacher.workdir of every experiments/sr_<method>.py.
"""

from kd_jax.sr_study import sr_method_config


def get_config():
  return sr_method_config("teacher")
