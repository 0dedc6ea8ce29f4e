"""CIFAR-100 FSP (flow of solution procedure), RepDistiller's `--distill fsp -a 0 -b 50` with its init phase.

RepDistiller (HobbitLong/RepDistiller, `train_student.py`, `scripts/run_cifar_distill.sh`) runs every method but
KD as `-r 1 -a 0 -b β`: `1·CE + β·loss`, no KD term, on the recipe of experiments/cifar100_kd.py (SGD lr 0.05,
0.01 for MobileNetV2/ShuffleNet students, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at
150/180/210).
Yim et al., CVPR 2017. RepDistiller trains the student's feature layers on the FSP loss alone (flow matrices of
consecutive stages, `feat[:-1]`, summed at weight 1) for `--init_epochs 30` at the student's lr, teacher in eval
mode, then the student on CE alone: its `train_distill` sets the FSP term to 0 in the main stage, so `-b 50`
never weighs anything. FSP needs equal channel counts between the paired stages, so RepDistiller reports it for
the same-architecture pairs only, and N/A for wrn_40_2 → wrn_40_1. Difference: kd_jax trains the whole student
in the init phase (the classifier gets no FSP gradient, only weight decay).

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  72.91   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      69.95   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     70.11   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     71.89   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   72.62   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       70.23   (RepDistiller README table 1 = CRD paper Table 1)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/fsp.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_fsp_res32x4_res8x4
"""

import c100_common
from kd_jax.errors import KDJaxError

# The pairs whose paired stages have equal channel counts (RepDistiller's table 1 without wrn_40_2 -> wrn_40_1).
TABLE_PAIRS = ("wrn40_2_wrn16_2", "res56_res20", "res110_res20", "res110_res32", "res32x4_res8x4", "vgg13_vgg8")


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  pair = c100_common.cifar100_pairs.pair_name(pair)
  if pair not in TABLE_PAIRS:
    raise KDJaxError(f"fsp.py: FSP pairs stages of equal channel counts; choose one of {', '.join(TABLE_PAIRS)}.")
  c = c100_common.student_config(pair)
  c.phases = (
      {"name": "init", "epochs": 30, "loss": {"fsp": {"weight": 1.0}},
       "optim": {"lr": c.optim.lr, "schedule": "constant"}, "teacher_batch_statistics": False},
      {"name": "main"},
  )
  return c
