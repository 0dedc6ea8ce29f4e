"""Tests for kd_jax.data: datasets and splits, deterministic batching, augmentation, the tfds path without TF."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from kd_jax import data as kd_data
from kd_jax.errors import KDJaxError


# ---------------------------------------------------------------------------------------------------
# digits


def _example_counter(*splits):
  """Multiset of (raw image bytes, label) over splits: equal to the source's iff disjoint and covering."""
  counter = collections.Counter()
  for split in splits:
    for image, label in zip(split.images, split.labels):
      counter[(np.asarray(image, np.float32).tobytes(), int(label))] += 1
  return counter


def test_digits_shapes_and_classes():
  ds = kd_data.load_dataset("digits")
  assert ds.name == "digits" and ds.num_classes == 10 and ds.image_shape == (8, 8, 1)
  assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
  assert len(ds.test) == round(0.3 * 1797)
  assert len(ds.val) == round(0.1 * (1797 - len(ds.test)))
  batch = ds.train.get(np.array([0, 5, 2]))
  assert batch["image"].shape == (3, 8, 8, 1) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
  np.testing.assert_array_equal(batch["index"], [0, 5, 2])
  np.testing.assert_array_equal(batch["label"], ds.train.labels[[0, 5, 2]])
  assert ds.augment_pad == 0 and not ds.augment_flip  # mirrored digits are different digits
  for split in (ds.train, ds.val, ds.test):  # stratified: every class in every split
    assert set(np.unique(split.labels)) == set(range(10))


def test_digits_splits_disjoint_and_covering():
  ds = kd_data.load_dataset("digits", seed=3)
  bunch = load_digits()
  source = collections.Counter((np.asarray(im / 16.0, np.float32)[..., None].tobytes(), int(t))
                               for im, t in zip(bunch.images, bunch.target))
  assert _example_counter(ds.train, ds.val, ds.test) == source


def test_digits_test_split_fixed_and_val_follows_seed():
  a = kd_data.load_dataset("digits", seed=0)
  b = kd_data.load_dataset("digits", seed=1)
  a2 = kd_data.load_dataset("digits", seed=0)
  np.testing.assert_array_equal(a.test.images, b.test.images)
  np.testing.assert_array_equal(a.test.labels, b.test.labels)
  assert _example_counter(a.val) != _example_counter(b.val)
  np.testing.assert_array_equal(a.val.images, a2.val.images)
  np.testing.assert_array_equal(a.train.labels, a2.train.labels)
  # Whatever the seed, train+val is the same pool (the test split never leaks into it).
  assert _example_counter(a.train, a.val) == _example_counter(b.train, b.val)


def test_digits_normalised():
  ds = kd_data.load_dataset("digits")
  images = ds.train.get(np.arange(len(ds.train)))["image"]
  assert abs(images.mean()) < 0.05
  assert abs(images.std() - 1.0) < 0.1
  raw = ds.train.images
  assert raw.min() >= 0.0 and raw.max() <= 1.0  # stored scaled to [0, 1]


def test_val_fraction_zero_and_invalid():
  ds = kd_data.load_dataset("digits", val_fraction=0.0)
  assert len(ds.val) == 0 and len(ds.train) == 1797 - len(ds.test)
  assert ds.val.get(np.zeros((0,), np.int64))["image"].shape == (0, 8, 8, 1)
  with pytest.raises(KDJaxError, match=r"val_fraction must be in \[0, 1\)"):
    kd_data.load_dataset("digits", val_fraction=1.0)


def test_unknown_dataset_lists_known_names():
  with pytest.raises(KDJaxError, match="Unknown dataset 'mnist'") as e:
    kd_data.load_dataset("mnist")
  for name in ("digits", "cifar10", "cifar100"):
    assert name in str(e.value)


# ---------------------------------------------------------------------------------------------------
# batching


def test_batch_indices_pins_documented_formula():
  perm = np.random.default_rng([7, 1]).permutation(10)
  # 10 examples, batch 3: 3 steps per epoch, step 4 is the second batch of epoch 1.
  np.testing.assert_array_equal(kd_data.batch_indices(10, 3, seed=7, step=4), perm[3:6])
  assert kd_data.steps_per_epoch(10, 3) == 3


def test_batch_indices_deterministic_and_pure():
  a = kd_data.batch_indices(100, 16, seed=1, step=9)
  a[:] = -1  # mutating a result must not leak into later calls
  b = kd_data.batch_indices(100, 16, seed=1, step=9)
  c = kd_data.batch_indices(100, 16, seed=1, step=9)
  np.testing.assert_array_equal(b, c)
  assert b.min() >= 0 and b.shape == (16,)
  assert not np.array_equal(b, kd_data.batch_indices(100, 16, seed=2, step=9))


