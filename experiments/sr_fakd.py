"""FAKD (He, Dai, Lu, Jiang & Xia, ICIP 2020; code Vincent-Hoo/Knowledge-Distillation-for-Super-resolution):
0.5·L1(SR, HR) + 0.5·L1(SR, SR_teacher) + L1 between spatial affinity matrices of the student's residual-block
output and the teacher's last.

On the embedded photos at ×2 (kd_jax.sr_study.sr_base_config: 24-pixel LR patches, batch 16, Adam, cosine).
Train the teacher first (experiments/sr_teacher.py, into runs/sr_teacher; elsewhere: add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/sr_fakd.py --workdir runs/sr_fakd
×4: add --config.data.scale=4 (to every run of the chain). The comparison over 3 seeds is in docs/methods.md
("Super-resolution"), from experiments/sr_study.py.
"""

from kd_jax.sr_study import sr_method_config


def get_config():
  return sr_method_config("fakd")
