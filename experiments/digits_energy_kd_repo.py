"""Energy KD with the reference repository's temperatures (Seonghak35/EnergyKD `energyKD.T.LOW = 2`,
`T.HIGH = 6`): low-energy samples get T = 2, high-energy samples T = 6 — the opposite of the abstract's rule
(experiments/digits_energy_kd.py). The paper and its code disagree, so both are run; compare them in the
logit-method table (docs/methods.md).

  python -m kd_jax train --config experiments/digits_energy_kd_repo.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_energy_kd_repo
"""

import digits_energy_kd


def get_config():
  c = digits_energy_kd.get_config()
  c.loss.energy_kd.low_energy_temperature = 2.0
  c.loss.energy_kd.high_energy_temperature = 6.0
  return c
