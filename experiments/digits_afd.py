"""AFD, online adversarial feature-map distillation (Chung, Park, Kim & Kwak, ICML 2020, arXiv:2002.01775)
on the embedded digits: cnn_small and cnn_large trained together from scratch, each with CE + T²·KL to the
other's predictions (T = 3) and a discriminator per network on the last stage's feature maps (1×1 transfer
layers map both to 128 channels), least-squares adversarial losses, discriminators and the networks'
adversarial updates on Adam (lr 2e-4), the networks' logit updates on the study's SGD.

Launch (K = 2):
  python -m kd_jax train --config experiments/digits_afd.py --workdir runs/digits_afd
K = 3, in the paper's cyclic ring 1→2→3→1 (one discriminator per network):
  python -m kd_jax train --config experiments/digits_afd.py --config.peers="('cnn_large', 'cnn_small')" \
      --workdir runs/digits_afd3

The paper reports, as a secondary summary gives its CIFAR-100 table (we could not open the paper's), ResNet-32
69.38% trained alone and 74.03% with AFD (73.38% without the adversarial feature term), and the largest
gains for a small network paired with a large one (abstract). No code was
released: the least-squares losses, T and the optimizers are readings of the paper
(kd_jax/train/schemes/adversarial.py). On digits, 3 seeds: docs/methods.md ("Online distillation"), from
`python tools/online_methods.py --seeds 0 1 2`.
"""

import ml_collections

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_ce"]
  c.scheme = "adversarial"
  c.student.model = "cnn_small"
  c.peers = ("cnn_large",)
  c.loss = ml_collections.ConfigDict({"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 3.0}})
  return c
