"""DUET's first teacher: mf_large trained on pre-use preferences, "rated or not" (the `interaction` term:
the rated pairs against 4 uniformly drawn items per rating), on the synthetic ratings (METHODS.md item 15b).

  python -m kd_jax train --config experiments/rec_preference_teacher.py --workdir runs/rec_preference_teacher
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("preference_teacher", seed=0)
