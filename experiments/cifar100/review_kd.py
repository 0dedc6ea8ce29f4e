"""CIFAR-100 ReviewKD, as the authors' `CIFAR-100/train.py` and `script/reviewKD.sh`.

Chen, Liu, Zhao, Jia, CVPR 2021 (arXiv:2104.09044), dvlab-research/ReviewKD: `CE + w·min(epoch/20, 1)·HCL` over
the attention-based-fusion outputs (teacher features pre-activation), `--kd-warm-up 20`; its recipe differs
from RepDistiller's: batch 128, lr 0.1 (0.02 for ShuffleNet/MobileNet students), 240 epochs, × 0.1 at
150/180/210, wd 5e-4. w per pair from `script/reviewKD.sh`: 5 for wrn_40_2 → wrn_16_2, wrn_40_1 and ShuffleNetV1,
resnet32x4 → resnet8x4 and ShuffleNetV1; 8 for resnet32x4 → ShuffleNetV2; 0.6 for resnet56 → resnet20; 1 for
resnet110 → resnet32 (mdistiller's reviewkd.yaml also uses 5 for resnet32x4 → resnet8x4). Other pairs take the
script's default 1 [assume: no setting published for them].

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  res56_res20      71.89   (ReviewKD paper, quoted by WangYZ1608/Knowledge-Distillation-via-ND README)
  wrn40_2_wrn40_1  75.09   (ReviewKD paper, quoted by WangYZ1608/Knowledge-Distillation-via-ND README)
  res32x4_res8x4   75.63   (ReviewKD paper, quoted by WangYZ1608/Knowledge-Distillation-via-ND README)
  res50_mv2        69.89   (ReviewKD paper, quoted by WangYZ1608/Knowledge-Distillation-via-ND README)
  res32x4_shuv1    77.45   (ReviewKD paper, quoted by WangYZ1608/Knowledge-Distillation-via-ND README)
  res32x4_shuv2    77.78   (ReviewKD paper, quoted by WangYZ1608/Knowledge-Distillation-via-ND README)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/review_kd.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_review_kd_res32x4_res8x4
"""

import c100_common

# --kd-loss-weight per pair in ReviewKD's CIFAR-100/script/reviewKD.sh; train.py's default is 1.
WEIGHTS = {"wrn40_2_wrn16_2": 5.0, "wrn40_2_wrn40_1": 5.0, "wrn40_2_shuv1": 5.0, "res32x4_res8x4": 5.0,
           "res32x4_shuv1": 5.0, "res32x4_shuv2": 8.0, "res56_res20": 0.6, "res110_res32": 1.0}


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  pair = c100_common.cifar100_pairs.pair_name(pair)
  c = c100_common.student_config(pair)
  c.batch_size = 128
  c.optim.lr = 0.02 if c.student.model in c100_common.cifar100_pairs.SMALL_LR_STUDENTS else 0.1
  c.loss.review_kd = {"weight": WEIGHTS.get(pair, 1.0), "warmup_epochs": 20.0}
  return c
