"""FSP student: resnet8 learning from a resnet20 teacher on digits, FSP alone first, then cross-entropy alone.

Yim, Joo, Bae, Kim, CVPR 2017 (no arXiv); reference RepDistiller (HobbitLong/RepDistiller: `train_student.py
--distill fsp -a 0 -b 50`, `helper/pretrain.py`, `distiller_zoo/FSP.py`), resnet32x4 → resnet8x4, 72.62% on
CIFAR-100. As there, phase `init` trains the student's layers on the FSP loss alone (the sum over pairs,
no weight: the reference's init loop adds the pairs' losses without its `-b 50`), teacher in eval mode,
student BatchNorm on batch statistics, at a constant lr 0.05 for 30 of 30 + 240 epochs (here 4 before the
study's 30, as digits_ab.py scales AB's init phase); phase `main` then trains with cross-entropy alone
(the reference's `-b 50` multiplies a zero there). The pairs are RepDistiller's: consecutive entries of
(stem, stage 1, stage 2, stage 3), i.e. (stem, 0), (0, 1), (1, 2) (`FSP(stage_pairs=None)`).

Models: FSP compares C1×C2 flow matrices, so paired maps need equal channel counts. The paper pairs
ResNet-26 → ResNet-8 and RepDistiller resnet32x4 → resnet8x4, one family with a stem; here resnet20 →
resnet8 (stem 16, stages 16/32/64 at 8×8, 8×8, 4×4, 2×2 on digits). The study's cnn_small has no stem
layer (its first stage is its first conv), so with it only the stage pairs exist: `--config.student.model=
cnn_small --config.phases="({'name': 'init', 'epochs': 4, 'loss': {'fsp': {'weight': 1.0, 'stage_pairs':
((0, 1), (1, 2))}}, 'optim': {'lr': 0.05, 'schedule': 'constant'}}, {'name': 'main'})"`.

The phases keep the default `trainable` (student and distiller): FSP owns no parameters, so naming only
'student' trains the same.

Difference from the reference: RepDistiller's init optimizer holds the student's feature layers only; a
kd_jax phase trains the whole student, so its classifier (zero FSP gradient) also sees weight decay 5e-4
for the 4 epochs (a factor (1 − 0.05·5e-4)^68 ≈ 0.998 on its weights).

Train the teacher first, then (the CE baseline of the same student is --config.phases="()" with
--config.loss="{'ce': {'weight': 1.0}}"):
  python -m kd_jax train --config experiments/digits_teacher.py --config.student.model=resnet20 \\
      --workdir runs/digits_teacher_resnet20
  python -m kd_jax train --config experiments/digits_fsp.py \\
      --config.teacher.workdir=runs/digits_teacher_resnet20 --workdir runs/digits_fsp
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "resnet8"
  c.teacher.model = "resnet20"
  c.loss = {"ce": {"weight": 1.0}}
  c.phases = (
      {"name": "init", "epochs": 4, "loss": {"fsp": {"weight": 1.0}},
       "optim": {"lr": 0.05, "schedule": "constant"}, "teacher_batch_statistics": False},
      {"name": "main"},
  )
  return c
