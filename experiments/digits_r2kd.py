"""R2KD student on digits (correlation distance only, for now): mlp_small from the default study's teacher.

Loss `CE + 1·(L_value + L_rank)` with the reference code's values (Seonghak35/R2KD `engine/cfg.py`,
METHODS.md item 9): CE weight 1, T = 4, value and rank weights 2 inside the loss, argsort ranks (the rank
term is logged but has zero gradient, as in the reference; `--config.loss.r2kd.rank=soft` makes it
differentiable, a deviation). Everything else is the default study's KD student.

Not yet the full method: the training loop does not build the pruned teacher (10% per-layer magnitude
pruning, `kd_jax.pruning.prune_by_magnitude`, run in train mode, blended 0.7/0.3 by the R2KD distiller
when it receives a (teacher, pruned_teacher) pair) nor the second loss on an augmented copy of the
batch. Until it does, this config distils from the plain teacher on the plain batch.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_r2kd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_r2kd
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 1.0},
            "r2kd": {"weight": 1.0, "temperature": 4.0, "value_weight": 2.0, "rank_weight": 2.0,
                     "rank": "reference"}}
  return c
