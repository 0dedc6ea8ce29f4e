"""The recommender student alone: mf_small (10 factors) on the synthetic ratings, squared error + factor L2
(METHODS.md item 15b).

  python -m kd_jax train --config experiments/rec_student.py --workdir runs/rec_student
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("student", seed=0)
