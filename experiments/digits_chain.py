"""Plain KD, TAKD, DGKD and stochastic DGKD on one chain of TAKD's plain CNNs, on the embedded digits data.

The digits-sized version of the plain-CNN chains of TAKD (Mirzadeh et al., AAAI 2020, arXiv:1902.03393) and
DGKD (Son et al., ICCV 2021, arXiv:2009.08825): plane10 → plane8 → plane6 → plane4 → plane2 (the CIFAR-10
book of TAKD's reference code, 10 classes; a max-pool on a 1×1 map is skipped, so the networks fit 8×8
images). Stages (experiments/chains.py): the teacher, the student alone and with KD from the teacher, the
TAKD chain, the DGKD chain sharing TAKD's first assistant, and the stochastic-DGKD student (one of the four
KD terms dropped per step, the reference code's `--drop-num 1`). Every KD term uses T = 5 (DGKD's default)
and λ = 0.9, i.e. `0.1·CE + 0.9·T²·KL` [assume: the default study's CE/KD weights; the references tune λ].
Training follows the default study (SGD lr 0.05 cosine, batch 64, 30 epochs).

Launch (one seed; experiments/chain_study.py runs three and writes the table in docs/methods.md):
  python -m kd_jax pipeline --config experiments/digits_chain.py --workdir runs/digits_chain
  python -m kd_jax pipeline --config experiments/digits_chain.py --config.seed=1 --workdir runs/digits_chain_s1
  python tools/error_overlap.py --pipeline runs/digits_chain --student dgkd_student
"""

from chains import kd_chain
from kd_jax.study import study_configs

CHAIN = ("plane10", "plane8", "plane6", "plane4", "plane2")


def get_pipeline():
  base = study_configs()["teacher"]
  return kd_chain(base, CHAIN, lam=0.9, temperature=5.0)
