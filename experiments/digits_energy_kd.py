"""Energy KD student of the default study (mlp_small from cnn_large on digits), the paper's temperature rule.

Kim et al., "Maximizing discrimination capability of knowledge distillation with energy function", KBS 2024
(arXiv:2311.14334): per-sample temperature from the teacher's energy `−4·logsumexp(z_t/4)`; the bottom and
top 20% of the training set's energies set the thresholds, which the run computes once from a teacher pass
and stores in `<workdir>/prepared.json`. As the abstract states it, low-energy (confident) samples get the
higher temperature 6, high-energy samples 2, the rest 4. `0.1·CE + 0.9·energy_kd` as in the reference.
The repository's opposite direction is experiments/digits_energy_kd_repo.py.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_energy_kd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_energy_kd
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 0.1},
            "energy_kd": {"weight": 0.9, "temperature": 4.0, "low_energy_temperature": 6.0,
                          "high_energy_temperature": 2.0, "low_fraction": 0.2, "high_fraction": 0.2}}
  return c
