"""Self-distillation with area-wise RKD: mlp_small on digits, its own earlier snapshot as the teacher.

Area-wise relational KD (Cho, Park, Lim, CSAM 30(5), 2023; no arXiv, no code; kd_jax.distillers.AreaRKD, read
from the abstract) reports up to +0.5% accuracy "introducing the RKD method to self-KD using image data",
without saying what the teacher is. kd_jax's reading [assume]: the teacher is the student network with the
weights it had at the last snapshot, taken every epoch (config.teacher.self='snapshot', snapshot_every = 17
steps, one epoch of the 1132 training images at batch 64); the first epoch distils from the initial network.
The loss is experiments/digits_area_rkd.py's, `CE + 1·(25·L_area)` on the 128-d embeddings, and the recipe
is the default study's CE student (lr 0.05 cosine, weight decay 5e-4, 30 epochs), which is the baseline of
the same seeds. `--config.teacher.self=ema --config.teacher.ema_decay=0.99` uses a moving average of the
student's weights instead (a mean teacher, averaging over about 100 steps).

  python -m kd_jax train --config experiments/digits_area_rkd_self.py --workdir runs/digits_area_rkd_self
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_ce"]
  c.loss = {"ce": {"weight": 1.0},
            "area_rkd": {"weight": 1.0, "area_weight": 25.0, "distance_weight": 0.0, "angle_weight": 0.0}}
  c.teacher.self = "snapshot"
  c.teacher.snapshot_every = 17
  c.teacher.ema_decay = 0.99
  return c
