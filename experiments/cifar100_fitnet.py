"""CIFAR-100 FitNet, resnet32x4 → resnet8x4, as in RepDistiller (-r 1 -a 0 -b 100, hint layer 2).

RepDistiller's hint layer 2 is the output of the second residual stage, `ModelOutput.stages[1]` here.
RepDistiller reports 73.50% for this pair; `experiments/cifar100_fitnet.py:<pair>` takes any pair of
experiments/cifar100_pairs.py (experiments/cifar100/fitnet.py lists the published numbers of every pair).

Launch:
  python -m kd_jax train --config experiments/cifar100_fitnet.py \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_fitnet_r8x4
"""

import cifar100_kd


def get_config(pair: str = "res32x4_res8x4"):
  c = cifar100_kd.get_config(pair)
  c.loss = {"ce": {"weight": 1.0}, "fitnet": {"weight": 100.0, "stage": 1}}
  return c
