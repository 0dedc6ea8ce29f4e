"""DGKD on CIFAR-100 with CIFAR ResNets, resnet26 → resnet20 → resnet14 → resnet8: plain KD, TAKD, DGKD and
stochastic DGKD on one chain, with the DGKD reference code's ResNet recipe.

The ResNet chain of DGKD (Son, Na, Choi, Hwang, ICCV 2021, arXiv:2009.08825; code wonchulSon/DGKD); the
method, the stages and the loss are those of experiments/dgkd_cifar100_plain.py: T = 5, λ = 1 (KD terms only,
no CE), KL averaged over batch and classes (`reduction="mean"`), stochastic DGKD with one KD term dropped per
mini-batch; stages `teacher` (resnet26), `student_ce`, `student_kd`, `ta_resnet20`, `takd_resnet14`,
`takd_student`, `dgkd_resnet14`, `dgkd_student`, `sdgkd_student`.

Recipe (the code's defaults): SGD lr 0.1, momentum 0.9, weight decay 1e-4,
batch 128, 160 epochs, lr × 0.1 at epochs 80 and 120 (the schedule DGKD takes from TAKD for ResNets: 0.1 until
epochs/2, 0.01 until 3·epochs/4, then 0.001), no random crop or flip (--config.data.crop_pad=4
--config.data.flip=True switches them on); 5% of the training images held out for validation [assume: the
code trains on all 50,000; --config.data.val_fraction=0.0 for that].

Published (second-hand: a summary of the paper, not its tables): CIFAR-100 up to +3.78% over TAKD, CIFAR-10 up
to +1.01%; "up to" is the best over the paper's chains, not a number for this one. Needs CIFAR-100 prepared in
a tfds data_dir (see README, "Datasets").

Launch:
  python -m kd_jax pipeline --config experiments/dgkd_cifar100_resnet.py \
      --config.data.data_dir=$HOME/tensorflow_datasets --workdir runs/dgkd_c100_resnet
"""

import dgkd_cifar100_plain
from chains import kd_chain

CHAIN = ("resnet26", "resnet20", "resnet14", "resnet8")


def recipe():
  """The plain-CNN recipe with the ResNet schedule: lr 0.1, × 0.1 at epochs 80 and 120."""
  c = dgkd_cifar100_plain.recipe()
  c.optim.lr = 0.1
  c.optim.schedule = "multistep"
  c.optim.milestones = (80, 120)
  c.optim.gamma = 0.1
  return c


def get_pipeline():
  return kd_chain(recipe(), CHAIN, lam=dgkd_cifar100_plain.LAM, temperature=dgkd_cifar100_plain.TEMPERATURE,
                  reduction="mean", drop_num=dgkd_cifar100_plain.DROP_NUM, methods=("kd", "takd", "dgkd"))
