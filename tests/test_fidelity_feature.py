"""Reference fidelity of FT, FSP, R2KD's cutmixpick and AutoAugment, and the extended CSKD code's extras.

Every expected value is recomputed here in NumPy float64 from the formula the reference code implements
(or, for the nearest-neighbour geometry and equalize, by Pillow, an independent implementation of the same
operations), never from the function under test:
- FT: Jangho-Kim/Factor-Transfer-pytorch `train_student.py`, `L1Loss(FT(f_s), FT(f_t))` on flattened,
  L2-normalised factors.
- FSP: HobbitLong/RepDistiller `distiller_zoo/FSP.py`, consecutive pairs of (stem, stage 1, ..., stage n).
- cutmixpick: Seonghak35/R2KD `mdistiller/distillers/R2KD.py::cutmixpick_data`, entropy of the original
  teacher on the unmixed batch.
- AutoAugment: torchvision's `AutoAugment` tensor ops on a uint8 batch, one sub-policy per call.
- CSKD extras: the extended mdistiller `CSKD` distiller (`cc_loss`, `bc_loss`, the 50th-percentile masks).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageOps

from kd_jax import distillers, losses, models
from kd_jax.data.augment import (AUTOAUGMENT_POLICIES, auto_augment, autoaugment_op, autoaugment_value)
from kd_jax.distillers.feature import FTConvStack, Paraphraser
from kd_jax.errors import KDJaxError
from kd_jax.losses.similarity import cskd_confidence_factors, cskd_gram, fraction_at_or_below_median
from kd_jax.models.outputs import ModelOutput

EPS = 1e-8


def _softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _abs_cos_rows(a, b):
  return np.abs((a * b).sum(1)) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + EPS)


def _np_unit_rows(x):
  flat = np.asarray(x, np.float64).reshape(len(x), -1)
  return flat / np.linalg.norm(flat, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------ FT


def test_factor_transfer_default_is_the_official_flattened_l1():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(3, 2, 2, 5)), rng.normal(size=(3, 2, 2, 5))
  expected = np.mean(np.abs(_np_unit_rows(s) - _np_unit_rows(t)))
  got = losses.factor_transfer(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # RepDistiller's channel-mean-of-squares factor is a different number on the same maps.
  rep = losses.factor_transfer(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), form="reference")
  rep_expected = np.mean(np.abs(_np_unit_rows((s ** 2).mean(-1)) - _np_unit_rows((t ** 2).mean(-1))))
  np.testing.assert_allclose(rep, rep_expected, rtol=1e-5)
  assert abs(expected - rep_expected) > 1e-2


def test_ft_distiller_transfer_defaults_to_the_official_loss_on_translator_and_encoder():
  rng = np.random.default_rng(1)
  stage = lambda c: jnp.asarray(np.maximum(rng.normal(size=(2, 2, 2, c)), 0), jnp.float32)
  out = lambda c: ModelOutput(prediction=jnp.zeros((2, 3)), stages=(stage(c),), preact_stages=(stage(c),),
                              embedding=jnp.zeros((2, c)))
  student, teacher = out(4), out(6)
  ft = distillers.FT()
  variables = jax.jit(ft.init)(jax.random.PRNGKey(0), student, teacher, {})
  params = variables["params"]

  @jax.jit
  def run(params):
    value = ft({"params": params}, student, teacher, {})[0]
    f_s = FTConvStack((4, 3, 3)).apply({"params": params["translator"]}, student.stages[-1])
    f_t = Paraphraser(6, 3).apply({"params": params["paraphraser"]}, teacher.stages[-1],
                                  method=Paraphraser.encode)
    return value, f_s, f_t

  value, f_s, f_t = run(params)
  expected = np.mean(np.abs(_np_unit_rows(np.asarray(f_s)) - _np_unit_rows(np.asarray(f_t))))
  np.testing.assert_allclose(value, expected, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ FSP


def _np_pool_to(x, size):
  b, h, w, c = x.shape
  k = h // size
  return x.reshape(b, size, k, size, k, c).mean((2, 4))


def _np_flow(a, b):
  size = min(a.shape[1], b.shape[1])
  a, b = _np_pool_to(a, size), _np_pool_to(b, size)
  return np.einsum("bhwi,bhwj->bij", a, b) / (size * size)


def _maps(seed, widths=(4, 4, 6, 8), sizes=(8, 8, 4, 2), batch=2):
  rng = np.random.default_rng(seed)
  return [np.maximum(rng.normal(size=(batch, s, s, c)), 0) for c, s in zip(widths, sizes)]


def _with_stem(maps, stem=True):
  f = [jnp.asarray(m, jnp.float32) for m in maps]
  first = 1 if stem else 0
  return ModelOutput(prediction=jnp.zeros((2, 3)), stages=tuple(f[first:]), preact_stages=tuple(f[first:]),
                     embedding=jnp.zeros((2, 3)), stem=f[0] if stem else None)


def test_fsp_pairs_the_stem_with_stage_one_as_repdistiller():
  s_maps, t_maps = _maps(0), _maps(1)
  value, _, _ = distillers.FSP()({}, _with_stem(s_maps), _with_stem(t_maps), {})
  # RepDistiller: consecutive pairs of feat[:-1] = (stem, stage 1, stage 2, stage 3), per-pair mean.
  expected = sum(np.mean((_np_flow(s_maps[i], s_maps[i + 1]) - _np_flow(t_maps[i], t_maps[i + 1])) ** 2)
                 for i in range(3))
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  without_stem = sum(np.mean((_np_flow(s_maps[i], s_maps[i + 1]) - _np_flow(t_maps[i], t_maps[i + 1])) ** 2)
                     for i in (1, 2))
  assert abs(expected - without_stem) > 1e-3  # the stem pair is really in the sum
  explicit, _, _ = distillers.make_distiller("fsp", stage_pairs=(("stem", 0),))(
      {}, _with_stem(s_maps), _with_stem(t_maps), {})
  np.testing.assert_allclose(explicit, expected - without_stem, rtol=1e-4)


def test_fsp_stem_on_one_side_only_is_refused_and_stage_pairs_still_work():
  s_maps, t_maps = _maps(0)[1:], _maps(1)
  student, teacher = _with_stem(s_maps, stem=False), _with_stem(t_maps)
  with pytest.raises(KDJaxError, match="stem"):
    distillers.FSP()({}, student, teacher, {})
  value, _, _ = distillers.FSP(stage_pairs=((0, 1),))({}, student, teacher, {})
  np.testing.assert_allclose(value, np.mean((_np_flow(s_maps[0], s_maps[1]) - _np_flow(t_maps[1], t_maps[2])) ** 2),
                             rtol=1e-5)
  with pytest.raises(KDJaxError, match="stem"):
    distillers.FSP(stage_pairs=(("stem", 0),))({}, student, teacher, {})
  with pytest.raises(KDJaxError, match="'stem'"):
    distillers.make_distiller("fsp", stage_pairs=(("stm", 0),))


def test_cifar_resnet_fills_the_stem_and_outputs_without_one_keep_their_leaves():
  model = models.create_model("resnet8", 10)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 1)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  out = jax.jit(model.apply)(variables, x)
  assert out.stem.shape == (2, 8, 8, 16)
  # The stem is relu(bn1(conv1(x))) in eval mode: recompute it from the parameters in float64.
  p, stats = variables["params"], variables["batch_stats"]
  kernel = np.asarray(p["conv1"]["kernel"], np.float64)
  padded = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  conv = sum(np.einsum("bhwc,co->bhwo", padded[:, i:i + 8, j:j + 8], kernel[i, j]) for i in range(3) for j in range(3))
  bn = ((conv - np.asarray(stats["bn1"]["mean"])) / np.sqrt(np.asarray(stats["bn1"]["var"]) + 1e-5)
        * np.asarray(p["bn1"]["scale"]) + np.asarray(p["bn1"]["bias"]))
  np.testing.assert_allclose(out.stem, np.maximum(bn, 0), atol=1e-4)
  plain = ModelOutput(prediction=jnp.ones(2), stages=(jnp.ones(3),), preact_stages=(jnp.ones(3),),
                      embedding=jnp.ones(1))
  assert plain.stem is None and len(jax.tree.leaves(plain)) == 4
  assert len(jax.tree.leaves(out)) == len(jax.tree.leaves(out.replace(stem=None))) + 1


# ------------------------------------------------------------------------------------------------ R2KD


def _out(logits):
  return ModelOutput(prediction=logits, stages=(), preact_stages=(), embedding=logits)


def _np_entropy(z):
  p = _softmax(z)
  return -(p * np.log(p)).sum(-1)


def test_cutmixpick_ranks_by_the_original_teachers_entropy_not_the_blend():
  rng = np.random.default_rng(3)
  z_t = rng.normal(size=(8, 5)) * np.arange(1, 9)[:, None] * 0.5  # entropy falls with the row index
  z_p = np.zeros((8, 5))
  z_p[:2] = 30.0 * np.eye(5)[:2]  # a pruned copy that is confident on the first two rows only
  r2kd = distillers.make_distiller("r2kd", augment="cutmixpick", pick=3)
  teacher = (_out(jnp.asarray(z_t, jnp.float32)), _out(jnp.asarray(z_p, jnp.float32)))
  picked = np.asarray(r2kd.pick_order(teacher))
  np.testing.assert_array_equal(picked, np.argsort(-_np_entropy(z_t))[:3])
  blend_order = np.argsort(-_np_entropy(0.7 * z_t + 0.3 * z_p))[:3]
  assert set(picked) != set(blend_order)  # the case separates the two rankings
  images = jnp.asarray(rng.normal(size=(8, 4, 4, 1)), jnp.float32)
  rng_key = jax.random.PRNGKey(2)
  aug = r2kd.augmented_copy(rng_key, images, teacher)
  mixed = distillers.make_distiller("r2kd", augment="cutmix").augmented_copy(rng_key, images, teacher)
  np.testing.assert_allclose(aug, np.asarray(mixed)[picked])


def test_r2kd_autoaug_needs_the_normalisation():
  with pytest.raises(KDJaxError, match="image_mean"):
    distillers.make_distiller("r2kd", augment="autoaug")
  r2kd = distillers.make_distiller("r2kd", augment="autoaug", image_mean=[0.3], image_std=[0.4])
  assert r2kd.image_mean == (0.3,) and r2kd.image_std == (0.4,)


# ------------------------------------------------------------------------------------------------ AutoAugment


def _img(seed, h=6, w=6, c=3):
  return np.random.default_rng(seed).integers(0, 256, size=(2, h, w, c)) / 255.0


def _op(name, x, value):
  return np.asarray(autoaugment_op(name, jnp.asarray(x, jnp.float32), value), np.float64)


def test_autoaugment_magnitudes_are_torchvisions():
  assert autoaugment_value("translate_x", 9, 32, 32) == 14.0  # int(150/331·32)
  assert autoaugment_value("translate_y", 3, 8, 8) == 1.0     # int(150/331·8/3)
  assert [autoaugment_value("posterize", level, 8, 8) for level in (0, 2, 4, 7, 9)] == [8, 7, 6, 5, 4]
  assert autoaugment_value("solarize", 5, 8, 8) == pytest.approx(1 - 5 / 9)
  assert autoaugment_value("rotate", 2, 8, 8) == pytest.approx(30 * 2 / 9)
  assert autoaugment_value("shear_y", 8, 8, 8) == pytest.approx(0.3 * 8 / 9)
  assert autoaugment_value("contrast", 6, 8, 8) == pytest.approx(0.6)
  assert autoaugment_value("equalize", None, 8, 8) == 0.0
  assert len(AUTOAUGMENT_POLICIES["cifar10"]) == 25 and len(AUTOAUGMENT_POLICIES["imagenet"]) == 25


def test_pixel_value_ops_match_their_closed_forms():
  x = _img(0)
  np.testing.assert_allclose(_op("invert", x, 0.0), 1 - x, atol=1e-6)
  t = autoaugment_value("solarize", 5, 6, 6)
  np.testing.assert_allclose(_op("solarize", x, t), np.where(x >= t, 1 - x, x), atol=1e-6)
  levels = np.round(x * 255)  # exact levels, as a uint8 image has
  np.testing.assert_allclose(_op("posterize", x, 4.0), (levels // 16) * 16 / 255, atol=1e-6)
  lo, hi = x.min((1, 2), keepdims=True), x.max((1, 2), keepdims=True)
  np.testing.assert_allclose(_op("autocontrast", x, 0.0), (x - lo) / (hi - lo), atol=1e-5)
  np.testing.assert_allclose(_op("brightness", x, 0.6), np.clip(1.6 * x, 0, 1), atol=1e-6)
  gray = (x * np.array([0.2989, 0.587, 0.114])).sum(-1, keepdims=True)
  np.testing.assert_allclose(_op("color", x, -0.3), np.clip(0.7 * x + 0.3 * gray, 0, 1), atol=1e-6)
  mean = gray.mean((1, 2, 3), keepdims=True)
  np.testing.assert_allclose(_op("contrast", x, 0.5), np.clip(1.5 * x - 0.5 * mean, 0, 1), atol=1e-6)
  one_channel = x[..., :1]
  np.testing.assert_allclose(_op("color", one_channel, 0.9), one_channel, atol=1e-7)  # grey images unchanged
  # Sharpness: blend with the interior smoothed by [[1,1,1],[1,5,1],[1,1,1]]/13, the border unchanged.
  smooth = x.copy()
  kernel = np.ones((3, 3))
  kernel[1, 1] = 5
  for i in range(1, 5):
    for j in range(1, 5):
      smooth[:, i, j] = np.einsum("bhwc,hw->bc", x[:, i - 1:i + 2, j - 1:j + 2], kernel) / 13
  np.testing.assert_allclose(_op("sharpness", x, 0.9), np.clip(1.9 * x - 0.9 * smooth, 0, 1), atol=1e-5)


def test_equalize_on_a_known_histogram_and_against_pillow():
  # 1024 pixels: 512 at level 10, 256 at 100, 256 at 200. step = ⌊(1024 − 256)/255⌋ = 3, and level v maps to
  # ⌊(cdf(v − 1) + 1)/3⌋: 10 → 0, 100 → ⌊513/3⌋ = 171, 200 → ⌊769/3⌋ = 256 → 255.
  levels = np.array([10] * 512 + [100] * 256 + [200] * 256).reshape(1, 32, 32, 1)
  got = np.round(_op("equalize", levels / 255.0, 0.0) * 255)
  np.testing.assert_array_equal(np.unique(got[levels == 10]), [0])
  np.testing.assert_array_equal(np.unique(got[levels == 100]), [171])
  np.testing.assert_array_equal(np.unique(got[levels == 200]), [255])
  rng = np.random.default_rng(5)
  image = np.clip(rng.normal(90, 40, size=(32, 32)), 0, 255).astype(np.uint8)
  pil = np.asarray(ImageOps.equalize(Image.fromarray(image)), np.float64)
  got = np.round(_op("equalize", image[None, :, :, None] / 255.0, 0.0)[0, :, :, 0] * 255)
  np.testing.assert_array_equal(got, pil)


def test_geometric_ops_nearest_neighbour():
  x = _img(1, 5, 5, 1)
  np.testing.assert_allclose(_op("rotate", x, 90.0), np.rot90(x, 1, axes=(1, 2)), atol=1e-7)  # counter-clockwise
  shifted = np.zeros_like(x)
  shifted[:, :, 2:] = x[:, :, :-2]
  np.testing.assert_allclose(_op("translate_x", x, 2.0), shifted, atol=1e-7)
  shifted = np.zeros_like(x)
  shifted[:, :-1] = x[:, 1:]
  np.testing.assert_allclose(_op("translate_y", x, -1.0), shifted, atol=1e-7)
  # Shear (about the top-left corner) and rotation by other angles: Pillow's nearest affine transform.
  plane = x[0, :, :, 0].astype(np.float32)
  for m in (0.3 * 8 / 9, -0.1):
    sheared = np.asarray(Image.fromarray(plane, mode="F").transform((5, 5), Image.AFFINE, (1, m, 0, 0, 1, 0),
                                                                     resample=Image.NEAREST))
    np.testing.assert_allclose(_op("shear_x", x[:1], m)[0, :, :, 0], sheared, atol=1e-7)
    sheared = np.asarray(Image.fromarray(plane, mode="F").transform((5, 5), Image.AFFINE, (1, 0, 0, m, 1, 0),
                                                                     resample=Image.NEAREST))
    np.testing.assert_allclose(_op("shear_y", x[:1], m)[0, :, :, 0], sheared, atol=1e-7)
  rotated = np.asarray(Image.fromarray(plane, mode="F").rotate(-20.0, resample=Image.NEAREST))
  np.testing.assert_allclose(_op("rotate", x[:1], -20.0)[0, :, :, 0], rotated, atol=1e-7)


def _candidates(images, sub_policy):
  """Every output one sub-policy can give (each step run or skipped, each sign), as a list of arrays."""
  h, w = images.shape[1:3]
  outs = []
  for run in ((0, 0), (0, 1), (1, 0), (1, 1)):
    for signs in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
      x = images
      for (op, _, level), do, sign in zip(sub_policy, run, signs):
        if do:
          x = _op(op, x, sign * autoaugment_value(op, level, h, w))
      outs.append(x)
  return outs


def test_auto_augment_draws_one_sub_policy_for_the_whole_batch_and_round_trips_the_normalisation():
  pixels = _img(2, 6, 6, 3)
  mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.25, 0.2, 0.3])
  normalised = jnp.asarray((pixels - mean) / std, jnp.float32)
  fn = jax.jit(lambda key, x: auto_augment(key, x, mean=tuple(mean), std=tuple(std)))
  for seed in range(3):
    got = np.asarray(fn(jax.random.PRNGKey(seed), normalised), np.float64) * std + mean
    # One (sub-policy, coins, signs) draw must explain both images at once.
    explained = any(np.allclose(got, c, atol=2e-5)
                    for sub in AUTOAUGMENT_POLICIES["cifar10"] for c in _candidates(pixels, sub))
    assert explained, f"seed {seed}: no single sub-policy gives this batch"
  with pytest.raises(KDJaxError, match="both mean and std"):
    auto_augment(jax.random.PRNGKey(0), normalised, mean=(0.5,))


# ------------------------------------------------------------------------------------------------ CSKD extras


def _np_gram(zs, zt, t, kind):
  t = np.asarray(t, np.float64)
  t = t[:, None] if t.ndim == 1 else t
  ps, pt = _softmax(zs / t), _softmax(zt / t)
  g = (lambda p: p.T @ p) if kind == "class" else (lambda p: p @ p.T)
  return 1 - _abs_cos_rows(g(pt), g(ps)).mean()


def test_median_confidence_factor_is_the_fraction_at_or_below_the_median():
  rng = np.random.default_rng(6)
  z_t = rng.normal(size=(6, 4)) * 2
  p = _softmax(z_t)
  conf, mass = p.max(1), p.sum(0)
  expected = (np.mean(conf <= np.percentile(conf, 50)), np.mean(mass <= np.percentile(mass, 50)))
  got = cskd_confidence_factors(jnp.asarray(z_t, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert float(got[0]) == 0.5  # six distinct confidences
  # Ties at the median raise the fraction; an odd count gives (n + 1)/(2n).
  assert float(fraction_at_or_below_median(jnp.array([1.0, 2.0, 2.0, 3.0]))) == 0.75
  assert float(fraction_at_or_below_median(jnp.array([3.0, 1.0, 2.0]))) == pytest.approx(2 / 3)


def test_gram_terms_match_numpy_at_a_fixed_and_per_sample_temperature():
  rng = np.random.default_rng(7)
  zs, zt = rng.normal(size=(5, 4)) * 2, rng.normal(size=(5, 4)) * 2
  temps = np.array([2.0, 3.0, 4.5, 6.0, 2.5])
  for kind in ("class", "batch"):
    for t in (4.0, temps):
      got = cskd_gram(jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32),
                      jnp.asarray(t, jnp.float32), kind=kind)
      np.testing.assert_allclose(got, _np_gram(zs, zt, t, kind), rtol=1e-4, atol=1e-7)
  assert float(cskd_gram(jnp.asarray(zt), jnp.asarray(zt))) == pytest.approx(0.0, abs=1e-6)


def _np_cskd(zs, zt, t, alpha=2.0):
  t = np.asarray(t, np.float64)
  scale = t.mean() ** 2
  t = t[:, None] if t.ndim == 1 else t
  ps, pt = _softmax(zs / t), _softmax(zt / t)
  cos = np.abs((ps * pt).sum(0)) / (np.linalg.norm(ps, axis=0) * np.linalg.norm(pt, axis=0) + EPS)
  return alpha * scale * (1 - cos.mean())


def _np_cswt(zs, zt, lo=2.0, hi=6.0):
  s = _abs_cos_rows(_softmax(zs), _softmax(zt))
  return lo + (hi - lo) * (s.max() - s) / (s.max() - s.min())


def test_cskd_extended_options_compose_as_the_extended_code():
  rng = np.random.default_rng(8)
  b, c = 6, 4
  w = rng.normal(size=(3 * 3 * 1, c))
  images = rng.normal(size=(b, 3, 3, 1))
  student_fn = lambda x: x.reshape(x.shape[0], -1) @ jnp.asarray(w, jnp.float32)
  teacher_fn = lambda x: 2.0 * x.reshape(x.shape[0], -1) @ jnp.asarray(w[::-1], jnp.float32) + 0.3
  forward = lambda x: (_out(student_fn(x)), _out(teacher_fn(x)))
  x = jnp.asarray(images, jnp.float32)
  labels = jnp.array([0, 1, 2, 3, 0, 1])
  cskd = distillers.make_distiller("cskd", strong_view="autoaug", confidence_factor=True, gram=True,
                                   image_mean=(0.3,), image_std=(0.4,))
  key = jax.random.PRNGKey(4)
  value, metrics, _ = cskd({}, _out(student_fn(x)), _out(teacher_fn(x)), {"image": x, "label": labels},
                           rng=key, train=True, forward=forward)
  zs, zt = np.asarray(student_fn(x), np.float64), np.asarray(teacher_fn(x), np.float64)
  temps = _np_cswt(zs, zt)
  p_t = _softmax(zt)
  sample_f = np.mean(p_t.max(1) <= np.percentile(p_t.max(1), 50))
  class_f = np.mean(p_t.sum(0) <= np.percentile(p_t.sum(0), 50))
  weak = sample_f * (_np_cskd(zs, zt, 4.0) + _np_cskd(zs, zt, temps))
  gram = (class_f * (_np_gram(zs, zt, 4.0, "class") + _np_gram(zs, zt, temps, "class"))
          + sample_f * (_np_gram(zs, zt, 4.0, "batch") + _np_gram(zs, zt, temps, "batch")))
  strong = auto_augment(key, x, mean=(0.3,), std=(0.4,))
  ss, st = np.asarray(student_fn(strong), np.float64), np.asarray(teacher_fn(strong), np.float64)
  strong_cs = _np_cskd(ss, st, 4.0) + _np_cskd(ss, st, temps)  # the weak view's temperatures, no factor
  strong_ce = -np.mean(np.log(_softmax(ss)[np.arange(b), np.asarray(labels)]))
  np.testing.assert_allclose(metrics["strong_ce"], strong_ce, rtol=1e-5)
  np.testing.assert_allclose(value, weak + gram + strong_cs + strong_ce, rtol=1e-4)
  plain, _, _ = distillers.CSKD()({}, _out(student_fn(x)), _out(teacher_fn(x)), {"image": x})
  np.testing.assert_allclose(plain, _np_cskd(zs, zt, 4.0) + _np_cskd(zs, zt, temps), rtol=1e-4)
  with pytest.raises(KDJaxError, match="image_mean"):
    distillers.make_distiller("cskd", strong_view="autoaug")
