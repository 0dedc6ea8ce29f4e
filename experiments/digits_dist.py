"""DIST student of the default study: mlp_small learning from the cnn_large teacher on digits.

DIST (Huang et al., NeurIPS 2022, arXiv:2205.10536): `CE + T²·(β·L_inter + γ·L_intra)` with β = γ = 1
(official `DIST(beta=1, gamma=1, ...)`) and T = 4, the temperature used on CIFAR-100 (`--kd dist_t4`; [2nd]:
the official `dist_cifar.yaml` could not be read). The CE and DIST weights of 1 are the official `KDLoss`
defaults (`ori_loss_weight = kd_loss_weight = 1`), unconfirmed for the CIFAR recipe [assume].
The intra-class term correlates each class over the batch, so it depends on batch_size (64 here, as on CIFAR).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_dist.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_dist
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 1.0}, "dist": {"weight": 1.0, "beta": 1.0, "gamma": 1.0, "temperature": 4.0}}
  return c
