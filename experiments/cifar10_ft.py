"""CIFAR-10 FT (factor transfer), resnet56 → resnet20, as the official code runs it.

Kim, Park, Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer", NeurIPS 2018
(arXiv:1802.04977); reference Jangho-Kim/Factor-Transfer-pytorch (`train_Paraphraser.py`, then
`train_student.py`), whose loops run `range(0, epoch + 1)`, i.e. one epoch more than their `--epoch`
defaults (METHODS.md item 6's second check):
- phase `paraphraser`: 6 epochs (5 + 1) of the paraphraser alone on the frozen teacher's last-stage feature,
  L1 reconstruction, factor rate k = 0.5, SGD lr 0.1 (its decay steps at 150/225 are never reached),
  momentum 0.9, weight decay 5e-4;
- phase `main`: 164 epochs (163 + 1) of the student and its translator, `CE + 500·L1(FT(F_s), FT(F_t))`
  (the official flattened, L2-normalised factors: `form='paper'`, the default), SGD lr 0.1, momentum 0.9,
  weight decay 5e-4, lr × 0.1 at epochs 82 and 123 of the phase;
- batch 128, random crop (pad 4) and flip; the reference normalises with std (0.2023, 0.1994, 0.2010), kd_jax
  with the dataset's std (0.2470, 0.2435, 0.2616).
The paper's CIFAR-10 numbers (its Table 1) are not carried here: not re-checked against the PDF.

`experiments/cifar10_ft.py:teacher` is the reference's teacher recipe (`train_teacher.py`: resnet56 with CE
alone, the main phase's optimizer and its 164 epochs). Train it, then the student:
  python -m kd_jax train --config experiments/cifar10_ft.py:teacher \
      --config.data.data_dir=$HOME/tensorflow_datasets --workdir runs/c10_resnet56
  python -m kd_jax train --config experiments/cifar10_ft.py \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c10_resnet56 --workdir runs/c10_ft_res20
"""

import cifar100_teacher

from kd_jax.errors import KDJaxError


def get_config(which: str = "student"):
  if which not in ("student", "teacher"):
    raise KDJaxError(f"cifar10_ft.py takes 'student' or 'teacher' after ':', got {which!r}.")
  c = cifar100_teacher.get_config()
  c.data.name = "cifar10"
  c.teacher.model = "resnet56"
  c.student.model = "resnet20"
  c.batch_size = 128
  c.optim.lr = 0.1
  c.optim.milestones = (82, 123)
  c.epochs = 164
  if which == "teacher":
    c.student.model = "resnet56"
    return c
  c.loss = {"ce": {"weight": 1.0}, "ft": {"weight": 500.0, "mode": "transfer", "rate": 0.5}}
  c.phases = (
      {"name": "paraphraser", "epochs": 6, "loss": {"ft": {"weight": 1.0, "mode": "paraphraser", "rate": 0.5}},
       "optim": {"lr": 0.1, "schedule": "constant"}, "trainable": ("distiller/ft/paraphraser",)},
      {"name": "main", "trainable": ("student", "distiller/ft/translator")},
  )
  return c
