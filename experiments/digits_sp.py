"""SP student: cnn_small learning from the cnn_large teacher on digits, by similarity-preserving KD.

Tung & Mori, ICCV 2019, arXiv:1907.09682. As RepDistiller (`--distill similarity -a 0 -b 3000`, resnet32x4 →
resnet8x4, 72.94% on CIFAR-100): CE weight 1 plus 3000 times the SP loss on the last stage output
(`stage=-1`). Both use batch size 64, so the 1/B² normalisation gives the same scale as on CIFAR. The
student is cnn_small, not the default study's mlp_small, which has no spatial stages; its CE-only baseline
is the same command with --config.loss="{'ce': {'weight': 1.0}}".

At the CIFAR weight, one seed, 30 epochs, teacher from digits_teacher.py: 98.52% test accuracy
(CE-only cnn_small: 97.77%; one test image is 0.19 points).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_sp.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_sp
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}, "sp": {"weight": 3000.0, "stage": -1}}
  return c
