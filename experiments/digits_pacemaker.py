"""Pacemaker KD against direct KD for a 1×N-filter student, on the embedded digits data.

The digits-sized version of Pacemaker KD (Son, Kim, Song, Moon, Hwang, arXiv:2003.03944; no public code):
the teacher is WRN-16-2 with 3×3 filters, the student the same network with every 3×3 filter replaced by
a 1×3 "on-the-fly" filter (`wrn_16_2_1x3`), the pacemaker the same network with intermediate 2×3 filters
(`wrn_16_2_2x3`; `wrn_16_2_3x1_1x3` is the paper's other option). Stages (experiments/chains.py): teacher,
student alone, student with KD from the teacher (direct), pacemaker with KD from the teacher, the student
from the pacemaker then from the teacher (two phases of 15 epochs; sequential, the default), and from both
at once (`CE + λ·T²·(KL_pacemaker + KL_teacher)`, joint). T = 4 and λ = 0.9 for every KD term [assume: the
paper's T and λ are not in the abstract]; training as the default study (SGD lr 0.05 cosine, batch 64,
30 epochs). The paper stresses the variance between runs: experiments/chain_study.py reports mean and
standard deviation over seeds.

Launch:
  python -m kd_jax pipeline --config experiments/digits_pacemaker.py --workdir runs/digits_pacemaker
"""

from chains import pacemaker_chain
from kd_jax.study import study_configs


def get_pipeline():
  base = study_configs()["teacher"]
  return pacemaker_chain(base, "wrn_16_2", "wrn_16_2_2x3", "wrn_16_2_1x3", lam=0.9, temperature=4.0)
