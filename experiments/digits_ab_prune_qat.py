"""AB initialisation, then gradual pruning, then quantisation-aware fine-tuning with CE + KD: one resumable run.

The combination METHODS.md items 3 and 13 name ("gradual pruning + QAT + KD that learns the activation
boundary"): Heo et al.'s AB (AAAI 2019, arXiv:1811.03233) initialises the student from the teacher's
activation boundaries; Zhu & Gupta's gradual magnitude pruning (arXiv:1710.01878) then makes it sparse while
it trains with 0.1·CE + 0.9·KD (T = 4, the orthogonality paper's recipe, arXiv:2009.04120); finally the
sparse student is fine-tuned with fake-quantised 4-bit weights and activations (8 bits for the first layer
and the classifier) and the same loss, its masks frozen. On digits (cnn_large teacher → cnn_small), in
three phases of one run, so an interrupted run resumes where it stopped, phase, masks and quantiser state
included:
  - `ab_init`, epochs 0-4: the AB loss alone on the student and its connectors, constant lr 0.05
    (RepDistiller's initialisation recipe, as experiments/digits_ab.py);
  - `prune`, epochs 4-20: CE + KD, sparsity rising from 0 to 80% of the conv and hidden kernels (the first
    conv and the classifier stay dense) between epochs 4 and 16, masks updated every 10 steps;
  - `qat`, epochs 20-30: CE + KD with int4 QAT (minmax observers), the 80% masks kept.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_ab_prune_qat.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_ab_prune_qat
"""

from kd_jax.study import study_configs

AB_EPOCHS, PRUNE_EPOCHS, QAT_EPOCHS = 4, 16, 10


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
  c.epochs = AB_EPOCHS + PRUNE_EPOCHS + QAT_EPOCHS
  c.phases = (
      {"name": "ab_init", "epochs": AB_EPOCHS, "loss": {"ab": {"weight": 1.0, "margin": 1.0}},
       "optim": {"lr": 0.05, "schedule": "constant"}, "trainable": ("student", "distiller")},
      {"name": "prune", "epochs": PRUNE_EPOCHS, "trainable": ("student",)},
      {"name": "qat", "epochs": QAT_EPOCHS, "trainable": ("student",)},
  )
  c.compression.sparsity = 0.8
  c.compression.prune_exclude = ("^stage1_conv0/", "^fc/")
  c.compression.prune_begin_epoch = AB_EPOCHS
  c.compression.prune_end_epoch = AB_EPOCHS + PRUNE_EPOCHS * 3 // 4
  c.compression.prune_every_steps = 10
  c.compression.weight_bits = c.compression.activation_bits = 4
  c.compression.quant_begin_epoch = AB_EPOCHS + PRUNE_EPOCHS
  return c
