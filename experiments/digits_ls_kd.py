"""Logit-standardized KD student of the default study: mlp_small learning from cnn_large on digits.

Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024, arXiv:2403.01427: KD on per-sample
Z-scored logits. The official CIFAR-100 command is `--logit-stand --base-temp 2 --kd-weight 9` on top of
mdistiller's KD (CE weight 0.1), i.e. `0.1·CE + 9·T²·KL` at base temperature T = 2 (T = 3 for some pairs).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_ls_kd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_ls_kd
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 0.1}, "ls_kd": {"weight": 9.0, "temperature": 2.0}}
  return c
