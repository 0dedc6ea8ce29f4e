"""CIFAR-100 Hinton KD, resnet32x4 → resnet8x4, as in the CRD/RepDistiller benchmark (-r 0.1 -a 0.9, T=4).

Same recipe as the teacher (experiments/cifar100_teacher.py). RepDistiller reports 73.33% for this KD
student and 72.50% for resnet8x4 trained with CE alone (run this config with
--config.loss="{'ce': {'weight': 1.0}}" for that baseline).

Another pair of experiments/cifar100_pairs.py, with its reference learning rate:
`--config experiments/cifar100_kd.py:res32x4_shuv2`.

Launch:
  python -m kd_jax train --config experiments/cifar100_kd.py \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_kd_r8x4
"""

import cifar100_pairs
import cifar100_teacher


def get_config(pair: str = "res32x4_res8x4"):
  c = cifar100_pairs.use_pair(cifar100_teacher.get_config(), pair)
  c.loss = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}
  return c
