"""AT student: cnn_small learning from the cnn_large teacher on digits, by attention transfer.

Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928. As RepDistiller (scripts/run_cifar_distill.sh:
`--distill attention -a 0 -b 1000`, resnet32x4 → resnet8x4, 73.44% on CIFAR-100): CE weight 1 plus β times
the AT loss summed over every stage output (`stages=None`: the 8x8, 4x4 and 2x2 maps here). The
student is cnn_small, not the default study's mlp_small, which has no spatial stages; its CE-only baseline
is the same command with --config.loss="{'ce': {'weight': 1.0}}".

β is 62.5 here, not 1000: the AT loss of a stage is a mean over its H·W positions, and digits' maps
(8x8, 4x4, 2x2) have 16× fewer positions than CIFAR's (32x32, 16x16, 8x8), so the same β weighs each stage
~16× more against CE. At β = 1000 AT swamps CE on digits (one seed, 30 epochs, teacher from
digits_teacher.py: 76.81% test accuracy against 97.77% for the CE-only cnn_small); β = 1000/16 = 62.5 gave
96.66%. Reproduce the CIFAR weight with --config.loss.at.weight=1000.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_at.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_at
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}, "at": {"weight": 62.5, "p": 2.0}}
  return c
