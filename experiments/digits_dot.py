"""KD student of the default study trained with DOT instead of SGD (mlp_small from cnn_large on digits).

DOT, the Distillation-Oriented Trainer (Zhao, Cui, Song, Liang, ICCV 2023, arXiv:2307.08436; reference
megvii-research/mdistiller, `mdistiller/engine/dot.py`): SGD whose momentum is β − Δ for the gradient of the
task term (ce) and β + Δ for the gradient of the distillation term (kd), β = 0.9, Δ = 0.075 as mdistiller's
configs. Everything else is experiments/digits_kd.py (0.1·CE + 0.9·KD at T = 4, lr 0.05 cosine, weight
decay 5e-4, 30 epochs), which is the SGD baseline of the same seeds. DOT's paper reports gains on CIFAR-100,
Tiny-ImageNet and ImageNet (experiments/cifar100_dot.py); digits is a smoke-scale check.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_dot.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_dot
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.optim.name = "dot"
  c.optim.momentum = 0.9
  c.optim.dot_delta = 0.075
  return c
