"""VID student on digits: cnn_small learning from the default study's cnn_large teacher.

Variational information distillation (Ahn et al., CVPR 2019, arXiv:1904.05835) as RepDistiller's `VIDLoss`:
on every stage output (`feat[1:-1]`; here the three stages, 8×8, 4×4 and 2×2 on 8×8 digits, which cnn_small
and cnn_large share), a regressor conv1x1 → ReLU → conv1x1 → ReLU → conv1x1 (hidden width = teacher
channels) predicts the mean of a Gaussian over the teacher feature, with a learnable per-channel variance
σ² = softplus(α) + 1e-5 starting at 5. Loss `CE + 1·Σ_stages NLL` (`--distill vid -a 0 -b 1`), the NLL
averaged over batch, space and channels as the reference does. VID needs spatial stages, so the student is
cnn_small rather than the study's mlp_small; the regressors and variances train with the student.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_vid.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_vid
Ablate with overrides, e.g. --config.loss.vid.reduction=sum (the paper's sum over space and channels).
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0},
            "vid": {"weight": 1.0, "init_variance": 5.0, "eps": 1e-5, "reduction": "mean"}}
  return c
