"""Compressed-ensemble student: mlp_small learning from the averaged outputs of several digits teachers.

Compressed ensemble (Buciluǎ et al., "Model Compression", KDD 2006; Hinton et al. 2015, arXiv:1503.02531):
the target is the mean of the teachers' softened probabilities, `0.1·CE + 0.9·T²·KL(mean_k p_k^T || p_s^T)`
with T = 4 and the 0.1/0.9 weights of the default KD study [assume: neither source fixes them for ensembles].
`--config.loss.ensemble_kd.average=logits` averages logits instead (a normalised geometric mean).

Train two or more teachers with different seeds, then pass the first as `teacher.workdir` and the others
as `teacher.extra_workdirs` (the loop hands the distiller one output per teacher, in that order):
  python -m kd_jax train --config experiments/digits_teacher.py --workdir runs/digits_teacher
  python -m kd_jax train --config experiments/digits_teacher.py --config.seed=1 --workdir runs/digits_teacher_s1
  python -m kd_jax train --config experiments/digits_ensemble_kd.py \
      --config.teacher.workdir=runs/digits_teacher \
      --config.teacher.extra_workdirs="('runs/digits_teacher_s1',)" --workdir runs/digits_ensemble_kd
With a single teacher the term is plain KD.
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 0.1}, "ensemble_kd": {"weight": 0.9, "temperature": 4.0, "average": "probs"}}
  return c
