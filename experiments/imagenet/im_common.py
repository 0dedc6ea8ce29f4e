"""Shared by experiments/imagenet/*.py: the standard ImageNet distillation recipe and the two benchmark pairs.

Recipe (torchvision's ResNet recipe, as mdistiller's `configs/imagenet/*/*.yaml`, ReviewKD's `imagenet_amp.py`
and DIST's baseline): 100 epochs, SGD momentum 0.9, weight decay 1e-4, lr × 0.1 at epochs 30, 60 and 90, lr
0.1 × batch/256 (batch 256 at 0.1, or 512 at 0.2), 224² crops. Data keys: `data.name='imagenet2012'`,
`data.data_dir`, `data.image_size=224`, `data.num_workers` (read by the streaming tfds/grain pipeline). The frozen
teacher is a kd_jax run directory in `teacher.workdir`, e.g. torchvision's checkpoint converted with
`python -m kd_jax import-torch ...` (see its --help).
"""

import ml_collections

from kd_jax.config import base_config
from kd_jax.errors import KDJaxError

# pair -> (teacher, student): the DKD/ReviewKD/CRD/DIST papers' ImageNet pairs.
PAIRS = {"r34_r18": ("imagenet_resnet34", "imagenet_resnet18"), "r50_mv1": ("imagenet_resnet50", "imagenet_mobilenetv1")}
DEFAULT_PAIR = "r34_r18"
NUM_WORKERS = 16  # data-loading processes per host [assume: the references use 24-32 per 4-8 GPUs]


def pair_name(pair: str) -> str:
  """The PAIRS key of `pair` (also accepted as `teacher-student` model names)."""
  if pair in PAIRS:
    return pair
  by_models = {f"{t}-{s}": name for name, (t, s) in PAIRS.items()}
  if pair in by_models:
    return by_models[pair]
  raise KDJaxError(f"Unknown ImageNet pair {pair!r}; choose one of {', '.join(PAIRS)}.")


def student_config(pair: str, batch_size: int = 256) -> ml_collections.ConfigDict:
  """The recipe for `pair`'s student with CE alone, at `batch_size` (lr 0.1 × batch/256)."""
  c = base_config()
  c.data.name = "imagenet2012"
  c.data.data_dir = ""
  c.data.val_fraction = 0.01  # ~12.8k training images held out for any selection; the official val split is the test
  c.data.crop_pad = 0
  c.data.flip = True
  # Read by the streaming ImageNet pipeline (kd_jax/config.py documents them).
  c.data.image_size = 224
  c.data.num_workers = NUM_WORKERS
  c.teacher.model, c.student.model = PAIRS[pair_name(pair)]
  c.loss = {"ce": {"weight": 1.0}}
  c.batch_size = batch_size
  c.eval_batch_size = 256
  c.epochs = 100
  c.optim.lr = 0.1 * batch_size / 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.milestones = (30, 60, 90)
  c.optim.gamma = 0.1
  c.compute_dtype = "bfloat16"
  return c
