"""Parallel FEED student: cnn_small learning from two cnn_large teachers on digits.

Park & Kwak, arXiv:1909.10754: the student's last stage (2x2x64) feeds one translator per teacher
(3 × (Conv3x3 + LeakyReLU 0.1), output width 128 = the teacher's channels), and each translated map is matched
to its teacher's last-stage map (2x2x128) with FT's loss, `β Σ_k mean |φ_k(F_s)/‖·‖₂ − F_{t_k}/‖·‖₂|`, next to
CE weight 1. Readings of the abstract [assume]: the teachers' raw last-stage features (no FT paraphraser), and
β = 500 as FT's code; the two teachers are the default study's teacher config trained with seeds 0 and 1.
The student is cnn_small, not the default study's mlp_small, which has no spatial stages.

One seed, 30 epochs, teachers cnn_large seed 0 (98.52% test) and seed 1 (97.77%) trained as below: 97.59% test
accuracy (CE-only cnn_small, same settings: 97.77%; one test image is 0.19 points, so this is within noise). The
two FT terms fall from ~0.029 to ~0.005 each over training (β·sum ≈ 29 → 5.3, against CE 1.76 → 0.02).

Train two teachers with different seeds, then pass the first as `teacher.workdir` and the second as
`teacher.extra_workdirs` (one translator per teacher, in that order):
  python -m kd_jax train --config experiments/digits_teacher.py --workdir runs/digits_teacher
  python -m kd_jax train --config experiments/digits_teacher.py --config.seed=1 --workdir runs/digits_teacher_s1
  python -m kd_jax train --config experiments/digits_feed.py \
      --config.teacher.workdir=runs/digits_teacher \
      --config.teacher.extra_workdirs="('runs/digits_teacher_s1',)" --workdir runs/digits_feed
With one teacher (no extra_workdirs) the term is FT's loss on the raw teacher feature. Sequential FEED (each
stage's student teaches the next) is experiments/feed_sequential.py. The CE-only cnn_small baseline is the same
command with --config.loss="{'ce': {'weight': 1.0}}".
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.student.model = "cnn_small"
  c.loss = {"ce": {"weight": 1.0}, "feed": {"weight": 1.0, "beta": 500.0}}
  return c
