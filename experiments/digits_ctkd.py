"""CTKD student of the default study: mlp_small learning from the cnn_large teacher on digits.

Curriculum temperature KD (Li et al., AAAI 2023, arXiv:2211.16231; reference zhengli97/CTKD
`scripts/run_cifar_distill.sh`): `0.1·CE + 0.9·T²·KL` at a global learned temperature
`T = 1 + 20·sigmoid(θ)` (θ starts at 1, T ≈ 15.6), trained through a gradient-reversal layer whose strength λ
rises from 0 to 1 on a cosine. The reference ramps λ over 10 of its 240 CIFAR epochs; this 30-epoch study
scales that to 1.25 epochs [assume: proportional scaling, as experiments/digits_dkd.py does for DKD's
warm-up]. θ is a parameter of the distiller, trained by the run's SGD with the student.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_ctkd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_ctkd
Instance-wise temperature: --config.loss.ctkd.form=instance; logit standardization:
--config.loss.ctkd.standardize=True.
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 0.1},
            "ctkd": {"weight": 0.9, "form": "global", "t_start": 1.0, "t_range": 20.0, "init_value": 1.0,
                     "lambda_min": 0.0, "lambda_max": 1.0, "lambda_epochs": 1.25}}
  return c
