"""The recommender teacher: mf_large (biased MF, 100 factors) on the synthetic ratings, squared error + factor L2
(METHODS.md item 15b; experiments/rec_configs.py has the settings).

  python -m kd_jax train --config experiments/rec_teacher.py --workdir runs/rec_teacher
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("teacher", seed=0)
