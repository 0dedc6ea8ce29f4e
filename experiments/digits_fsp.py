"""FSP student: cnn_small learning from a resnet20 teacher on digits, by matching flow (FSP) matrices.

Yim et al., CVPR 2017. FSP compares C1×C2 flow matrices, so paired student and teacher stages need equal
channel counts: the default study's cnn_large teacher (widths 32/64/128) cannot teach cnn_small (16/32/64)
this way, and this config uses a resnet20 teacher (16/32/64, stages at 8x8, 4x4, 2x2 on digits), as the paper
(ResNet-26 → ResNet-8) and RepDistiller (resnet32x4 → resnet8x4, 72.62% on CIFAR-100) pair equal widths.

Deviation: RepDistiller trains the student's feature layers on the FSP loss alone for 30 epochs, then trains
with cross-entropy alone (its `-b 50` multiplies a zero in the second phase). This config trains CE weight 1
plus 50 × FSP jointly, on the stage pairs (0, 1), (1, 2); the reference's two phases are
  --config.phases="({'name': 'init', 'epochs': 4, 'loss': {'fsp': {'weight': 50.0, 'stage_pairs': ((0, 1), (1, 2))}}}, {'name': 'main', 'loss': {'ce': {'weight': 1.0}}})"
(RepDistiller also pairs the stem with stage 1; `ModelOutput` has no stem). The CE-only cnn_small baseline is
the same command with --config.loss="{'ce': {'weight': 1.0}}".

One seed, 30 epochs, resnet20 teacher (98.14%) trained as below: 97.59% test accuracy (CE-only cnn_small:
97.77%; one test image is 0.19 points); the FSP term stays the larger part of the loss at weight 50.

Train the teacher first, then:
  python -m kd_jax train --config experiments/digits_teacher.py --config.student.model=resnet20 \
      --workdir runs/digits_teacher_resnet20
  python -m kd_jax train --config experiments/digits_fsp.py \
      --config.teacher.workdir=runs/digits_teacher_resnet20 --workdir runs/digits_fsp
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.teacher.model = "resnet20"
  c.loss = {"ce": {"weight": 1.0}, "fsp": {"weight": 50.0, "stage_pairs": ((0, 1), (1, 2))}}
  return c
