"""CIFAR-100 Energy DKD, vgg13 → vgg8, the reference's only Energy-DKD config.

Kim et al., "Maximizing discrimination capability of knowledge distillation with energy function", KBS 2024
(arXiv:2311.14334), as Seonghak35/EnergyKD `configs/cifar100/energy_dkd/vgg13_vgg8.yaml` with
`CFG.energyDKD`: CE weight 1, α = 1, β = 6 (the per-pair value, METHODS.md item 7's second check; the
default is 8), warm-up 20 epochs, temperatures LOW 2 / MID 4 / HIGH 6 as the repository applies them (low
energy → 2, high energy → 6; the abstract states the opposite, see `kd_jax.losses.energy_kd`: add
--config.loss.energy_dkd.low_energy_temperature=6.0 --config.loss.energy_dkd.high_energy_temperature=2.0
for it), energy rates 0.1/0.1; SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, 360 epochs, lr × 0.1
at 150, 180, 210, 240, 270 and 300. Published: no number retrieved (METHODS.md item 7: "We did not retrieve
accuracy numbers"; the repository ships a vgg8 checkpoint, `best_results/energydkd`, without its accuracy in
the README).

Train the teacher with experiments/cifar100_teacher.py and --config.student.model=vgg13, then:
  python -m kd_jax train --config experiments/cifar100_energy_dkd.py \
      --config.data.data_dir=$HOME/tensorflow_datasets \
      --config.teacher.workdir=runs/c100_vgg13 --workdir runs/c100_energy_dkd_vgg8
"""

import cifar100_kd


def get_config():
  c = cifar100_kd.get_config("vgg13_vgg8")
  c.epochs = 360
  c.optim.milestones = (150, 180, 210, 240, 270, 300)
  c.loss = {"ce": {"weight": 1.0},
            "energy_dkd": {"weight": 1.0, "alpha": 1.0, "beta": 6.0, "warmup_epochs": 20.0, "temperature": 4.0,
                           "low_energy_temperature": 2.0, "high_energy_temperature": 6.0, "low_fraction": 0.1,
                           "high_fraction": 0.1}}
  return c
