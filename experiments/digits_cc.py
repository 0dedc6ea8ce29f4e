"""CC student: cnn_small learning from the cnn_large teacher on digits, by correlation congruence.

Peng et al., ICCV 2019, arXiv:1904.01802, in the form RepDistiller ran (`--distill correlation -a 0 -b 0.02`,
resnet32x4 → resnet8x4, 72.97% on CIFAR-100): the pooled embeddings of student and teacher each go through a
trainable linear layer to 128 dimensions (`--feat_dim`), and the loss is RepDistiller's `Correlation`
(`form="reference"`), weight 0.02 next to CE weight 1. The paper's Taylor-expanded Gaussian kernel is
`--config.loss.cc.form=paper` (γ 0.4, P 2). The student is cnn_small, not the default study's mlp_small;
its CE-only baseline is the same command with --config.loss="{'ce': {'weight': 1.0}}".

At the CIFAR weight, one seed, 30 epochs, teacher from digits_teacher.py: 97.22% test accuracy
(CE-only cnn_small: 97.77%; one test image is 0.19 points).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_cc.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_cc
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}, "cc": {"weight": 0.02, "embed_dim": 128, "form": "reference"}}
  return c
