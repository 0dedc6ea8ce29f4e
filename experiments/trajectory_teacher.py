"""The trajectory teacher: gru_trajectory_large (GRU 64) on the labeled 20% of the embedded synthetic
trajectories (8 observed → 12 future positions at 0.4 s, the ETH/UCY convention; kd_jax.data.trajectory_arrays).

Launch:
  python -m kd_jax train --config experiments/trajectory_teacher.py --workdir runs/trajectory_teacher
Its exported model is the teacher of experiments/trajectory_pseudo_label.py; a second teacher for the
ensemble: add --config.seed=100 --workdir runs/trajectory_teacher_s100 (same split: data.split_seed stays 0).
Test RMSE/MAE are in metres, over the 24 coordinates of the future positions.
"""

from regression_configs import regression_config


def get_config():
  return regression_config("trajectories", "teacher", seed=0)
