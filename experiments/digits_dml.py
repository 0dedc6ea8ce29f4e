"""Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018, arXiv:1706.00384) on the embedded digits:
cnn_small and cnn_large trained together from scratch, each with CE + KL(p_peer ‖ p_self) at T = 1.

Launch (K = 2; the table lists both networks):
  python -m kd_jax train --config experiments/digits_dml.py --workdir runs/digits_dml
K = 3, a third network in the ring of peers:
  python -m kd_jax train --config experiments/digits_dml.py --config.peers="('cnn_large', 'cnn_small')" \
      --workdir runs/digits_dml3

The paper (abstract and Table 1) reports that every architecture it pairs on CIFAR-100 and Market-1501
gains from a peer, and that mutual learning of small networks beats distillation from a static, larger
teacher; we could not open its tables to quote figures here. On digits, 3 seeds:
docs/methods.md ("Online distillation"), from `python tools/online_methods.py --seeds 0 1 2`.
"""

import ml_collections

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_ce"]  # the default study's recipe: 30 epochs, cosine from 0.05, batch 64
  c.scheme = "mutual"
  c.student.model = "cnn_small"
  c.peers = ("cnn_large",)
  c.loss = ml_collections.ConfigDict({"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 1.0}})
  return c
