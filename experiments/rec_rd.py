"""Ranking Distillation (Tang & Wang, KDD 2018) for ratings: mf_small learns the teacher's predicted ratings of its
top-10 unrated items, position-weighted (METHODS.md item 15b).

Train the teacher first (experiments/rec_teacher.py, into runs/rec_teacher; elsewhere add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/rec_rd.py --workdir runs/rec_rd
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("rd", seed=0, teacher_workdir="runs/rec_teacher")
