"""Pseudo-label distillation for regression: regression_mlp_small (16) on diabetes with 20% of the training
labels, 0.5·L2(ground truth, labeled examples) + 0.5·L2(teacher's prediction, every example) (METHODS.md item 16).

Train the teacher first (experiments/regression_teacher.py, into runs/regression_teacher; elsewhere add
--config.teacher.workdir=DIR), then:
  python -m kd_jax train --config experiments/regression_pseudo_label.py --workdir runs/regression_pseudo_label
Variants: --config.loss.pseudo_label.on=unlabeled (the teacher only where there is no label),
--config.loss.pseudo_label.norm=l1 (and --config.data.regression_loss=l1), and the 2-teacher ensemble with
agreement weighting:
  python -m kd_jax train --config experiments/regression_pseudo_label.py \
      --config.teacher.extra_workdirs="('runs/regression_teacher_s100',)" \
      --config.loss.pseudo_label.weighting=ensemble --workdir runs/regression_ensemble
The comparison over 3 seeds is in docs/methods.md ("Regression and pseudo-labels").
"""

from regression_configs import regression_config


def get_config():
  return regression_config("diabetes", "pseudo_label", seed=0, teacher_workdirs=("runs/regression_teacher",))
