"""Collaborative distillation, student-guided (Lee et al., ICDM 2019): the teacher's ratings of unrated items
drawn by their rank in the student's current ranking, P(r) ∝ exp(−r/λ), recomputed every step (METHODS.md item
15b; settings in experiments/rec_configs.py, 'cd_student').

Train the teacher first (experiments/rec_teacher.py, into runs/rec_teacher; elsewhere add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/rec_cd_student.py --workdir runs/rec_cd_student
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("cd_student", seed=0, teacher_workdir="runs/rec_teacher")