def test_batch_indices_epochs_are_permutations_and_differ():
  n, bs = 103, 10
  per_epoch = kd_data.steps_per_epoch(n, bs)
  assert per_epoch == 10
  epochs = []
  for epoch in range(3):
    idx = np.concatenate([kd_data.batch_indices(n, bs, seed=0, step=epoch * per_epoch + s)
                          for s in range(per_epoch)])
    assert len(idx) == per_epoch * bs and len(np.unique(idx)) == len(idx)
    assert idx.min() >= 0 and idx.max() < n
    epochs.append(idx)
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_batch_indices_resume_mid_epoch():
  n, bs, total = 50, 8, 20  # 6 steps per epoch, so the run crosses epochs
  uninterrupted = [kd_data.batch_indices(n, bs, seed=5, step=s) for s in range(total)]
  # A "resumed" process: other calls happen first (filling any cache), then it restarts at step 9.
  for s in range(total - 1, -1, -3):
    kd_data.batch_indices(n, bs, seed=11, step=s)
  resumed = [kd_data.batch_indices(n, bs, seed=5, step=s) for s in range(9, total)]
  for a, b in zip(uninterrupted[9:], resumed):
    np.testing.assert_array_equal(a, b)


def test_batch_size_too_large():
  with pytest.raises(KDJaxError, match="exceeds the 5 training examples"):
    kd_data.batch_indices(5, 8, seed=0, step=0)


def test_train_batch_matches_indices():
  ds = kd_data.load_dataset("digits")
  batch = kd_data.train_batch(ds.train, 32, seed=4, step=40)
  idx = kd_data.batch_indices(len(ds.train), 32, seed=4, step=40)
  np.testing.assert_array_equal(batch["index"], idx)
  np.testing.assert_array_equal(batch["label"], ds.train.labels[idx])
  np.testing.assert_array_equal(batch["image"], ds.train.get(idx)["image"])


def test_eval_batches_cover_once_with_mask():
  x = np.arange(10, dtype=np.float32).reshape(10, 1) + 1.0
  ds = kd_data.from_arrays(x, np.arange(10) % 2, val_fraction=0.0, mean=0.0, std=1.0)
  batches = list(kd_data.eval_batches(ds.train, 4))
  assert len(batches) == 3
  for b in batches:
    assert b["image"].shape == (4, 1, 1, 1) and b["mask"].shape == (4,) and b["mask"].dtype == np.float32
    assert set(b) == {"image", "label", "index", "mask"}
  np.testing.assert_array_equal(batches[0]["mask"], [1, 1, 1, 1])
  np.testing.assert_array_equal(batches[2]["mask"], [1, 1, 0, 0])
  real = np.concatenate([b["index"][b["mask"] == 1] for b in batches])
  np.testing.assert_array_equal(real, np.arange(10))
  seen = np.concatenate([b["image"].reshape(-1)[b["mask"] == 1] for b in batches])
  np.testing.assert_array_equal(seen, x.reshape(-1))
  exact = list(kd_data.eval_batches(ds.train, 5))  # divides evenly: no padding
  assert len(exact) == 2 and all(b["mask"].all() for b in exact)
  assert list(kd_data.eval_batches(ds.val, 4)) == []  # empty split


# ---------------------------------------------------------------------------------------------------
# augmentation


def _images(n=32, h=6, w=5, c=2, seed=0):
  # Distinct values everywhere (and none zero), so a window of the padded image is identified uniquely.
  return jnp.asarray(np.random.default_rng(seed).permutation(n * h * w * c).reshape(n, h, w, c) + 1.0,
                     jnp.float32)


def test_augment_identity():
  images = _images()
  out = kd_data.augment(jax.random.PRNGKey(0), images, pad=0, flip=False)
  np.testing.assert_array_equal(out, images)


def test_augment_flip_only():
  images = _images(n=64)
  out = np.asarray(kd_data.augment(jax.random.PRNGKey(1), images, pad=0, flip=True))
  images = np.asarray(images)
  flipped = 0
  for o, im in zip(out, images):
    same, mirrored = np.array_equal(o, im), np.array_equal(o, im[:, ::-1])
    assert same != mirrored
    flipped += mirrored
  assert 10 < flipped < 54  # both outcomes occur


def _window_offset(out, image, pad, allow_flip):
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  h, w = image.shape[:2]
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      window = padded[dy:dy + h, dx:dx + w]
      if np.array_equal(out, window) or (allow_flip and np.array_equal(out, window[:, ::-1])):
        return dy, dx
  return None


