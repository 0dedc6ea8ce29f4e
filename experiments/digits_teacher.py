"""Teacher of the default study (cnn_large on the embedded digits data), alone.

Launch:
  python -m kd_jax train --config experiments/digits_teacher.py --workdir runs/digits_teacher
"""

from kd_jax.study import study_configs


def get_config():
  return study_configs()["teacher"]
