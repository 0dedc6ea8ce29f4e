"""MATLAB-style bicubic imresize (kd_jax.data.resize) against an independent per-pixel reference.

The reference below is written differently from the module: 0-based continuous coordinates
(`c = (i + 0.5)/s - 0.5`), an explicit loop over output pixels and over the input pixels inside the
stretched kernel's support, and mirrored indices by cases. No MATLAB output for a tiny array was found in
text form (the public ports test against .mat / .png files), so the golden values are derived by hand
from the kernel formula instead.
"""

import math

import numpy as np
import pytest

from kd_jax.data.resize import bicubic_downscale, imresize, modcrop
from kd_jax.errors import KDJaxError


# ---------------------------------------------------------------- independent reference


def _keys(t, a=-0.5):
  t = abs(t)
  if t <= 1:
    return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
  if t < 2:
    return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
  return 0.0


def _mirror(j, n):
  """0-based index j folded into 0..n-1 with the edge repeated (-1 -> 0, n -> n-1)."""
  while j < 0 or j >= n:
    j = -j - 1 if j < 0 else 2 * n - 1 - j
  return j


def _reference_1d(signal, out_len, scale, antialias=True):
  n = len(signal)
  stretch = scale if (scale < 1 and antialias) else 1.0
  half_width = 2.0 / stretch
  out = np.zeros(out_len)
  for i in range(out_len):
    c = (i + 0.5) / scale - 0.5  # output pixel centre in 0-based input coordinates
    total, acc = 0.0, 0.0
    for j in range(math.floor(c - half_width) - 1, math.ceil(c + half_width) + 2):
      w = _keys((c - j) * stretch)
      total += w
      acc += w * signal[_mirror(j, n)]
    out[i] = acc / total
  return out


def _reference_2d(image, out_h, out_w, scales=None, antialias=True, to_uint8=False):
  """Rows (height) first, then columns; optionally round and clip to 8 bits after each pass (MATLAB uint8).

  `scales` (per axis) defaults to out/in, MATLAB's scale when an output size is given.
  """
  x = np.asarray(image, np.float64)
  squeeze = x.ndim == 2
  x = x[..., None] if squeeze else x
  h, w, c = x.shape
  scale_h, scale_w = scales or (out_h / h, out_w / w)
  levels = (lambda v: np.floor(np.clip(v, 0, 255) + 0.5)) if to_uint8 else (lambda v: v)
  tmp = np.zeros((out_h, w, c))
  for col in range(w):
    for ch in range(c):
      tmp[:, col, ch] = _reference_1d(x[:, col, ch], out_h, scale_h, antialias)
  tmp = levels(tmp)
  out = np.zeros((out_h, out_w, c))
  for row in range(out_h):
    for ch in range(c):
      out[row, :, ch] = _reference_1d(tmp[row, :, ch], out_w, scale_w, antialias)
  out = levels(out)
  return out[..., 0] if squeeze else out


# ---------------------------------------------------------------- imresize


@pytest.mark.parametrize("shape,kwargs", [
    ((7, 9), dict(scale=0.5)),
    ((12, 12, 3), dict(scale=1 / 3)),
    ((5, 6, 2), dict(scale=2.0)),
    ((10, 8), dict(output_shape=(4, 11))),
    ((3, 2, 1), dict(scale=0.25)),
])
def test_constant_images_stay_constant(shape, kwargs):
  for value, dtype in ((7.25, np.float32), (200, np.uint8)):
    out = imresize(np.full(shape, value, dtype), **kwargs)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, value, rtol=0, atol=1e-12)


def test_output_size_is_ceil_of_in_times_scale():
  assert imresize(np.zeros((11, 9, 3)), 0.5).shape == (6, 5, 3)
  assert imresize(np.zeros((10, 7)), 1 / 3).shape == (4, 3)
  assert imresize(np.zeros((5, 4)), 2.5).shape == (13, 10)
  assert imresize(np.zeros((10, 8)), output_shape=(3, 17)).shape == (3, 17)


@pytest.mark.parametrize("shape,kwargs", [
    ((11, 9), dict(scale=0.5)),
    ((10, 8, 3), dict(scale=0.5)),
    ((12, 10), dict(scale=1 / 3)),
    ((9, 7), dict(scale=0.5, antialias=False)),
    ((5, 6, 2), dict(scale=2.0)),
    ((10, 8), dict(output_shape=(7, 13))),  # shrink one axis, enlarge the other
])
def test_imresize_matches_per_pixel_reference(shape, kwargs):
  image = np.random.default_rng(0).uniform(0, 255, shape)
  out = imresize(image, **kwargs)
  out_h, out_w = out.shape[:2]
  if "scale" in kwargs:
    assert (out_h, out_w) == (math.ceil(shape[0] * kwargs["scale"]), math.ceil(shape[1] * kwargs["scale"]))
  scales = (kwargs["scale"],) * 2 if "scale" in kwargs else None
  expected = _reference_2d(image, out_h, out_w, scales, antialias=kwargs.get("antialias", True))
  np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


