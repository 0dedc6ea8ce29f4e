"""Single-image super-resolution: predict the high-resolution image from its low-resolution version.

Batches `{'lr': [B, h, w, C], 'hr': [B, h·s, w·s, C]}` in [0, 1] (`kd_jax.data.super_resolution`); the
models (`kd_jax.models.super_resolution`: EDSR, RCAN) map 'lr' to an SR image, the prediction. Training:
a random LR patch of `patch_size` pixels and its HR patch are cut from each training tile, then flipped
horizontally, vertically and transposed (a 90° rotation with a flip), each with probability 1/2 per
example, as EDSR's and BasicSR's `augment` do; the supervised loss is L1 (EDSR, RCAN and BasicSR train with
L1). Evaluation: `kd_jax.metrics.psnr` and `ssim` on whole images as SR papers report them (8-bit images,
the Y channel of BT.601 YCbCr, `scale` pixels shaved per side), PSNR the headline.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping

import jax
import jax.numpy as jnp

from kd_jax import metrics as kd_metrics
from kd_jax.errors import KDJaxError
from kd_jax.tasks.base import Batch, Task


@dataclasses.dataclass(frozen=True)
class SuperResolution(Task):
  """See the module docstring.

  Attributes:
    scale: the upscaling factor (set from the dataset by `configured`).
    patch_size: the LR training patch cut from each tile (0: the whole tile).
    y_channel: evaluate on the Y channel (True, as SR papers) or on all channels.
  """

  name = "super_resolution"
  headline = "psnr"
  higher_is_better = True
  fields = ("hr",)

  scale: int = 0
  patch_size: int = 0
  y_channel: bool = True

  def configured(self, data_config: Any, dataset: Any) -> "SuperResolution":
    scale = int(dataset.info["scale"])
    patch = int(data_config.get("patch_size", 0))
    tile = int(dataset.info.get("tile", 0))
    if patch < 0 or (tile and patch > tile):
      raise KDJaxError(f"config.data.patch_size={patch} must be in [0, {tile}] (the LR tile size, "
                       "config.data.tile_size; 0 = whole tiles).")
    if data_config.get("crop_pad", 0):
      raise KDJaxError("config.data.crop_pad pads and crops classification images; super-resolution crops "
                       "patches of config.data.patch_size instead: set config.data.crop_pad=0.")
    return dataclasses.replace(self, scale=scale, patch_size=patch,
                               y_channel=bool(data_config.get("y_channel", True)))

  def model_kwargs(self, dataset: Any) -> Dict[str, Any]:
    return {"scale": int(dataset.info["scale"])}

  def inputs(self, batch: Batch) -> Any:
    return batch["lr"]

  def augment(self, rng: jax.Array, batch: Batch, *, crop_pad: int = 0, flip: bool = False) -> Dict[str, Any]:
    del crop_pad  # refused by `configured`
    batch = dict(batch)
    crop_rng, flip_rng = jax.random.split(rng)
    if self.patch_size and self.patch_size < batch["lr"].shape[1]:
      batch["lr"], batch["hr"] = paired_crop(crop_rng, batch["lr"], batch["hr"], self.patch_size, self.scale)
    if flip:
      batch["lr"], batch["hr"] = paired_flips(flip_rng, batch["lr"], batch["hr"])
    return batch

  def loss(self, prediction: jax.Array, batch: Batch) -> jax.Array:
    return jnp.mean(jnp.abs(prediction.astype(jnp.float32) - batch["hr"]))

  def train_metrics(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    return {"psnr": jnp.mean(kd_metrics.psnr(prediction.astype(jnp.float32), batch["hr"], scale=self.scale,
                                             y_channel=self.y_channel))}

  def eval_sums(self, prediction: jax.Array, batch: Batch) -> Dict[str, jax.Array]:
    mask = batch["mask"]
    sr = prediction.astype(jnp.float32)
    psnr = kd_metrics.psnr(sr, batch["hr"], scale=self.scale, y_channel=self.y_channel)
    ssim = kd_metrics.ssim(sr, batch["hr"], scale=self.scale, y_channel=self.y_channel)
    real = mask > 0  # a padding row may equal its target exactly: PSNR +inf, and inf · 0 would be NaN
    return {"psnr": jnp.sum(jnp.where(real, psnr, 0.0)), "ssim": jnp.sum(jnp.where(real, ssim, 0.0)),
            "count": jnp.sum(mask)}

  def metrics(self, sums: Mapping[str, Any]) -> Dict[str, float]:
    return {"psnr": float(sums["psnr"] / sums["count"]), "ssim": float(sums["ssim"] / sums["count"])}


def paired_crop(rng: jax.Array, lr: jax.Array, hr: jax.Array, patch: int, scale: int):
  """Per example a uniformly placed `patch`×`patch` LR window and the HR window over the same area
  (`patch·scale` pixels at `scale ×` the LR offset), as BasicSR's `paired_random_crop`."""
  n, h, w, _ = lr.shape
  if hr.shape[1] != h * scale or hr.shape[2] != w * scale:
    raise KDJaxError(f"paired_crop: HR {hr.shape} is not {scale}x the LR {lr.shape}.")
  top = jax.random.randint(jax.random.fold_in(rng, 0), (n,), 0, h - patch + 1)
  left = jax.random.randint(jax.random.fold_in(rng, 1), (n,), 0, w - patch + 1)
  cut = lambda image, y, x, size: jax.lax.dynamic_slice(image, (y, x, 0), (size, size, image.shape[-1]))
  lr = jax.vmap(lambda im, y, x: cut(im, y, x, patch))(lr, top, left)
  hr = jax.vmap(lambda im, y, x: cut(im, y, x, patch * scale))(hr, top * scale, left * scale)
  return lr, hr


def paired_flips(rng: jax.Array, lr: jax.Array, hr: jax.Array):
  """Per example, independently with probability 1/2 each: a left-right flip, an up-down flip and a
  transpose of height and width (together the eight symmetries of a square), the same for LR and HR."""
  n = lr.shape[0]
  decide = jax.random.bernoulli(rng, 0.5, (3, n))
  where = lambda d, a, b: jnp.where(d[:, None, None, None], a, b)
  out = []
  for x in (lr, hr):
    x = where(decide[0], x[:, :, ::-1], x)
    x = where(decide[1], x[:, ::-1], x)
    if x.shape[1] == x.shape[2]:  # square patches (non-square tiles are never transposed)
      x = where(decide[2], jnp.swapaxes(x, 1, 2), x)
    out.append(x)
  return tuple(out)
