"""FT student: cnn_small learning the cnn_large teacher's paraphrased factor on digits, in two phases.

Kim, Park, Kwak, NeurIPS 2018, arXiv:1802.04977. Phase `paraphraser` trains FT's autoencoder on the frozen
teacher's last-stage feature (L1 reconstruction, factor rate k = 0.5; the student does not move); phase
`main` trains the student with CE plus β × the factor-transfer loss between its translator's output and
the frozen paraphraser's encoding. RepDistiller (`--distill factor -a 0 -b 200`) uses β = 200 with its factor
form (`form='reference'`, the channel mean of squares); the official code uses the flattened factor
(`--config.loss.ft.form=paper`) with β = 500, lr 0.1 and 5 paraphraser epochs of CIFAR (~2000 steps).

Digits settings, chosen on the validation split of seed 0 (30 main epochs, teacher from digits_teacher.py):
- Paraphraser phase: 30 epochs at lr 0.1 (510 steps). With 4 epochs at lr 0.05 (68 steps) it had not
  started to learn (L1 reconstruction 0.4177 → 0.4164; it plateaus for ~20 epochs, then falls to 0.10 by
  epoch 30), and the student reached 94.99% test against 97.77% for CE alone.
- β = 50, not 200: after the 30-epoch phase, β 200 gave val 98.41% (test 97.59%), β 50 val 99.21% (test
  98.70%). The normalised factor's entries are 4× larger on digits' 2×2 last-stage maps than on CIFAR's
  8×8 ones, so β 200/4 = 50 is the CIFAR weight per entry (the same scaling as AT's in digits_at.py).
Commands (seed 0; the teacher run's path as in tools/feature_methods.py):
  python -m kd_jax train --config experiments/digits_ft.py --config.teacher.workdir=<teacher> \
      --config.loss.ft.weight=200.0 --workdir runs/ft_tune_b200
  python -m kd_jax train --config experiments/digits_ft.py --config.teacher.workdir=<teacher> \
      --workdir runs/ft_tune_b50

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_ft.py \\
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_ft
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}, "ft": {"weight": 50.0, "mode": "transfer", "rate": 0.5}}
  c.phases = (
      {"name": "paraphraser", "epochs": 30, "loss": {"ft": {"weight": 1.0, "mode": "paraphraser", "rate": 0.5}},
       "optim": {"lr": 0.1, "schedule": "constant"}, "trainable": ("distiller/ft/paraphraser",)},
      {"name": "main", "trainable": ("student", "distiller/ft/translator")},
  )
  return c
