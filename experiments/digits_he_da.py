"""HE-DA student of the default study: mlp_small from cnn_large on digits, KD plus KD on mixed high-energy images.

Kim et al., KBS 2024 (arXiv:2311.14334), reference Seonghak35/EnergyKD HE-DA configs: `0.1·CE + 0.9·KD`
at T = 4, plus `0.9·KD` on CutMix images made within the top-50% teacher-energy subset of each batch
(thresholds from a teacher pass over the training data, stored in `<workdir>/prepared.json`).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_he_da.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_he_da
Use --config.loss.he_da.mix=mixup for the MixUp variant.
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0},
            "he_da": {"weight": 0.9, "temperature": 4.0, "mix": "cutmix", "high_fraction": 0.5,
                      "low_fraction": 0.0}}
  return c
