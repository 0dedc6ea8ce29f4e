"""The regression teacher: regression_mlp_large (256-256) on the labeled 20% of scikit-learn's diabetes data.

Launch:
  python -m kd_jax train --config experiments/regression_teacher.py --workdir runs/regression_teacher
Its exported model (runs/regression_teacher/model) is the teacher of experiments/regression_pseudo_label.py.
For the ensemble, a second teacher on the same split with another initialisation:
  python -m kd_jax train --config experiments/regression_teacher.py --config.seed=100 \
      --workdir runs/regression_teacher_s100
(`data.split_seed` stays 0, so it sees the same labeled examples.) Other datasets: --config.data.name=... with
a matching model, e.g. experiments/trajectory_teacher.py. Settings: experiments/regression_configs.py; the
comparison over 3 seeds is in docs/methods.md ("Regression and pseudo-labels"), from
experiments/regression_study.py.
"""

from regression_configs import regression_config


def get_config():
  return regression_config("diabetes", "teacher", seed=0)
