"""KD student of the default study (mlp_small learning from a cnn_large teacher on digits).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_kd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_kd
Ablate with overrides, e.g. --config.loss.kd.temperature=2.0 or --config.loss.ce.weight=0.5.
"""

from kd_jax.study import study_configs


def get_config():
  return study_configs()["student_kd"]
