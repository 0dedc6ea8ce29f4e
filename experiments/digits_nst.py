"""NST student: cnn_small learning from the cnn_large teacher on digits, by neuron selectivity transfer.

Huang & Wang, 2017, arXiv:1707.01219. As RepDistiller (`--distill nst -a 0 -b 50`, resnet32x4 → resnet8x4,
73.30% on CIFAR-100): CE weight 1 plus 50 times the polynomial-kernel (d = 2, c = 0) MMD² summed over every
stage output (`stages=None`). The student is cnn_small, not the default study's mlp_small, which has no
spatial stages; its CE-only baseline is the same command with --config.loss="{'ce': {'weight': 1.0}}".

At the CIFAR weight, one seed, 30 epochs, teacher from digits_teacher.py: 97.03% test accuracy
(CE-only cnn_small: 97.77%; one test image is 0.19 points).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_nst.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_nst
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}, "nst": {"weight": 50.0}}
  return c
