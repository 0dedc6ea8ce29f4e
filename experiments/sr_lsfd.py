"""LSFD, local-selective feature distillation (Park & Kwak, arXiv:2111.10988; METHODS.md item 2): L1 + LSFD
between 3×3 local regressions of the student's residual-block output and the teacher's last, each
position weighted by a softmax over positions of the teacher–student difference. No code was published:
kd_jax/losses/super_resolution.py says which reading this is; its knobs are `loss.lsfd.temperature`,
`regressor_layers` and `kernel_size`.

On the embedded photos at ×2 (kd_jax.sr_study.sr_base_config: 24-pixel LR patches, batch 16, Adam, cosine).
Train the teacher first (experiments/sr_teacher.py, into runs/sr_teacher; elsewhere: add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/sr_lsfd.py --workdir runs/sr_lsfd
×4: add --config.data.scale=4 (to every run of the chain). The comparison over 3 seeds is in docs/methods.md
("Super-resolution"), from experiments/sr_study.py.
"""

from kd_jax.sr_study import sr_method_config


def get_config():
  return sr_method_config("lsfd")
