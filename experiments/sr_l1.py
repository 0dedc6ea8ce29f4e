"""The plain SR student: sr_tiny (one residual block, 8 channels) trained with L1 alone, the baseline every SR
distiller is compared to.

On the embedded photos at ×2 (kd_jax.sr_study.sr_base_config: 24-pixel LR patches, batch 16, Adam, cosine).
Launch:
  python -m kd_jax train --config experiments/sr_l1.py --workdir runs/sr_l1
×4: add --config.data.scale=4 (to every run of the chain). The comparison over 3 seeds is in docs/methods.md
("Super-resolution"), from experiments/sr_study.py.
"""

from kd_jax.sr_study import sr_method_config


def get_config():
  return sr_method_config("l1")
