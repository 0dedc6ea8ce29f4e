"""FT student: cnn_small learning the cnn_large teacher's paraphrased factor on digits, in two phases.

Kim, Park, Kwak, NeurIPS 2018, arXiv:1802.04977. Phase `paraphraser` trains FT's autoencoder on the frozen
teacher's last-stage feature (L1 reconstruction, factor rate k = 0.5; the student does not move); phase
`main` trains the student with CE plus β × the factor-transfer loss between its translator's output and
the frozen paraphraser's encoding. As RepDistiller (`--distill factor -a 0 -b 200`, its paraphraser
initialised for 30 of 240 epochs at lr 0.05): β = 200 with its factor form (`form='reference'`, the channel
mean of squares); here 4 paraphraser epochs before the study's 30. The official code uses the flattened
factor (`--config.loss.ft.form=paper`) with β = 500, lr 0.1 and 5 paraphraser epochs.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_ft.py \\
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_ft
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}, "ft": {"weight": 200.0, "mode": "transfer", "rate": 0.5}}
  c.phases = (
      {"name": "paraphraser", "epochs": 4, "loss": {"ft": {"weight": 1.0, "mode": "paraphraser", "rate": 0.5}},
       "optim": {"lr": 0.05, "schedule": "constant"}, "trainable": ("distiller/ft/paraphraser",)},
      {"name": "main", "trainable": ("student", "distiller/ft/translator")},
  )
  return c
