"""CIFAR-100 orthogonality study: each compression row of experiments/orthogonality_configs.py, with CE or KD.

Park, Yoo, Kwak, "On the Orthogonality of Knowledge Distillation with Other Techniques: From an Ensemble
Perspective", arXiv:2009.04120. Claim [paper]: KD is orthogonal to pruning, quantisation and cheap
convolutions (as to NAS and regularisation), its gain adding to theirs, because KD acts like bootstrap
aggregating (the teacher's soft targets are an implicit data augmentation). The paper reports relative
gains; no per-row numbers are carried here, and no code of the paper was found, so the setting below is
the usual pattern [assume], on the CRD/RepDistiller CIFAR-100 benchmark (Tian et al., ICLR 2020,
arXiv:1910.10699):
  - teacher resnet32x4 → student resnet8x4 (default), or wrn_40_2 → wrn_16_2 (`@wrn40_2_wrn16_2`); the
    teacher is the full-precision, uncompressed network, trained with experiments/cifar100_teacher.py;
  - every run: RepDistiller's recipe (SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs,
    lr × 0.1 at epochs 150/180/210, random crop and flip; experiments/cifar100_teacher.py);
  - loss 'ce': CE alone; 'kd': 0.1·CE + 0.9·KD at T = 4 (Hinton KD as the benchmark runs it);
  - rows: baseline; prune50/prune80/prune90: layer-wise unstructured magnitude pruning with Zhu & Gupta's
    gradual schedule from epoch 48 to epoch 168 (20% → 70% of training), masks every 100 steps, stem conv and
    classifier dense; int8/int4: QAT throughout (per-channel symmetric weights, per-tensor min/max
    activations, first layer and classifier at 8 bits); dw_sep: the student with Moonshine's
    depthwise-separable block convolutions (resnet8x4_dw_sep, wrn_16_2_dw_sep), from scratch.

The argument is '<row>_<loss>' or '<row>_<loss>@<pair>', e.g.
  python -m kd_jax train --config experiments/cifar100_orthogonality.py:prune80_kd \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet32x4 --workdir runs/c100_orth_prune80_kd
  python -m kd_jax train --config experiments/cifar100_orthogonality.py:dw_sep_ce@wrn40_2_wrn16_2 ...
The dw_sep rows train the registered `resnet8x4_dw_sep` / `wrn_16_2_dw_sep` students.
"""

import cifar100_pairs
import cifar100_teacher
from orthogonality_configs import apply_row, row_and_loss

from kd_jax.errors import KDJaxError

PAIRS = ("res32x4_res8x4", "wrn40_2_wrn16_2")  # the students with a dw_sep variant
PRUNE_EVERY_STEPS = 100  # Δt [assume]: 742 steps per epoch, so about 890 mask updates over 120 epochs


def get_config(run: str = "baseline_kd"):
  name, _, pair = run.partition("@")
  pair = pair or PAIRS[0]
  if pair not in PAIRS:
    raise KDJaxError(f"cifar100_orthogonality takes the pairs {', '.join(PAIRS)} (after '@'); got {pair!r}.")
  row, loss = row_and_loss(name)
  c = cifar100_pairs.use_pair(cifar100_teacher.get_config(), pair)
  if loss == "ce":
    c.teacher.model = ""  # CE alone: no teacher is read
  return apply_row(c, row, loss, prune_every_steps=PRUNE_EVERY_STEPS)
