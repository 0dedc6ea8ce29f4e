"""CSKD student on digits: mlp_small learning from the cnn_large teacher of the default study.

Loss `CE + 1·(L_CS(T=4) + L_CS(T_i))`, the paper's Eq. 9 with the reference code's values (its mdistiller
`CSKD` config, see `kd_jax.losses.cskd`): CE weight 1, KD weight 1, α = 2 inside the loss, T = 4, CSWT range
2–6, batch 64 (the loss is a batch statistic). Everything else is the default study's KD student
(`study_configs()["student_kd"]`).

The extended reference code always adds three extras that are not in the arXiv paper; each is an option of
the `cskd` term, off here (see `kd_jax.distillers.CSKD`). All three, as that code runs them:
  --config.loss.cskd.strong_view=autoaug --config.loss.cskd.confidence_factor=True \\
  --config.loss.cskd.gram=True --config.loss.cskd.image_mean="(0.3057,)" --config.loss.cskd.image_std="(0.3763,)"
(a strong AutoAugment view with CE and the cosine terms on it, the median-confidence factors, and the
class-class / batch-batch Gram-matrix terms; the mean and std are the digits normalisation, which the strong
view's pixel operations need).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_cskd.py \\
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_cskd
Ablate with overrides, e.g. --config.loss.cskd.cswt=False or --config.loss.cskd.temperature=2.0.
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 1.0},
            "cskd": {"weight": 1.0, "temperature": 4.0, "alpha": 2.0, "cswt": True, "t_low": 2.0, "t_high": 6.0}}
  return c
