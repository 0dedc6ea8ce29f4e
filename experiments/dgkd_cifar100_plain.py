"""DGKD on CIFAR-100 with TAKD's plain CNNs, plane10 → plane8 → plane6 → plane4 → plane2: plain KD, TAKD, DGKD
and stochastic DGKD on one chain, with the DGKD reference code's recipe.

DGKD (Son, Na, Choi, Hwang, ICCV 2021, arXiv:2009.08825; code wonchulSon/DGKD) trains the teacher assistants
in decreasing size, each model distilling from every larger model already trained; stochastic DGKD drops KD
terms at random while the final student trains. The chain is the reference code's default arguments (teacher
plane10, assistants plane8, plane6, plane4, student plane2), built from the CIFAR-100 book of TAKD's
ConvNetMaker (100 classes). Stages (experiments/chains.py): `teacher`, `student_ce`, `student_kd`,
`ta_plane8` (the first assistant, shared by TAKD and DGKD), `takd_plane6`, `takd_plane4`, `takd_student`,
`dgkd_plane6`, `dgkd_plane4`, `dgkd_student` and `sdgkd_student`.

Recipe (the defaults of DGKD's train.py):
  - SGD momentum 0.9, weight decay 1e-4, batch 128, 160 epochs;
  - lr a constant 0.01: the code's --lr is 0.1, but its schedule (TAKD's) uses a fixed 0.01 for plain CNNs;
  - no random crop or flip (--crop False); --config.data.crop_pad=4 --config.data.flip=True switches them on;
  - T = 5 and λ = 1 (--T 5, --lamb 1) for every KD stage, so each loss is KD only, no CE:
    `T²·Σ_k KL(p_k^T ‖ p_s^T)` over the stage's teachers, the KL averaged over batch and classes
    (`reduction="mean"`, the code's nn.KLDivLoss() default; per logit the gradient is then T/C·(p_s − p_t) at
    temperature T, 1/100 of the per-example-sum form's);
  - stochastic DGKD: one of the final student's four KD terms removed per mini-batch at random (--drop-num 1).
Where the paper and the code differ the config follows the code: the paper's loss is
`(n+1)(1−λ)·CE + λ·Σ KD` and the code's counts CE once, which agree at λ = 1; the paper multiplies each term by
a Bernoulli variable (survival 0.75 in our notes; `dgkd` with survival=0.75 gives that) where the code drops a
fixed number. The validation split is 5% of the training images [assume: the code trains on all 50,000 and
reports test accuracy; --config.data.val_fraction=0.0 for that].

Published (second-hand: a summary of the paper, not its tables): CIFAR-100 up to +3.78% over TAKD, CIFAR-10 up
to +1.01%, ImageNet 71.73% top-1 for a ResNet34 → ResNet18 chain; "up to" is the best over the paper's chains,
not a number for this one. Needs CIFAR-100 prepared in a tfds data_dir (see README, "Datasets").

Launch:
  python -m kd_jax pipeline --config experiments/dgkd_cifar100_plain.py \
      --config.data.data_dir=$HOME/tensorflow_datasets --workdir runs/dgkd_c100_plain
  python tools/error_overlap.py --pipeline runs/dgkd_c100_plain --student dgkd_student
"""

from chains import kd_chain
from kd_jax.config import base_config

CHAIN = ("plane10", "plane8", "plane6", "plane4", "plane2")
LAM = 1.0          # --lamb 1: KD terms only
TEMPERATURE = 5.0  # --T 5
DROP_NUM = 1       # --drop-num 1


def recipe():
  """DGKD's code defaults on CIFAR-100 for plain CNNs (constant lr 0.01, no augmentation)."""
  c = base_config()
  c.data.name = "cifar100"
  c.data.val_fraction = 0.05
  c.data.crop_pad = 0
  c.data.flip = False
  c.optim.name = "sgd"
  c.optim.lr = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "constant"
  c.epochs = 160
  c.batch_size = 128
  return c


def get_pipeline():
  return kd_chain(recipe(), CHAIN, lam=LAM, temperature=TEMPERATURE, reduction="mean", drop_num=DROP_NUM,
                  methods=("kd", "takd", "dgkd"))
