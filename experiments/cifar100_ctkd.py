"""CIFAR-100 CTKD, resnet56 → resnet20, the pair and script of the reference.

Curriculum temperature KD (Li et al., AAAI 2023, arXiv:2211.16231), as zhengli97/CTKD
`scripts/run_cifar_distill.sh`: `--distill kd -r 0.1 -a 0.9 --batch_size 64 --learning_rate 0.05 --have_mlp 1
--mlp_name global --t_start 1 --t_end 20 --cosine_decay 1 --decay_max 0 --decay_min -1 --decay_loops 10`,
i.e. `0.1·CE + 0.9·KD` at the global learned temperature `1 + 20·sigmoid(θ)`, λ from 0 to 1 over 10 epochs;
SGD momentum 0.9, weight decay 5e-4, 240 epochs, lr × 0.1 at 150/180/210 (`train_student.py` defaults).
Published (the reference README, "Main Results"): 71.19% top-1 for resnet56 → resnet20 (KD 70.66%). The
logit-standardization README also lists CTKD at 73.39% for resnet32x4 → resnet8x4 and 76.67% with its
Z-score (`--config.loss.ctkd.standardize=True`; its log names, `ctkd,resnet32x4,resnet8x4,2,9.txt`, read
base temperature 2 and KD weight 9).

Train the teacher with experiments/cifar100_teacher.py and --config.student.model=resnet56, then:
  python -m kd_jax train --config experiments/cifar100_ctkd.py \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet56 --workdir runs/c100_ctkd_r20
"""

import cifar100_kd


def get_config(pair: str = "res56_res20"):
  c = cifar100_kd.get_config(pair)
  c.loss = {"ce": {"weight": 0.1},
            "ctkd": {"weight": 0.9, "form": "global", "t_start": 1.0, "t_range": 20.0, "init_value": 1.0,
                     "lambda_min": 0.0, "lambda_max": 1.0, "lambda_epochs": 10.0}}
  return c
