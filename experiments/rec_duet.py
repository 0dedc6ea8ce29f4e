"""DUET (Bae et al., Information Fusion 2025): mf_small learns the hard ratings plus the rating teacher's predicted
ratings of the unrated items the preference teacher ranks highest (METHODS.md item 15b).

Train both teachers first (experiments/rec_teacher.py into runs/rec_teacher, experiments/rec_preference_teacher.py
into runs/rec_preference_teacher), then:
  python -m kd_jax train --config experiments/rec_duet.py --workdir runs/rec_duet
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("duet", seed=0, teacher_workdir="runs/rec_teacher",
                    preference_workdir="runs/rec_preference_teacher")
