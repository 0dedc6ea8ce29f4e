"""DKD student of the default study: mlp_small learning from the cnn_large teacher on digits.

Decoupled KD (Zhao et al., CVPR 2022, arXiv:2203.08679) with mdistiller's defaults (`CFG.DKD`): CE weight 1,
α = 1, β = 8, T = 4, and a linear warm-up of the DKD term. mdistiller warms up over 20 of 240 CIFAR epochs;
this 30-epoch study scales that to 3 epochs [assume: proportional scaling].

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_dkd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_dkd
Ablate with overrides, e.g. --config.loss.dkd.beta=2.0 or --config.loss.dkd.warmup_epochs=0.
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 1.0},
            "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 3.0}}
  return c
