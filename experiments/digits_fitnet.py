"""FitNet student: cnn_small regressing its middle stage onto the cnn_large teacher's on digits.

Romero et al., ICLR 2015, arXiv:1412.6550. As RepDistiller (`--distill hint -a 0 -b 100`, hint layer 2 of
its feature list, i.e. the middle stage): CE weight 1 plus 100 × the MSE between the regressed student
feature and the teacher's, trained jointly. The CE-only cnn_small baseline is the same command with
--config.loss="{'ce': {'weight': 1.0}}".

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_fitnet.py \\
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_fitnet
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}, "fitnet": {"weight": 100.0, "stage": 1}}
  return c
