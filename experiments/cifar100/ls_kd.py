"""CIFAR-100 KD with logit standardisation (LS-KD), the reference's `--logit-stand` runs of KD.

Sun et al., CVPR 2024 (arXiv:2403.01427), sunshangquan/logit-standardization-KD (`tools/train.py`,
`mdistiller/distillers/KD.py`): logits z-scored per sample before the softmax, `0.1·CE + w·T²·KL` at base
temperature T. Per pair (T, w) as the README's log names (`kd,<teacher>,<student>,T,w.txt`): (2, 9) for most
pairs, (3, 9) for vgg13 → vgg8, vgg13 → MobileNetV2, wrn_40_2 → MobileNetV2 and resnet32x4 → wrn_16_2/wrn_40_2,
(4, 12) for resnet110 → resnet20, (3, 1) for ResNet50 → MobileNetV2; the training recipe is mdistiller's
(= RepDistiller's). DKD with standardisation is experiments/cifar100/dkd_ls.py.

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  res32x4_res8x4   76.62   (logit-standardization-KD README table 1)
  vgg13_vgg8       74.36   (logit-standardization-KD README table 1)
  wrn40_2_wrn40_1  74.37   (logit-standardization-KD README table 1)
  wrn40_2_wrn16_2  76.11   (logit-standardization-KD README table 1)
  res56_res20      71.43   (logit-standardization-KD README table 1)
  res110_res32     74.17   (logit-standardization-KD README table 1)
  res110_res20     71.48   (logit-standardization-KD README table 1)
  res32x4_shuv2    75.56   (logit-standardization-KD README table 2)
  res32x4_wrn16_2  75.26   (logit-standardization-KD README table 2)
  res32x4_wrn40_2  77.92   (logit-standardization-KD README table 2)
  wrn40_2_res8x4   77.11   (logit-standardization-KD README table 2)
  wrn40_2_mv2      69.23   (logit-standardization-KD README table 2)
  vgg13_mv2        68.61   (logit-standardization-KD README table 2)
  res50_mv2        69.02   (logit-standardization-KD README table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/ls_kd.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_ls_kd_res32x4_res8x4
"""

import c100_common

# (base temperature, KD weight) per pair, from the reference README's log file names; (2, 9) elsewhere.
SETTINGS = {"vgg13_vgg8": (3.0, 9.0), "res110_res20": (4.0, 12.0), "res32x4_wrn16_2": (3.0, 9.0),
            "res32x4_wrn40_2": (3.0, 9.0), "wrn40_2_mv2": (3.0, 9.0), "vgg13_mv2": (3.0, 9.0),
            "res50_mv2": (3.0, 1.0)}


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  pair = c100_common.cifar100_pairs.pair_name(pair)
  c = c100_common.student_config(pair)
  temperature, weight = SETTINGS.get(pair, (2.0, 9.0))
  c.loss = {"ce": {"weight": 0.1}, "ls_kd": {"weight": weight, "temperature": temperature}}
  return c
