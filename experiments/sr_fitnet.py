"""FitNet on SR features (METHODS.md item 18): L1 + MSE between a 3×3-conv regression of the student's last
residual-block output and the teacher's (`regressor='conv'`: no BatchNorm or ReLU, SR features are signed).

On the embedded photos at ×2 (kd_jax.sr_study.sr_base_config: 24-pixel LR patches, batch 16, Adam, cosine).
Train the teacher first (experiments/sr_teacher.py, into runs/sr_teacher; elsewhere: add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/sr_fitnet.py --workdir runs/sr_fitnet
×4: add --config.data.scale=4 (to every run of the chain). The comparison over 3 seeds is in docs/methods.md
("Super-resolution"), from experiments/sr_study.py.
"""

from kd_jax.sr_study import sr_method_config


def get_config():
  return sr_method_config("fitnet")