@pytest.mark.parametrize("flip", [False, True])
def test_augment_crop_is_window_of_padded(flip):
  pad = 2
  images = _images(n=48)
  out = np.asarray(kd_data.augment(jax.random.PRNGKey(2), images, pad=pad, flip=flip))
  assert out.shape == images.shape
  offsets = [_window_offset(o, im, pad, flip) for o, im in zip(out, np.asarray(images))]
  assert all(o is not None for o in offsets)
  assert len(set(offsets)) > 5  # offsets are drawn per example
  assert any(dy in (0, 2 * pad) or dx in (0, 2 * pad) for dy, dx in offsets)  # padding shows up


def test_augment_deterministic_keys_and_jit():
  images = _images()
  key = jax.random.PRNGKey(3)
  a = kd_data.augment(key, images, pad=4, flip=True)
  np.testing.assert_array_equal(a, kd_data.augment(key, images, pad=4, flip=True))
  assert not np.array_equal(a, kd_data.augment(jax.random.PRNGKey(4), images, pad=4, flip=True))
  jitted = jax.jit(functools.partial(kd_data.augment, pad=4, flip=True))
  np.testing.assert_array_equal(jitted(key, images), a)


def test_augment_rejects_negative_pad():
  with pytest.raises(KDJaxError, match="non-negative"):
    kd_data.augment(jax.random.PRNGKey(0), _images(), pad=-1)


# ---------------------------------------------------------------------------------------------------
# from_arrays


def test_from_arrays_round_trip():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 4, 4, 3)).astype(np.float32)
  y = np.arange(40) % 4
  xt, yt = x[:8] * 2, y[:8]
  ds = kd_data.from_arrays(x, y, x_test=xt, y_test=yt, val_fraction=0.25, seed=1, name="mine")
  assert ds.name == "mine" and ds.num_classes == 4 and ds.image_shape == (4, 4, 3)
  assert len(ds.train) == 30 and len(ds.val) == 10 and len(ds.test) == 8
  # Default stats are per channel over all of x_train; un-normalising gives the inputs back.
  mean, std = x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0)
  np.testing.assert_allclose(ds.train.mean, mean, rtol=1e-5, atol=1e-6)
  test = ds.test.get(np.arange(8))
  np.testing.assert_allclose(test["image"] * std + mean, xt, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(test["label"], yt)
  # train + val is exactly the training set.
  got = np.concatenate([ds.train.images, ds.val.images])
  order = np.lexsort(got.reshape(40, -1).T)
  ref = np.lexsort(x.reshape(40, -1).T)
  np.testing.assert_array_equal(got[order], x[ref])
  # Stratified val: 10 of 40 with 4 balanced classes -> 2 or 3 per class.
  assert set(np.bincount(ds.val.labels, minlength=4)) <= {2, 3}


def test_from_arrays_flat_features_and_defaults():
  x = np.arange(24, dtype=np.float64).reshape(6, 4)
  ds = kd_data.from_arrays(x, [0, 1, 2, 0, 1, 2], val_fraction=0.0, mean=0.0, std=1.0)
  assert ds.image_shape == (1, 1, 4) and len(ds.test) == 0 and ds.num_classes == 3
  np.testing.assert_array_equal(ds.train.get(np.arange(6))["image"].reshape(6, 4), x)
  u8 = kd_data.from_arrays(np.zeros((5, 3, 3), np.uint8), np.zeros(5, np.int64), num_classes=2,
                           val_fraction=0.0)
  assert u8.train.images.dtype == np.uint8 and u8.image_shape == (3, 3, 1) and u8.num_classes == 2
  assert np.all(np.isfinite(u8.train.get(np.arange(5))["image"]))  # constant data: std taken as 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(x_train=np.zeros((5, 2)), y_train=np.zeros(4, int)), "has 4 labels but the matching images have 5"),
    (dict(x_train=np.zeros((3, 2)), y_train=[0, 1, 3], num_classes=3), r"labels in \[0, 3\] but num_classes=3"),
    (dict(x_train=np.zeros((3, 2)), y_train=[0, -1, 1]), r"labels in \[-1, 1\]"),
    (dict(x_train=np.zeros((3, 2)), y_train=[0.0, 0.5, 1.0]), "non-integer value 0.5 at position 1"),
    (dict(x_train=np.zeros((3, 2)), y_train=np.eye(3)), "one-hot"),
    (dict(x_train=np.zeros((3, 2)), y_train=["a", "b", "c"]), "integer class ids"),
    (dict(x_train=np.zeros((3, 2)), y_train=[0, 1, 2], x_test=np.zeros((2, 2))), "both x_test and y_test"),
    (dict(x_train=np.zeros((3, 2)), y_train=[0, 1, 2], x_test=np.zeros((2, 3)), y_test=[0, 1]),
     "x_test examples have shape"),
    (dict(x_train=np.zeros((3, 2)), y_train=[0, 1, 2], x_test=np.zeros((2, 2)), y_test=[0, 5],
          num_classes=3), r"y_test has labels in \[0, 5\]"),
    (dict(x_train=np.zeros((3,)), y_train=[0, 1, 2]), r"must be \[N, H, W, C\]"),
    (dict(x_train=np.zeros((3, 2)), y_train=[0, 1, 2], std=0.0), "std must be positive"),
])
def test_from_arrays_errors(kwargs, message):
  with pytest.raises(KDJaxError, match=message):
    kd_data.from_arrays(**kwargs)


