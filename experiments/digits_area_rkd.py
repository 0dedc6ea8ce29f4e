"""Area-wise RKD student of the default study: mlp_small learning from the cnn_large teacher on digits.

Area-wise relational KD (Cho, Park, Lim, CSAM 30(5), 2023; no arXiv, no code) as *read from the abstract*
(with kd_jax's own choices where it is silent, [assume]): Huber loss between the teacher's and the student's
triangle areas over every triplet of the batch, each normalised by its mean area, on the pooled embeddings.
Loss `CE + 1·(25·L_area)`: λ_area = 25 is one of those choices (RKD's distance weight); the weight lives in
the distiller, so the term weight is 1. The RKD distance and angle terms are off; switch them on next to the
area term with --config.loss.area_rkd.distance_weight=25.0 --config.loss.area_rkd.angle_weight=50.0. The paper
applies the loss "at a specific hidden layer": --config.loss.area_rkd.stage=0 reads a stage output instead of
the embedding.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_area_rkd.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_area_rkd
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 1.0},
            "area_rkd": {"weight": 1.0, "area_weight": 25.0, "distance_weight": 0.0, "angle_weight": 0.0}}
  return c
