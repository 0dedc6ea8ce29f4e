"""Pacemaker KD on CIFAR-100: WRN-40-4 teacher → 2×3-kernel pacemaker → 1×3-kernel student, against direct KD.

Pacemaker KD (Son, Kim, Song, Moon, Hwang, arXiv:2003.03944; no public code) distils an N×N-filter teacher into
a student of the same depth with 1×N "on-the-fly" filters; direct distillation is unstable, so an intermediate
pacemaker is trained first and the student learns "from the pacemaker and the original teacher step by step".
Networks: `wrn_40_4` (3×3), pacemaker `wrn_40_4_2x3` (2×3 kernels; the paper's other option is 3×1 followed
by 1×3: set PACEMAKER = "wrn_40_4_3x1_1x3" below), student `wrn_40_4_1x3`. Stages (experiments/chains.py):
`teacher`, `student_ce`, `student_kd` (direct), `pacemaker` (KD from the teacher), `student_pacemaker` (half
the epochs with KD from the pacemaker, then half from the teacher, each phase with a fresh optimizer) and
`student_pacemaker_joint` (`CE + λ·T²·(KL_pacemaker + KL_teacher)`).

Paper [abstract]: on CIFAR-100 WRN-40-4, +5.39% over conventional KD (`student_kd` here), with lower variance
between runs: run several seeds (--config.seed=1, 2 with their own --workdir) and compare mean and spread.
Everything else is [assume], the paper's training details not being in our sources:
  - T = 4 (the assumption of our method notes) and λ = 0.9, i.e. `0.1·CE + 0.9·T²·KL` per example
    (batchmean), for every KD term;
  - the CRD/RepDistiller WRN recipe of experiments/cifar100_teacher.py: SGD lr 0.05, momentum 0.9, weight
    decay 5e-4, batch 64, 240 epochs, lr × 0.1 at epochs 150/180/210, random crop (pad 4) and horizontal flip,
    5% of the training images held out for validation;
  - `student_pacemaker`'s two 120-epoch phases each restart the optimizer and so the schedule: each gets the
    recipe's milestones scaled to its length, lr × 0.1 at epochs 75/90/105 of the phase (without this the
    milestones, counted from the phase's start, would never be reached). The phases are split when the
    pipeline is built: change the length in EPOCHS below rather than with --config.epochs.
Needs CIFAR-100 prepared in a tfds data_dir (see README, "Datasets").

Launch:
  python -m kd_jax pipeline --config experiments/pacemaker_cifar100.py \
      --config.data.data_dir=$HOME/tensorflow_datasets --workdir runs/pacemaker_c100
"""

from chains import pacemaker_chain
from kd_jax.config import base_config

TEACHER, PACEMAKER, STUDENT = "wrn_40_4", "wrn_40_4_2x3", "wrn_40_4_1x3"
LAM = 0.9          # [assume]
TEMPERATURE = 4.0  # [assume]
EPOCHS = 240       # [assume] RepDistiller's recipe


def recipe():
  """The CRD/RepDistiller CIFAR-100 recipe [assume]."""
  c = base_config()
  c.data.name = "cifar100"
  c.data.val_fraction = 0.05
  c.data.crop_pad = 4
  c.data.flip = True
  c.optim.name = "sgd"
  c.optim.lr = 0.05
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "multistep"
  c.optim.milestones = (150, 180, 210)
  c.optim.gamma = 0.1
  c.epochs = EPOCHS
  c.batch_size = 64
  return c


def get_pipeline():
  base = recipe()
  stages = pacemaker_chain(base, TEACHER, PACEMAKER, STUDENT, lam=LAM, temperature=TEMPERATURE)
  for stage in stages:
    if stage.config.phases:  # each phase's fresh optimizer counts epochs from the phase's start
      stage.config.phases = tuple(
          dict(p, optim={"milestones": tuple(round(m * p["epochs"] / base.epochs) for m in base.optim.milestones)})
          for p in stage.config.phases)
  return stages
