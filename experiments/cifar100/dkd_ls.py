"""CIFAR-100 DKD with logit standardisation, the LS-KD reference's `--logit-stand` runs of DKD.

Sun et al., CVPR 2024 (arXiv:2403.01427), sunshangquan/logit-standardization-KD: `tools/train.py` multiplies DKD's
α and β by `--kd-weight` w and sets T to `--base-temp`; `DKD.py` z-scores the logits. Per pair (T, w, β) as the
README's log names (`dkd,<teacher>,<student>,T,w[,β].txt`; no β in the name: the pair's yaml, 8): e.g.
(2, 9, 8) for resnet32x4 → resnet8x4 and ShuffleNetV2, (2, 15, 2) for vgg13 → vgg8, (3, 18, 2) for
resnet56 → resnet20. CE 1, warm-up 20 epochs, mdistiller's recipe.

Published top-1 (%, best epoch; experiments/cifar100/published.py holds them as data):
  res32x4_res8x4   77.01   (logit-standardization-KD README table 1)
  vgg13_vgg8       74.81   (logit-standardization-KD README table 1)
  wrn40_2_wrn40_1  74.89   (logit-standardization-KD README table 1)
  wrn40_2_wrn16_2  76.39   (logit-standardization-KD README table 1)
  res56_res20      72.32   (logit-standardization-KD README table 1)
  res110_res32     74.29   (logit-standardization-KD README table 1)
  res110_res20     71.85   (logit-standardization-KD README table 1)
  res32x4_shuv2    77.37   (logit-standardization-KD README table 2)
  res32x4_wrn16_2  76.19   (logit-standardization-KD README table 2)
  res32x4_wrn40_2  78.95   (logit-standardization-KD README table 2)
  wrn40_2_res8x4   76.75   (logit-standardization-KD README table 2)
  wrn40_2_mv2      70.01   (logit-standardization-KD README table 2)
  vgg13_mv2        69.98   (logit-standardization-KD README table 2)
  res50_mv2        70.45   (logit-standardization-KD README table 2)
kd_jax reports the last epoch's test accuracy (selection, if any, on the validation split only).

Launch (a pair of experiments/cifar100_pairs.py after ':'; the teacher from experiments/cifar100_teacher.py
with --config.student.model=resnet32x4, or the whole table with experiments/cifar100/run_table.py):
  python -m kd_jax train --config experiments/cifar100/dkd_ls.py:res32x4_res8x4 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_dkd_ls_res32x4_res8x4
"""

import c100_common

# (base temperature, weight w, β) per pair from the reference README's DKD+Ours log names; α = w, β·w in the loss.
SETTINGS = {"res32x4_res8x4": (2.0, 9.0, 8.0), "vgg13_vgg8": (2.0, 15.0, 2.0), "wrn40_2_wrn40_1": (2.0, 12.0, 2.0),
            "wrn40_2_wrn16_2": (2.0, 12.0, 2.0), "res56_res20": (3.0, 18.0, 2.0), "res110_res32": (2.0, 15.0, 2.0),
            "res110_res20": (2.0, 15.0, 2.0), "res32x4_shuv2": (2.0, 9.0, 8.0), "res32x4_wrn16_2": (2.0, 9.0, 2.0),
            "res32x4_wrn40_2": (2.0, 9.0, 8.0), "wrn40_2_res8x4": (2.0, 18.0, 2.0), "wrn40_2_mv2": (2.0, 15.0, 2.0),
            "vgg13_mv2": (3.0, 9.0, 2.0), "res50_mv2": (2.0, 15.0, 2.0)}


def get_config(pair: str = c100_common.DEFAULT_PAIR):
  pair = c100_common.cifar100_pairs.pair_name(pair)
  c = c100_common.student_config(pair)
  temperature, weight, beta = SETTINGS.get(pair, (2.0, 9.0, 8.0))  # [assume] the README's usual values elsewhere
  c.loss.dkd = {"weight": 1.0, "alpha": weight, "beta": beta * weight, "temperature": temperature,
                "warmup_epochs": 20.0, "standardize": True}
  return c
