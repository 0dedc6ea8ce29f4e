"""PKT student: cnn_small learning from the cnn_large teacher on digits, by probabilistic knowledge transfer.

Passalis & Tefas, ECCV 2018, arXiv:1803.10837. As RepDistiller (`--distill pkt -a 0 -b 30000`, resnet32x4 →
resnet8x4, 73.64% on CIFAR-100): CE weight 1 plus 30000 times the PKT loss on the pooled embeddings, in the
authors' code form (mean over the B² kernel entries, so the weight is large). Batch size 64 as on CIFAR, so
the scale matches. The student is cnn_small, not the default study's mlp_small; its CE-only baseline is the
same command with --config.loss="{'ce': {'weight': 1.0}}".

At the CIFAR weight, one seed, 30 epochs, teacher from digits_teacher.py: 98.52% test accuracy
(CE-only cnn_small: 97.77%; one test image is 0.19 points).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_pkt.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_pkt
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}, "pkt": {"weight": 30000.0}}
  return c
