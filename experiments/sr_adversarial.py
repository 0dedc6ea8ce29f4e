"""Adversarial multi-scale feature distillation for SR (Jo, Park & Hong, J. Broadcast Eng. 26(5), 2021):
the student trained with L1 and against least-squares discriminators that tell its residual-block outputs
(and its 2× average-pooled version) from the teacher's last, the discriminators on their own Adam
(scheme 'adversarial' with a frozen teacher, kd_jax/train/schemes/adversarial.py).

On the embedded photos at ×2 (kd_jax.sr_study.sr_base_config: 24-pixel LR patches, batch 16, Adam, cosine).
Train the teacher first (experiments/sr_teacher.py, into runs/sr_teacher; elsewhere: add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/sr_adversarial.py --workdir runs/sr_adversarial
×4: add --config.data.scale=4 (to every run of the chain). The comparison over 3 seeds is in docs/methods.md
("Super-resolution"), from experiments/sr_study.py.
"""

from kd_jax.sr_study import sr_method_config


def get_config():
  return sr_method_config("adversarial")
