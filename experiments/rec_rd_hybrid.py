"""Ranking distillation with the hybrid weight (Tang & Wang, KDD 2018): RD's position weights times the
ranking-discrepancy weight from the student's estimated rank of the teacher's items (METHODS.md item 15b;
settings in experiments/rec_configs.py, 'rd_hybrid').

Train the teacher first (experiments/rec_teacher.py, into runs/rec_teacher; elsewhere add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/rec_rd_hybrid.py --workdir runs/rec_rd_hybrid
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("rd_hybrid", seed=0, teacher_workdir="runs/rec_teacher")
