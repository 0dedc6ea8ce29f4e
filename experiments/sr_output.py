"""KD on the output for SR: 0.5·L1(SR, HR) + 0.5·L1(SR, SR_teacher), the FAKD reference's α = 0.5 split
(METHODS.md item 18, 'KD on outputs').

On the embedded photos at ×2 (kd_jax.sr_study.sr_base_config: 24-pixel LR patches, batch 16, Adam, cosine).
Train the teacher first (experiments/sr_teacher.py, into runs/sr_teacher; elsewhere: add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/sr_output.py --workdir runs/sr_output
×4: add --config.data.scale=4 (to every run of the chain). The comparison over 3 seeds is in docs/methods.md
("Super-resolution"), from experiments/sr_study.py.
"""

from kd_jax.sr_study import sr_method_config


def get_config():
  return sr_method_config("output")
