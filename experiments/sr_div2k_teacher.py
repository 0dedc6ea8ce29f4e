"""An SR teacher in the papers' setting: RCAN (10 residual groups × 20 RCABs, 64 channels) trained on DIV2K,
evaluated on Set5 (then Set14, B100, Urban100 with tools/sr_evaluate.py).

The recipe of EDSR and RCAN (and of the LSFD and FAKD students distilled from them): DIV2K's 800 training
pairs, bicubic LR (MATLAB imresize), 48-pixel LR patches with flips and 90° rotations, batch 16, L1, Adam
(β = 0.9, 0.999) at 1e-4 halved every 200K iterations, about 1000 iterations per logged "epoch" in the
reference code; whole-image PSNR/SSIM on the Y channel with `scale` pixels shaved. Here the training images
are cut into 96-pixel LR tiles (BasicSR's sub-image preparation) from which each step crops its patch; the
multistep milestones are in kd_jax epochs (one pass over the tiles, ~3,600 steps at ×2): 300K iterations
≈ 85 epochs, the halving at 200K ≈ epoch 57.

Prepare DIV2K (DIV2K_train_HR, DIV2K_train_LR_bicubic/X<s>) and the benchmark folders (each with HR and
LR_bicubic/X<s>, as BasicSR and EDSR-PyTorch distribute them), then:
  python -m kd_jax train --config experiments/sr_div2k_teacher.py --config.data.scale=4 \
      --config.data.hr_dir=$DATA/DIV2K/DIV2K_train_HR --config.data.lr_dir=$DATA/DIV2K/DIV2K_train_LR_bicubic/X4 \
      --config.data.test_hr_dir=$DATA/benchmark/Set5/HR --config.data.test_lr_dir=$DATA/benchmark/Set5/LR_bicubic/X4 \
      --workdir runs/div2k_rcan_x4
  python tools/sr_evaluate.py --workdir runs/div2k_rcan_x4 --scale 4 --benchmarks $DATA/benchmark
Or from tfds: --config.data.name=div2k --config.data.data_dir=DIR (div2k/bicubic_x<s> prepared there; its
validation images become the test split). --config.student.model=edsr trains the EDSR teacher instead.

Reported PSNR (dB, Y channel), RCAN (Zhang et al., ECCV 2018, Table 3): ×2 Set5 38.27, Set14 34.12, B100
32.41, Urban100 33.34; ×4 32.63, 28.87, 27.77, 26.82. EDSR (Lim et al., CVPRW 2017, Table 3): ×2 38.11,
33.92, 32.32, 32.93; ×4 32.46, 28.80, 27.71, 26.64. Not reproduced here (no GPU and no DIV2K on the
machine these configs were written on).
"""

from kd_jax.sr_study import sr_base_config


def get_config():
  c = sr_base_config(scale=2)
  c.data.name = "sr_folders"
  c.data.tile_size = 96
  c.data.patch_size = 48
  c.data.val_fraction = 0.01
  c.student.model = "rcan"
  c.optim.lr = 1e-4  # Adam without weight decay and batch 16 come from sr_base_config
  c.optim.schedule = "multistep"
  c.optim.milestones = (57,)
  c.optim.gamma = 0.5
  c.epochs = 85
  c.eval_batch_size = 8
  c.log_every_steps = 200
  c.checkpoint_every_epochs = 1
  return c
