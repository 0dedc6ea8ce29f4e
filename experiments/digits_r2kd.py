"""R2KD student on digits: mlp_small from the default study's teacher and its pruned copy.

Loss `CE(x) + [L_value + L_rank](x) + [L_value + L_rank](x_aug)` with the reference code's values (Kim et al.,
arXiv:2311.13934; Seonghak35/R2KD `mdistiller/engine/cfg.py`): CE weight 1, T = 4, value and rank weights 2
inside the loss, argsort ranks (logged, zero gradient as in the reference; `--config.loss.r2kd.rank=soft`
makes it differentiable, a deviation). The target is `0.7·z_T + 0.3·z_Tpruned`, the pruned copy having the 10%
smallest-magnitude weights of every kernel zeroed and running with batch statistics.

The augmented copy uses CutMix (α = 1). The reference trains one run per augmentation (`tools/train.py -a
{mixup, cutmix, cutout, autoaug, cutmixpick}`; none is a default); all five are here:
  --config.loss.r2kd.augment=mixup | cutout (one 8×8 hole on CIFAR; too large for 8×8 digits: set
      --config.loss.r2kd.cutout_size) | cutmixpick (CutMix, then the 64 samples whose original teacher has the
      highest entropy: at batch 64, every sample) | autoaug (one AutoAugment CIFAR sub-policy per batch; it works on pixel values, so
      give the digits normalisation, the training pool's mean and std on the [0, 1] scale:
      --config.loss.r2kd.image_mean="(0.3057,)" --config.loss.r2kd.image_std="(0.3763,)").
At the study's lr 0.05 R2KD is unstable on digits (docs/methods.md); the table's augmentation rows use
--config.optim.lr=0.01.

Train the teacher first (experiments/digits_teacher.py), then:
  python -m kd_jax train --config experiments/digits_r2kd.py \\
      --config.teacher.workdir=runs/digits_teacher --workdir runs/digits_r2kd
"""

from kd_jax.study import study_configs

# The digits training pool's normalisation on the [0, 1] pixel scale (`load_dataset('digits').train.mean`,
# `.std`, rounded as the reference rounds CIFAR's), for --config.loss.r2kd.augment=autoaug.
DIGITS_MEAN, DIGITS_STD = (0.3057,), (0.3763,)


def get_config():
  c = study_configs()["student_kd"]
  c.teacher.pruned_copy_rate = 0.1
  c.loss = {"ce": {"weight": 1.0},
            "r2kd": {"weight": 1.0, "temperature": 4.0, "value_weight": 2.0, "rank_weight": 2.0,
                     "rank": "reference", "augment": "cutmix"}}
  return c
