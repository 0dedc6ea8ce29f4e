"""NKD student of the default study: mlp_small learning from the cnn_large teacher on digits.

Normalized KD (Yang et al., ICCV 2023, arXiv:2303.13005): `CE + NKD` with NKD's target term (teacher's target
probability times the student's target log-probability) and its non-target term at temperature T, weighted
γ·T². T = 3, γ = 3.5 are the reference's CIFAR-100 values (yzd-v/cls_KD,
`configs/distillers/cifar100/res34_distill_res18_cifar.py`, `NKDLoss(temp=3.0, gamma=3.5)`); CE and NKD both
at weight 1, as the reference's `ClassificationDistiller` adds the student's CE to the NKD loss. The
ImageNet configs use T = 1, γ = 1.5 (the `nkd` distiller's defaults).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_nkd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_nkd
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 1.0}, "nkd": {"weight": 1.0, "temperature": 3.0, "gamma": 3.5}}
  return c
