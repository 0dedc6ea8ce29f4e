"""CIFAR-100 FT (factor transfer), RepDistiller's `--distill factor -a 0 -b 200` with its init phase.

RepDistiller (HobbitLong/RepDistiller, `train_student.py`, `scripts/run_cifar_distill.sh`) runs every method but
KD as `-r 1 -a 0 -b β`: `1·CE + β·loss`, no KD term, on the recipe of experiments/cifar100_kd.py (SGD lr 0.05,
0.01 for MobileNetV2/ShuffleNet students, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at
150/180/210).
Kim, Park, Kwak, NeurIPS 2018 (arXiv:1802.04977), as RepDistiller runs it: phase `paraphraser`, 30 epochs
(`--init_epochs`) of the paraphraser alone (rate k = 0.5) reconstructing the teacher's last stage, SGD at a
constant lr 0.01 for ResNet/WRN students (`helper/pretrain.py`), the student's lr otherwise, teacher in eval
mode; phase `main`, 240 epochs of student + translator on `CE + 200·FT` with RepDistiller's factor
(`FactorTransfer`: L1 between L2-normalised `mean_c F²` factors, kd_jax `form='reference'`).
Difference: RepDistiller's paraphraser phase minimises MSE; kd_jax's `ft` (mode 'paraphraser') minimises L1,
as the FT authors' code (a library option for MSE does not exist yet).

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  wrn40_2_wrn16_2  73.25   (RepDistiller README table 1 = CRD paper Table 1)
  wrn40_2_wrn40_1  71.59   (RepDistiller README table 1 = CRD paper Table 1)
  res56_res20      69.84   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res20     70.22   (RepDistiller README table 1 = CRD paper Table 1)
  res110_res32     72.37   (RepDistiller README table 1 = CRD paper Table 1)
  res32x4_res8x4   72.86   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_vgg8       70.58   (RepDistiller README table 1 = CRD paper Table 1)
  vgg13_mv2        61.78   (RepDistiller README table 2 = CRD paper Table 2)
  res50_mv2        60.99   (RepDistiller README table 2 = CRD paper Table 2)
  res50_vgg8       70.29   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv1    71.75   (RepDistiller README table 2 = CRD paper Table 2)
  res32x4_shuv2    72.50   (RepDistiller README table 2 = CRD paper Table 2)
  wrn40_2_shuv1    72.03   (RepDistiller README table 2 = CRD paper Table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/ft.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_ft_res32x4_res8x4
"""

import c100_common

# RepDistiller's helper/pretrain.py: the paraphraser phase runs at 0.01 for these students, at the student's lr
# otherwise.
PRETRAIN_AT_0_01 = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  c = c100_common.student_config(pair)
  factor = {"rate": 0.5, "form": "reference"}
  c.loss = {"ce": {"weight": 1.0}, "ft": {"weight": 200.0, "mode": "transfer", **factor}}
  init_lr = 0.01 if c.student.model in PRETRAIN_AT_0_01 else c.optim.lr
  c.phases = (
      {"name": "paraphraser", "epochs": 30, "loss": {"ft": {"weight": 1.0, "mode": "paraphraser", **factor}},
       "optim": {"lr": init_lr, "schedule": "constant"}, "trainable": ("distiller/ft/paraphraser",),
       "teacher_batch_statistics": False},
      {"name": "main", "trainable": ("student", "distiller/ft/translator")},
  )
  return c
