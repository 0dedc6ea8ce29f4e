"""Bidirectional Distillation (Kweon et al., WWW 2021): mf_small and an mf_large peer trained together
(config.scheme='mutual'), each learning the other's ratings on rank-discrepancy samples (METHODS.md item 15b).
No teacher run is needed.

  python -m kd_jax train --config experiments/rec_bd.py --workdir runs/rec_bd
The comparison over 3 seeds is in docs/methods.md ("Recommenders with explicit ratings"), from
experiments/rec_study.py.
"""

from rec_configs import rec_config


def get_config():
  return rec_config("bd", seed=0)
