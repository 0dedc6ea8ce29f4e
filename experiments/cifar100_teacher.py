"""CIFAR-100 teacher, resnet32x4, with the recipe of the CRD/RepDistiller benchmark.

SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at epochs 150/180/210,
random crop (pad 4) and horizontal flip. RepDistiller reports 79.42% top-1 for this teacher; the
validation split (5% of train) is carved from the training data, the test split only reported.
Needs CIFAR-100 prepared in a tfds data_dir (see README, "Datasets").

Launch:
  python -m kd_jax train --config experiments/cifar100_teacher.py \
      --config.data.data_dir=$HOME/tensorflow_datasets --workdir runs/c100_resnet32x4
"""

from kd_jax.config import base_config


def get_config():
  c = base_config()
  c.data.name = "cifar100"
  c.data.val_fraction = 0.05
  c.data.crop_pad = 4
  c.data.flip = True
  c.student.model = "resnet32x4"
  c.loss = {"ce": {"weight": 1.0}}
  c.optim.lr = 0.05
  c.optim.milestones = (150, 180, 210)
  c.epochs = 240
  c.batch_size = 64
  return c
