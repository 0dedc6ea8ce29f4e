"""CIFAR-100 HE-DA with the reference's per-pair settings (default pair resnet56 → resnet20).

Kim et al., KBS 2024 (arXiv:2311.14334), as Seonghak35/EnergyKD `configs/cifar100/energy_aug/<pair>.yaml`
and `CFG.energyAUG`: `0.1·CE + 0.9·KD` at T = 4 plus `0.9·KD` on CutMix images made within the high-energy
subset of each batch; SGD momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr × 0.1 at 150/180/210.
Per pair (METHODS.md item 7's second check): resnet56 → resnet20 selects the top 40% of teacher energies
(HIGH_RATE 0.4), the other reference pairs the top 50%; LOW_RATE 0 everywhere; ShuffleV2 and MobileNetV2
students lr 0.01, the others 0.05. The reference configs exist for res32x4_res8x4, res32x4_shuv2,
res56_res20, vgg13_mv2, vgg13_vgg8 and wrn40_2_wrn16_2. Published: no per-pair accuracy was retrieved.

  python -m kd_jax train --config experiments/cifar100_he_da.py:res56_res20 \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_resnet56 --workdir runs/c100_he_da_res20
Add --config.loss.he_da.mix=mixup for the MixUp variant.
"""

import cifar100_kd

REFERENCE_PAIRS = ("res32x4_res8x4", "res32x4_shuv2", "res56_res20", "vgg13_mv2", "vgg13_vgg8", "wrn40_2_wrn16_2")
HIGH_RATES = {"res56_res20": 0.4}


def get_config(pair: str = "res56_res20"):
  c = cifar100_kd.get_config(pair)
  c.loss = {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0},
            "he_da": {"weight": 0.9, "temperature": 4.0, "mix": "cutmix",
                      "high_fraction": HIGH_RATES.get(pair, 0.5), "low_fraction": 0.0}}
  return c