def test_antialiased_halving_has_the_known_matlab_taps():
  # Interior weights of the x1/2 antialiased kernel, by hand from Keys' a = -0.5 cubic: 0.5·k(0.5·d) at
  # d = ±0.5, ±1.5, ±2.5, ±3.5 is 0.43359375, 0.11328125, -0.03515625, -0.01171875 (they sum to 1).
  impulse = np.zeros((16, 1))
  impulse[8, 0] = 1.0
  out = imresize(impulse, 0.5)
  assert out.shape == (8, 1)
  expected = [0, 0, -0.01171875, 0.11328125, 0.43359375, -0.03515625, 0, 0]
  np.testing.assert_allclose(out[:, 0], expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("scale", [2.0, 0.5])
def test_a_linear_ramp_stays_a_linear_ramp_in_the_interior(scale):
  # Keys' cubic (a = -0.5) reproduces linear functions; at the borders the mirroring bends the ramp.
  n = 24
  ramp = np.tile(3.0 * np.arange(n) + 1.0, (5, 1))  # varies along the width only
  out = imresize(ramp, scale)
  centres = (np.arange(out.shape[1]) + 0.5) / scale - 0.5  # output pixel centres in input coordinates
  reach = 2.0 / min(scale, 1.0)  # half-width of the (stretched) kernel in input pixels
  interior = (centres - reach >= 0) & (centres + reach <= n - 1)
  assert interior.sum() >= out.shape[1] // 2
  np.testing.assert_allclose(out[:, interior], np.broadcast_to(3.0 * centres[interior] + 1.0,
                                                               out[:, interior].shape), atol=1e-10)
  assert not np.allclose(out[:, 0], 3.0 * centres[0] + 1.0)  # the mirrored border is not linear


# ---------------------------------------------------------------- bicubic_downscale and modcrop


def test_bicubic_downscale_shape_dtype_and_matlab_uint8_passes():
  rng = np.random.default_rng(1)
  hr = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
  lr = bicubic_downscale(hr, 4)
  assert lr.shape == (3, 4, 3) and lr.dtype == np.uint8
  np.testing.assert_array_equal(lr, _reference_2d(hr, 3, 4, to_uint8=True))
  # Against one rounding at the end (no 8-bit intermediate), at most one level apart.
  once = np.clip(np.floor(imresize(hr, 0.25) + 0.5), 0, 255)
  assert np.abs(lr.astype(np.int64) - once).max() <= 1
  np.testing.assert_array_equal(bicubic_downscale(np.full((6, 6), 77, np.uint8), 3), np.full((2, 2), 77))


def test_bicubic_downscale_of_a_smooth_image_is_within_one_level_of_rounding_once():
  # The 8-bit intermediate moves each value by at most half a level (nothing saturates here); the second
  # pass's weights have sum |w| ~ 1.09, so the two ways of rounding differ by at most one level (here at
  # roughly 1 pixel in 8).
  yy, xx = np.mgrid[0:24, 0:24]
  hr = np.round(127 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
  lr = bicubic_downscale(hr, 2)
  np.testing.assert_array_equal(lr, _reference_2d(hr, 12, 12, to_uint8=True))
  once = np.clip(np.floor(imresize(hr, 0.5) + 0.5), 0, 255)
  assert np.abs(lr.astype(np.int64) - once).max() <= 1


def test_modcrop_keeps_the_top_left_multiple_of_scale():
  image = np.arange(13 * 10 * 3).reshape(13, 10, 3)
  cropped = modcrop(image, 4)
  assert cropped.shape == (12, 8, 3)
  np.testing.assert_array_equal(cropped, image[:12, :8])
  assert modcrop(np.zeros((9, 6)), 3).shape == (9, 6)
  assert modcrop(np.zeros((9, 7)), 2).shape == (8, 6)


# ---------------------------------------------------------------- errors


def test_bicubic_downscale_rejects_sizes_that_do_not_divide():
  with pytest.raises(KDJaxError, match="modcrop"):
    bicubic_downscale(np.zeros((13, 12, 3), np.uint8), 4)
  with pytest.raises(KDJaxError, match="uint8"):
    bicubic_downscale(np.zeros((12, 12, 3), np.float32), 4)
  with pytest.raises(KDJaxError, match="positive integer"):
    bicubic_downscale(np.zeros((12, 12, 3), np.uint8), 0)
  with pytest.raises(KDJaxError, match="positive integer"):
    bicubic_downscale(np.zeros((12, 12, 3), np.uint8), 2.0)


def test_imresize_and_modcrop_reject_bad_arguments():
  image = np.zeros((8, 8))
  with pytest.raises(KDJaxError, match="exactly one"):
    imresize(image)
  with pytest.raises(KDJaxError, match="exactly one"):
    imresize(image, 0.5, output_shape=(4, 4))
  for scale in (0, -0.5, float("nan"), float("inf"), "2"):
    with pytest.raises(KDJaxError, match="scale"):
      imresize(image, scale)
  with pytest.raises(KDJaxError, match="output_shape"):
    imresize(image, output_shape=(4, 0))
  with pytest.raises(KDJaxError, match="output_shape"):
    imresize(image, output_shape=(4,))
  with pytest.raises(KDJaxError, match=r"\[H, W\]"):
    imresize(np.zeros((2, 8, 8, 3)), 0.5)
  with pytest.raises(KDJaxError, match="numeric"):
    imresize(np.zeros((8, 8), bool), 0.5)
  with pytest.raises(KDJaxError, match="smaller than scale"):
    modcrop(np.zeros((3, 8)), 4)
  with pytest.raises(KDJaxError, match="positive integer"):
    modcrop(image, -2)
