"""CIFAR-100 AB (activation boundaries), resnet32x4 → resnet8x4 by default, as RepDistiller runs it.

Heo, Lee, Yun, Choi, "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons",
AAAI 2019 (arXiv:1811.03233). This config follows RepDistiller (`train_student.py --distill abound`,
`helper/pretrain.py::init`; METHODS.md item 13's second check):
- phase `init`: 30 epochs of the student and its connectors on the AB loss alone (pre-ReLU stage responses,
  margin 1, stage weights ¼, ½, 1, scale 3/1000), SGD at a constant lr 0.05 (0.01 for ShuffleNet and
  MobileNetV2 students), momentum 0.9 without Nesterov, weight decay 5e-4, the teacher in eval mode
  (`teacher_batch_statistics=False`);
- phase `main`: the connectors are dropped and the student trains with cross-entropy alone (RepDistiller's
  `-a 0` for abound) for 240 epochs, lr × 0.1 at 150/180/210.
Differences, as switches: RepDistiller keeps the *student* in eval mode during `init` (kd_jax trains it in
train mode, as the original code does); the original code (bhheo/AB_distillation) runs the teacher on batch
statistics in the initialisation (`--config.phases` with `teacher_batch_statistics=True`, kd_jax does not
update the teacher's running statistics), uses Nesterov at lr 0.1, resets the optimizer at 75% of the phase,
and trains the main phase with KD at T = 3 (experiments/digits_ab.py says how).

  python -m kd_jax train --config experiments/cifar100_ab.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_ab_r8x4
"""

import cifar100_kd
import cifar100_pairs


def get_config(pair: str = "res32x4_res8x4"):
  c = cifar100_kd.get_config(pair)
  c.loss = {"ce": {"weight": 1.0}}
  c.phases = (
      {"name": "init", "epochs": 30, "loss": {"ab": {"weight": 1.0, "margin": 1.0}},
       "optim": {"lr": cifar100_pairs.student_lr(c.student.model), "schedule": "constant", "nesterov": False},
       "trainable": ("student", "distiller"), "teacher_batch_statistics": False},
      {"name": "main", "trainable": ("student",)},
  )
  return c
