"""Energy DKD with the reference repository's temperatures (Seonghak35/EnergyKD `energyDKD.T.LOW = 2`,
`T.HIGH = 6`): low-energy samples get T = 2, high-energy samples T = 6, the opposite of the abstract's rule
(experiments/digits_energy_dkd.py). The paper and its code disagree, so both are run and reported
(docs/methods.md).

  python -m kd_jax train --config experiments/digits_energy_dkd_repo.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_energy_dkd_repo
"""

import digits_energy_dkd


def get_config():
  c = digits_energy_dkd.get_config()
  c.loss.energy_dkd.low_energy_temperature = 2.0
  c.loss.energy_dkd.high_energy_temperature = 6.0
  return c
