"""The segmentation study's configs (privileged modality: the teacher sees EO+SAR, the student EO only).

Not a config itself: experiments/seg_teacher.py, seg_student.py, seg_pixel_kd.py, seg_cwd.py and
seg_study.py build on `seg_config`. Data: the embedded synthetic `buildings` tiles (kd_jax/data/segmentation.py:
300 tiles of 32×32, channels R, G, B, SAR; classes ground, building, road; clouds over 70% of the tiles hide the
EO image but not the SAR one). Teacher `unet_small` (16-32-64) on all four channels; student `unet_tiny`
(8-16-32) on the three EO channels. Every run: Adam (AdamW without weight decay) at 3e-3 with a cosine
schedule, batch 16, 30 epochs, random 4-pixel crops and flips of image and label together [assume: our
choices for a CPU study, not a paper's recipe]. KD terms: per-pixel KD over valid pixels at T = 4 with
0.5·CE + 0.5·KD (the default study's style), the same plus FitNet's L2 on the last decoder features through a
1×1 regressor, and CWD with mmrazor's defaults (τ = 1, weight 3 [assume]). The seed paper's network is a
DeepLab-style encoder with a deformable convolution: the DeepLabv3+ pair `deeplab_small_dcn` (teacher, EO+SAR)
→ `deeplab_tiny` (student, EO) runs the same recipe.
"""

from __future__ import annotations

from kd_jax.config import base_config

EO, ALL = (0, 1, 2), ()


def seg_config(role: str, loss=None, model: str | None = None):
  """role: 'teacher' (EO+SAR, CE; default unet_small) or 'student' (EO; default unet_tiny, `loss` default CE).
  `model` swaps the network (e.g. the DeepLabv3+ pair `deeplab_small_dcn` → `deeplab_tiny`)."""
  c = base_config()
  c.task = "segmentation"
  c.data.name = "buildings"
  c.data.crop_pad = 4
  c.data.flip = True
  c.optim.name = "adamw"
  c.optim.lr = 3e-3
  c.optim.weight_decay = 0.0
  c.optim.schedule = "cosine"
  c.batch_size = 16
  c.eval_batch_size = 64
  c.epochs = 30
  c.log_every_steps = 50
  if role == "teacher":
    c.student.model = model or "unet_small"
    c.data.student_channels = ALL
    c.loss = {"supervised": {"weight": 1.0}}
  else:
    c.student.model = model or "unet_tiny"
    c.data.student_channels = EO
    c.data.teacher_channels = ALL
    c.loss = loss or {"supervised": {"weight": 1.0}}
  return c


PIXEL_KD = {"supervised": {"weight": 0.5}, "pixel_kd": {"weight": 0.5, "temperature": 4.0}}
CWD = {"supervised": {"weight": 1.0}, "cwd": {"weight": 3.0, "temperature": 1.0}}
# METHODS.md 15a's optional feature term: L2 between the decoder's last feature maps through FitNet's 1×1
# regressor on the student side, on top of per-pixel KD (weight 1 [assume]).
PIXEL_KD_FEATURE = {**PIXEL_KD, "fitnet": {"weight": 1.0, "stage": -1}}
