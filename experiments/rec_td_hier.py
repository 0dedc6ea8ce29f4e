"""Hierarchical topology distillation, HTD (Kang et al., KDD 2021): mf_small's similarity structure follows the
teacher's within learnt preference groups and between the groups' prototypes and the entities, next to the
group-assignment loss (METHODS.md item 15b; settings in experiments/rec_configs.py, 'td_hier').

Train the teacher first (experiments/rec_teacher.py, into runs/rec_teacher; elsewhere add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/rec_td_hier.py --workdir runs/rec_td_hier
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("td_hier", seed=0, teacher_workdir="runs/rec_teacher")
