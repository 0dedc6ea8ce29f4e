"""WTTM student of the default study: mlp_small learning from the cnn_large teacher on digits.

Weighted transformed teacher matching (Zheng & Yang, ICLR 2024, arXiv:2402.11148):
`CE + β·mean_b (Σ_c p_t,c^l)·KL(p̃_t ‖ p_s)`, TTM with each example weighted by the power transform's
normaliser. The reference README (zkxufo/TTM) has one WTTM command, WTTM added to CRD:
`--distill crd --add wttm --ttm_l 0.2 -b 0.8 -a 4`, i.e. l = 0.2 at weight 4 next to CE 1. This config uses
that l and weight for WTTM alone, with CE weight 1 [assume: the README gives no standalone WTTM setting and
the paper's per-pair values, its appendix A.4, could not be read here]. On 10 classes the weight
`Σ_c p_t,c^0.2` lies between 1 (one-hot teacher) and 10^0.8 ≈ 6.3 (uniform teacher).

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_wttm.py \
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_wttm
"""

from kd_jax.study import study_configs


def get_config():
  c = study_configs()["student_kd"]
  c.loss = {"ce": {"weight": 1.0}, "wttm": {"weight": 4.0, "exponent": 0.2}}
  return c
