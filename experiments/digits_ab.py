"""AB student: cnn_small learning the cnn_large teacher's activation boundaries on digits, in two phases.

Heo, Lee, Yun, Choi, AAAI 2019, arXiv:1811.03233. As RepDistiller (`--distill abound -a 0 -b 1`, resnet32x4
→ resnet8x4): phase `init` trains the student and its 1×1-conv connectors on the AB loss alone (the
student's pre-ReLU stage responses against the teacher's, margin 1, stage weights ¼, ½, 1, scale 3/1000) at
a constant lr 0.05 for 30/240 of the main schedule (here 4 epochs before 30); phase `main` then drops the
connectors and trains the student with cross-entropy alone, as the study's students do.

Reference differences, as config switches: the original code (bhheo/AB_distillation) runs the teacher
with batch statistics in the initialisation (`teacher_batch_statistics=True` in phase `init`; kd_jax does
not update the teacher's running statistics there), uses Nesterov at lr 0.1 and resets the optimizer at
75% of the phase (a third phase with the same loss), and trains the main phase with KD at T = 3. RepDistiller
keeps the *student* in eval mode during its initialisation; kd_jax trains a student that a phase updates
in train mode (BatchNorm on batch statistics), as the original code does.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_ab.py \\
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_ab
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}}
  c.phases = (
      {"name": "init", "epochs": 4, "loss": {"ab": {"weight": 1.0, "margin": 1.0}},
       "optim": {"lr": 0.05, "schedule": "constant"}, "trainable": ("student", "distiller"),
       "teacher_batch_statistics": False},
      {"name": "main", "trainable": ("student",)},
  )
  return c
