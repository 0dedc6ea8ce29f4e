"""DE-RRD (Kang et al., CIKM 2020) for ratings: distillation experts on the user and item factors plus relaxed
ranking distillation of the teacher's top unrated items (METHODS.md item 15b).

Train the teacher first (experiments/rec_teacher.py, into runs/rec_teacher; elsewhere add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/rec_de_rrd.py --workdir runs/rec_de_rrd
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("de_rrd", seed=0, teacher_workdir="runs/rec_teacher")
