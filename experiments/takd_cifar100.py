"""TAKD on CIFAR-100: resnet110 → resnet20 (teacher assistant) → resnet8, against plain KD, with the reference
code's recipe.

TAKD (Mirzadeh et al., AAAI 2020, arXiv:1902.03393; code imirzadeh/Teacher-Assistant-Knowledge-Distillation)
puts a mid-sized teacher assistant between a large teacher and a small student; each model distils from the
one before it only. The chain is the reference README's CIFAR-100 example (its CIFAR-10 one is resnet110 →
resnet14 → resnet8). Stages (experiments/chains.py, methods kd and takd): `teacher` (resnet110, CE),
`student_ce` (resnet8, CE), `student_kd` (resnet8, KD from the teacher), `ta_resnet20` (KD from the teacher)
and `takd_student` (resnet8, KD from the assistant only).

Recipe (the reference's train.py and README):
  - SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128 [code defaults];
  - 160 epochs [every README command passes --epochs 160; train.py's own default is 200: for that give
    --config.epochs=200 --config.optim.milestones="(100, 150)"];
  - lr × 0.1 at epochs 80 and 120 [code, for ResNets: 0.1 until epochs/2, 0.01 until 3·epochs/4, then 0.001];
  - no random crop or flip [the code's data loader defaults to crop=False]; the usual CIFAR augmentation is
    --config.data.crop_pad=4 --config.data.flip=True;
  - every KD stage `(1−λ)·CE + λ·T²·KL(p_t^T ‖ p_s^T)` with the KL averaged over batch *and* classes
    (`reduction="mean"`, the default of the code's nn.KLDivLoss(): 1/100 of the textbook per-example sum on
    CIFAR-100). Where the paper and the code differ the config follows the code: the paper writes
    `(1−λ)·L_SL + λ·L_KD` and leaves the KL's scaling unstated;
  - T = 5 [assume: the reference tuned T and λ per run with NNI, T over {1, 2, 5, 10, 15, 20} and λ over
    {0.05, 0.10, ..., 1.0}, and did not publish the tuned values; 5 is DGKD's code default for the same kind
    of chains, see experiments/dgkd_cifar100_resnet.py] and λ = 0.5 [assume: the middle of that λ range, CE
    and KD weighted equally]. Change them in LAM and TEMPERATURE below: a --config.loss override cannot, as
    the CE-only stages have no kd term;
  - validation: 5% of the training images held out, as in experiments/cifar100_teacher.py [assume]; the
    reference trains on all 50,000 and reports test accuracy (--config.data.val_fraction=0.0 for that).
No published accuracy is quoted here: our sources give TAKD's chains and recipe, not its CIFAR-100 table.
Needs CIFAR-100 prepared in a tfds data_dir (see README, "Datasets").

Launch (the pipeline resumes where it stopped when run again):
  python -m kd_jax pipeline --config experiments/takd_cifar100.py \
      --config.data.data_dir=$HOME/tensorflow_datasets --workdir runs/takd_c100
"""

from chains import kd_chain
from kd_jax.config import base_config

CHAIN = ("resnet110", "resnet20", "resnet8")
LAM = 0.5          # [assume] see above
TEMPERATURE = 5.0  # [assume] see above


def recipe():
  """The reference's ResNet recipe on CIFAR-100: SGD 0.1, × 0.1 at epochs 80 and 120, no augmentation."""
  c = base_config()
  c.data.name = "cifar100"
  c.data.val_fraction = 0.05
  c.data.crop_pad = 0
  c.data.flip = False
  c.optim.name = "sgd"
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "multistep"
  c.optim.milestones = (80, 120)
  c.optim.gamma = 0.1
  c.epochs = 160
  c.batch_size = 128
  return c


def get_pipeline():
  return kd_chain(recipe(), CHAIN, lam=LAM, temperature=TEMPERATURE, reduction="mean", methods=("kd", "takd"))
