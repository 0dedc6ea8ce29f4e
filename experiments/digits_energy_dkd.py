"""Energy DKD student of the default study (mlp_small from cnn_large on digits), the paper's temperature rule.

Kim et al., "Maximizing discrimination capability of knowledge distillation with energy function", KBS 2024
(arXiv:2311.14334; code Seonghak35/EnergyKD `mdistiller/distillers/energyDKD.py`): DKD whose temperature is
chosen per sample by the teacher's energy `−4·logsumexp(z_t/4)`, with thresholds at the bottom and top 20% of
the training set's energies (computed once from a teacher pass, stored in `<workdir>/prepared.json`). As the
abstract states the rule, low-energy samples get T = 6, high-energy ones T = 2, the rest 4; the repository's
opposite direction is experiments/digits_energy_dkd_repo.py. DKD's part is experiments/digits_dkd.py's:
CE weight 1, α = 1, β = 8 (the paper keeps DKD's defaults), warm-up 3 of 30 epochs (the reference's 20 of 240,
scaled).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_energy_dkd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_energy_dkd
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 1.0},
            "energy_dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0, "warmup_epochs": 3.0, "temperature": 4.0,
                           "low_energy_temperature": 6.0, "high_energy_temperature": 2.0, "low_fraction": 0.2,
                           "high_fraction": 0.2}}
  return c