# ---------------------------------------------------------------------------------------------------
# tfds without TensorFlow


def test_cifar10_from_mocked_tfds(tmp_path):
  with tfds.testing.mock_data(num_examples=20):
    ds = kd_data.load_dataset("cifar10", data_dir=str(tmp_path), val_fraction=0.2, seed=0)
  assert ds.num_classes == 10 and ds.image_shape == (32, 32, 3)
  assert ds.augment_pad == 4 and ds.augment_flip
  assert len(ds.train) == 16 and len(ds.val) == 4 and len(ds.test) == 20
  assert ds.train.images.dtype == np.uint8
  batch = kd_data.train_batch(ds.train, 8, seed=0, step=3)
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32 and batch["label"].min() >= 0 and batch["label"].max() < 10
  # uint8 scaled by 1/255 then normalised with the CIFAR-10 constants.
  expected = (ds.train.images[batch["index"]] / 255.0 - np.array([0.4914, 0.4822, 0.4465])) / np.array(
      [0.2470, 0.2435, 0.2616])
  np.testing.assert_allclose(batch["image"], expected, rtol=1e-5, atol=1e-5)


def test_missing_tfds_data_says_how_to_prepare(tmp_path):
  empty = tmp_path / "no_data_here"
  with pytest.raises(KDJaxError) as e:
    kd_data.load_dataset("cifar100", data_dir=str(empty))
  message = str(e.value)
  assert "'cifar100'" in message and "not prepared" in message and str(empty) in message
  assert f"tfds build cifar100 --file_format=array_record --data_dir {empty}" in message
  assert "--config.data.data_dir" in message
  assert not (empty / "cifar100").exists()  # nothing was downloaded or half-built


class KdJaxTinyImages(tfds.core.GeneratorBasedBuilder):
  """A real array_record build (PNG-encoded images, no TF): image pixels all equal the example id."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(4, 4, 3)),
        "label": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, 30), "test": self._generate_examples(100, 6)}

  def _generate_examples(self, start, n):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    for i in range(start, start + n):
      yield i, {"image": Image.fromarray(np.full((4, 4, 3), i, np.uint8)), "label": i % 3}


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  KdJaxTinyImages(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


def test_real_array_record_build(tiny_data_dir, monkeypatch):
  monkeypatch.setitem(kd_data.DATASETS, "tiny", kd_data.DatasetSpec(
      source="tfds", tfds_name="kd_jax_tiny_images", num_classes=3, image_shape=(4, 4, 3)))
  ds = kd_data.load_dataset("tiny", data_dir=tiny_data_dir, val_fraction=0.2, seed=0)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 6, 6)
  np.testing.assert_array_equal(np.bincount(ds.val.labels), [2, 2, 2])  # stratified
  ids = np.concatenate([ds.train.images[:, 0, 0, 0], ds.val.images[:, 0, 0, 0]]).astype(int)
  np.testing.assert_array_equal(np.sort(ids), np.arange(30))
  np.testing.assert_array_equal(np.sort(ds.test.images[:, 0, 0, 0]), np.arange(100, 106))
  for split in (ds.train, ds.val, ds.test):  # labels travel with their images
    np.testing.assert_array_equal(split.labels, split.images[:, 0, 0, 0].astype(int) % 3)
  # No mean/std in the spec: computed from the training data, so the train split is centred.
  images = np.concatenate([ds.train.get(np.arange(len(ds.train)))["image"],
                           ds.val.get(np.arange(len(ds.val)))["image"]])
  assert abs(images.mean()) < 1e-4
  other = kd_data.load_dataset("tiny", data_dir=tiny_data_dir, val_fraction=0.2, seed=1)
  assert not np.array_equal(other.val.images, ds.val.images)
  np.testing.assert_array_equal(other.test.images, ds.test.images)


def test_dataset_names():
  assert kd_data.dataset_names() == sorted(kd_data.DATASETS)
  assert {"digits", "cifar10", "cifar100"} <= set(kd_data.dataset_names())
