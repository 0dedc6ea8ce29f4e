"""Pseudo-label distillation for trajectory prediction: gru_trajectory_small (GRU 16) with 20% of the training
labels, 0.5·L2(ground truth, labeled examples) + 0.5·L2(teacher's predicted future, every example).

Train the teacher first (experiments/trajectory_teacher.py, into runs/trajectory_teacher), then:
  python -m kd_jax train --config experiments/trajectory_pseudo_label.py --workdir runs/trajectory_pseudo_label
The ensemble variant: add --config.teacher.extra_workdirs="('runs/trajectory_teacher_s100',)"
--config.loss.pseudo_label.weighting=ensemble. The comparison over 3 seeds is in docs/methods.md
("Regression and pseudo-labels"), from experiments/regression_study.py.
"""

from regression_configs import regression_config


def get_config():
  return regression_config("trajectories", "pseudo_label", seed=0, teacher_workdirs=("runs/trajectory_teacher",))
