"""Full topology distillation (Kang et al., KDD 2021): mf_small's cosine-similarity structure among the batch's
users and items follows the teacher's (METHODS.md item 15b).

Train the teacher first (experiments/rec_teacher.py, into runs/rec_teacher; elsewhere add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/rec_td.py --workdir runs/rec_td
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("td", seed=0, teacher_workdir="runs/rec_teacher")
