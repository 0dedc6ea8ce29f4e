"""RKD student of the default study: mlp_small learning from the cnn_large teacher on digits.

Relational KD (Park et al., CVPR 2019, arXiv:1904.05068) on the pooled embeddings (`ModelOutput.embedding`:
mlp_small's last hidden layer, 128-d, and cnn_large's pooled 128-d feature), with RepDistiller's CIFAR-100
recipe: `CE + 1·(25·L_distance + 50·L_angle)` (`RKDLoss(w_d=25, w_a=50)`, `--distill rkd -a 0 -b 1`). The
25/50 weights live in the distiller, so the term weight is 1. RKD compares relations within the batch, so
it depends on batch_size (64 here, as on CIFAR).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_rkd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_rkd
Ablate with overrides, e.g. --config.loss.rkd.angle_weight=0.0 (distance only).
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 1.0}, "rkd": {"weight": 1.0, "distance_weight": 25.0, "angle_weight": 50.0}}
  return c
