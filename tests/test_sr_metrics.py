"""Super-resolution PSNR / SSIM (kd_jax.metrics): hand-made values, BT.601 luma, shaving, and SSIM against a
direct NumPy float64 implementation of Wang et al. 2004 as BasicSR's `_ssim` computes it.

Expected values are computed here in NumPy (or by hand), never by calling the function under test.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import metrics
from kd_jax.errors import KDJaxError


# ---------------------------------------------------------------- NumPy float64 references


def _np_quantize(x):
  return np.round(np.clip(np.asarray(x, np.float64), 0, 1) * 255)  # 0..255 levels


def _np_y(levels):
  """BT.601 Y in 0..255 units from RGB levels in 0..255 (MATLAB rgb2ycbcr on [0, 1] inputs)."""
  rgb = levels / 255.0
  return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def _np_ssim_channel(a, b):
  """SSIM of two [H, W] float64 images in 0..255: every 11x11 'valid' window weighted explicitly."""
  k = np.arange(11) - 5.0
  g = np.exp(-k ** 2 / (2 * 1.5 ** 2))
  window = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  pa = np.lib.stride_tricks.sliding_window_view(a, (11, 11))  # [H-10, W-10, 11, 11]
  pb = np.lib.stride_tricks.sliding_window_view(b, (11, 11))
  mu_a = np.einsum("ijkl,kl->ij", pa, window)
  mu_b = np.einsum("ijkl,kl->ij", pb, window)
  # Second moments about the local means: the textbook weighted (co)variance of each window.
  var_a = np.einsum("ijkl,kl->ij", (pa - mu_a[..., None, None]) ** 2, window)
  var_b = np.einsum("ijkl,kl->ij", (pb - mu_b[..., None, None]) ** 2, window)
  cov = np.einsum("ijkl,kl->ij", (pa - mu_a[..., None, None]) * (pb - mu_b[..., None, None]), window)
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return ssim_map.mean()


def _np_ssim(sr, hr, scale, y_channel=True):
  """[N] SSIM of [N, H, W, C] images in [0, 1]: quantise, Y (RGB), shave, mean over channels."""
  a, b = _np_quantize(sr), _np_quantize(hr)
  if y_channel and a.shape[-1] == 3:
    a, b = _np_y(a)[..., None], _np_y(b)[..., None]
  if scale:
    a, b = a[:, scale:-scale, scale:-scale], b[:, scale:-scale, scale:-scale]
  return np.array([np.mean([_np_ssim_channel(a[n, ..., c], b[n, ..., c]) for c in range(a.shape[-1])])
                   for n in range(a.shape[0])])


def _levels(rng, shape, low=0, high=256):
  """Random images whose values are exact 8-bit levels k/255 (so quantisation changes nothing)."""
  return (rng.integers(low, high, shape) / 255.0).astype(np.float32)


# ---------------------------------------------------------------- preprocessing


def test_quantize_rounds_to_8_bit_levels_and_clips():
  x = jnp.array([-0.3, 0.0, 0.5 / 255, 1.4 / 255, 1.6 / 255, 0.5, 1.0, 1.7])
  expected = np.array([0, 0, 0, 1, 2, 128, 255, 255]) / 255.0  # 0.5/255 ties to even (0); 127.5 -> 128
  np.testing.assert_allclose(np.asarray(metrics.quantize(x)), expected, atol=1e-7)
  assert metrics.quantize(x).dtype == jnp.float32


def test_rgb_to_y_matches_bt601_on_known_colours():
  colours = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]], np.float32)
  y = np.asarray(metrics.rgb_to_y(colours[None, None]))  # [1, 1, 6, 1]
  expected = [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966, 16 + 0.5 * 219.0]
  assert y.shape == (1, 1, 6, 1)
  np.testing.assert_allclose(y[0, 0, :, 0], expected, atol=1e-4)
  grey = np.array([0.0, 0.25, 1.0], np.float32).reshape(1, 1, 3, 1)
  np.testing.assert_allclose(np.asarray(metrics.rgb_to_y(grey)).ravel(), [0.0, 63.75, 255.0], atol=1e-5)


def test_shave_removes_exactly_border_pixels_per_side():
  x = jnp.arange(2 * 9 * 8 * 3, dtype=jnp.float32).reshape(2, 9, 8, 3)
  np.testing.assert_array_equal(np.asarray(metrics.shave(x, 2)), np.asarray(x)[:, 2:7, 2:6, :])
  assert metrics.shave(x, 0).shape == x.shape
  with pytest.raises(KDJaxError, match="border"):
    metrics.shave(x, 4)  # 8 - 2·4 = 0 columns left
  with pytest.raises(KDJaxError, match="non-negative"):
    metrics.shave(x, -1)


# ---------------------------------------------------------------- PSNR


def test_psnr_is_10_log10_of_one_over_mse_without_y():
  rng = np.random.default_rng(0)
  hr = _levels(rng, (3, 10, 12, 3))
  sr = np.clip(hr + rng.integers(-6, 7, hr.shape) / 255.0, 0, 1).astype(np.float32)
  for scale in (0, 2):
    crop = (slice(None), slice(scale, 10 - scale), slice(scale, 12 - scale))
    mse = np.mean((sr[crop].astype(np.float64) - hr[crop]) ** 2, axis=(1, 2, 3))  # [0, 1] units
    got = metrics.psnr(jnp.asarray(sr), jnp.asarray(hr), scale=scale, y_channel=False)
    assert got.shape == (3,) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), 10 * np.log10(1.0 / mse), rtol=1e-5)


def test_psnr_on_y_matches_numpy_and_each_image_is_independent():
  rng = np.random.default_rng(1)
  hr = rng.uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
  sr = (hr + rng.normal(0, 0.05, hr.shape)).astype(np.float32)  # unquantised, some values outside [0, 1]
  a, b = _np_y(_np_quantize(sr))[:, 3:-3, 3:-3], _np_y(_np_quantize(hr))[:, 3:-3, 3:-3]
  expected = 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2, axis=(1, 2)))
  got = np.asarray(metrics.psnr(sr, hr, scale=3))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(metrics.psnr(sr[1:], hr[1:], scale=3)), got[1:], rtol=1e-6)


def test_psnr_of_identical_images_is_inf():
  hr = _levels(np.random.default_rng(2), (2, 8, 8, 3))
  got = np.asarray(metrics.psnr(hr, hr, scale=2))
  assert np.all(np.isposinf(got))
  # Values that quantise to the same 8-bit levels count as identical too.
  assert np.isposinf(np.asarray(metrics.psnr(hr + 0.1 / 255, hr, scale=2))).all()


def test_psnr_ignores_differences_in_the_shaved_border_only():
  scale = 2
  hr = np.full((1, 12, 12, 3), 100 / 255, np.float32)
  border = hr.copy()
  border[0, :scale, :, :] = 1.0  # top rows
  border[0, -scale:, :, 0] = 0.0  # bottom rows
  border[0, :, :scale, 1] = 0.3  # left columns
  border[0, :, -scale:, :] = 0.9  # right columns
  assert np.isposinf(np.asarray(metrics.psnr(border, hr, scale=scale))).all()
  assert np.isposinf(np.asarray(metrics.psnr(border, hr, scale=scale, y_channel=False))).all()
  inside = hr.copy()
  inside[0, scale, scale, :] = 110 / 255  # the first pixel just inside the border
  mse = (10 / 255) ** 2 / (8 * 8)  # one pixel of 64, same difference in every channel (and in Y)
  np.testing.assert_allclose(np.asarray(metrics.psnr(inside, hr, scale=scale, y_channel=False)),
                             [10 * np.log10(1 / mse)], rtol=1e-5)
  # In Y the step is 10/255 · (65.481 + 128.553 + 24.966) = 10 · 219/255 levels.
  mse_y = (10 * 219 / 255) ** 2 / 64
  np.testing.assert_allclose(np.asarray(metrics.psnr(inside, hr, scale=scale)),
                             [10 * np.log10(255 ** 2 / mse_y)], rtol=1e-5)
  assert np.isposinf(np.asarray(metrics.psnr(inside, hr, scale=scale + 1))).all()


# ---------------------------------------------------------------- SSIM


def test_ssim_of_an_image_with_itself_is_one_and_drops_with_noise():
  rng = np.random.default_rng(3)
  hr = rng.uniform(0.2, 0.8, (1, 24, 24, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(metrics.ssim(hr, hr, scale=2)), [1.0], atol=1e-6)
  noise = rng.normal(0, 1, hr.shape).astype(np.float32)
  values = [float(metrics.ssim(hr + sigma * noise, hr, scale=2)[0]) for sigma in (0.01, 0.03, 0.1)]
  assert 1.0 > values[0] > values[1] > values[2]


@pytest.mark.parametrize("channels,y_channel,scale", [(1, True, 0), (3, True, 2), (3, False, 1)])
def test_ssim_matches_a_direct_numpy_float64_implementation(channels, y_channel, scale):
  rng = np.random.default_rng(4)
  hr = rng.uniform(0, 1, (2, 32, 32, channels)).astype(np.float32)
  sr = (0.7 * hr + 0.3 * rng.uniform(0, 1, hr.shape)).astype(np.float32)
  got = np.asarray(metrics.ssim(sr, hr, scale=scale, y_channel=y_channel))
  assert got.shape == (2,) and got.dtype == np.float32
  np.testing.assert_allclose(got, _np_ssim(sr, hr, scale, y_channel), atol=1e-4)


def test_ssim_on_smooth_bright_images_keeps_float32_precision():
  # Large, nearly flat values are where E[x²] - E[x]² loses digits in float32.
  yy, xx = np.mgrid[0:40, 0:40] / 40.0
  hr = (0.9 + 0.05 * np.sin(6 * xx) * np.cos(4 * yy))[None, :, :, None].astype(np.float32)
  sr = (hr + 0.01 * np.cos(9 * xx)[None, :, :, None]).astype(np.float32)
  np.testing.assert_allclose(np.asarray(metrics.ssim(sr, hr, scale=4)), _np_ssim(sr, hr, 4), atol=2e-6)


# ---------------------------------------------------------------- jit and errors


def test_metrics_jit_with_static_scale():
  rng = np.random.default_rng(5)
  hr = rng.uniform(0, 1, (2, 20, 20, 3)).astype(np.float32)
  sr = (hr + rng.normal(0, 0.02, hr.shape)).astype(np.float32)

  @jax.jit
  def evaluate(sr, hr):
    return metrics.psnr(sr, hr, scale=2), metrics.ssim(sr, hr, scale=2)

  p, s = evaluate(sr, hr)
  np.testing.assert_allclose(np.asarray(p), np.asarray(metrics.psnr(sr, hr, scale=2)), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(s), np.asarray(metrics.ssim(sr, hr, scale=2)), atol=1e-6)
  jitted = jax.jit(functools.partial(metrics.psnr, scale=2, y_channel=False))
  assert jitted(sr, hr).shape == (2,)


@pytest.mark.parametrize("metric", [metrics.psnr, metrics.ssim])
def test_bad_inputs_raise_kdjaxerror(metric):
  x = jnp.zeros((2, 24, 24, 3))
  with pytest.raises(KDJaxError, match="same shape"):
    metric(x, jnp.zeros((2, 24, 20, 3)), scale=2)
  with pytest.raises(KDJaxError, match=r"\[N, H, W, C\]"):
    metric(x[0], x[0], scale=2)
  with pytest.raises(KDJaxError, match="too small"):
    metric(x, x, scale=12)
  with pytest.raises(KDJaxError, match="integer"):
    metric(x, x, scale=2.5)
  with pytest.raises(KDJaxError, match="float"):
    metric(x.astype(jnp.uint8), x.astype(jnp.uint8), scale=2)


def test_ssim_needs_room_for_the_window_after_shaving():
  x = jnp.zeros((1, 14, 30, 1))  # 14 - 2·2 = 10 rows < 11
  with pytest.raises(KDJaxError, match="too small"):
    metrics.ssim(x, x, scale=2)
  assert metrics.psnr(x, x, scale=2).shape == (1,)
  assert metrics.ssim(jnp.zeros((1, 15, 15, 1)), jnp.zeros((1, 15, 15, 1)), scale=2).shape == (1,)


def test_rgb_to_y_rejects_other_channel_counts():
  with pytest.raises(KDJaxError, match="RGB"):
    metrics.rgb_to_y(jnp.zeros((1, 4, 4, 2)))
