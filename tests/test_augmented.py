"""Mixing within a subset (CutMix, MixUp) and the HE-DA distiller."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax import distillers, losses, models
from kd_jax.data import cutmix, mixup, partner_within
from kd_jax.models.outputs import ModelOutput
from kd_jax.train.schemes import distill
from kd_jax.train.step import TrainState, apply_train
from kd_jax.train.teachers import Teachers


@pytest.mark.parametrize("seed", range(5))
def test_partner_within_permutes_the_subset_and_fixes_the_rest(seed):
  mask = jax.random.bernoulli(jax.random.PRNGKey(100 + seed), 0.5, (16,))
  partner = np.asarray(jax.jit(partner_within)(jax.random.PRNGKey(seed), mask))
  m = np.asarray(mask)
  assert sorted(partner) == list(range(16))                        # a permutation
  np.testing.assert_array_equal(partner[~m], np.arange(16)[~m])    # unmasked keep themselves
  assert set(partner[m]) == set(np.flatnonzero(m))                 # masked map among themselves


def test_cutmix_pastes_one_box_from_the_partner():
  images = jnp.arange(4, dtype=jnp.float32)[:, None, None, None] * jnp.ones((4, 8, 8, 1))
  partner = jnp.array([1, 0, 3, 2])
  mixed, lam = cutmix(jax.random.PRNGKey(3), images, partner, 1.0)
  from_partner = np.asarray(mixed != images)[..., 0]
  np.testing.assert_array_equal(from_partner[0], from_partner[1])  # the same box in every image
  np.testing.assert_allclose(np.asarray(mixed)[from_partner], np.asarray(images[partner])[from_partner])
  np.testing.assert_allclose(lam, 1.0 - from_partner[0].mean(), rtol=1e-6)
  box = np.argwhere(from_partner[0])
  if len(box):  # a rectangle
    (r0, c0), (r1, c1) = box.min(0), box.max(0)
    assert from_partner[0, r0:r1 + 1, c0:c1 + 1].all()


def test_mixup_is_a_convex_combination():
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2))
  partner = jnp.array([2, 3, 0, 1])
  mixed, lam = mixup(jax.random.PRNGKey(1), images, partner, 0.2)
  assert 0.0 <= float(lam) <= 1.0
  np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[partner], rtol=1e-6)


def _out(logits):
  return ModelOutput(prediction=logits, stages=(), preact_stages=(), embedding=logits)


def test_he_da_is_kd_on_images_mixed_within_the_high_energy_subset():
  b, c = 8, 5
  w = jax.random.normal(jax.random.PRNGKey(0), (3 * 3 * 1, c))
  images = jax.random.normal(jax.random.PRNGKey(1), (b, 3, 3, 1))
  teacher_logits = jax.random.normal(jax.random.PRNGKey(2), (b, c)) * jnp.arange(1, b + 1)[:, None]
  energies = losses.energy_score(teacher_logits, 4.0)
  high = float(np.sort(energies)[4])
  he_da = distillers.HEDA(energy_low=-np.inf, energy_high=high, include_first=2)
  student_fn = lambda x: x.reshape(x.shape[0], -1) @ w
  teacher_fn = lambda x: 2.0 * x.reshape(x.shape[0], -1) @ w + 1.0
  masks = []

  def forward(x, mask=None):
    masks.append(mask)
    return _out(student_fn(x)), _out(teacher_fn(x))

  rng = jax.random.PRNGKey(7)
  value, metrics, _ = he_da(({}), _out(student_fn(images)), _out(teacher_logits), {"image": images},
                            rng=rng, train=True, forward=forward)
  selected = np.array(energies > high)
  selected[:2] = True
  np.testing.assert_array_equal(he_da.selection(teacher_logits), selected)
  # The mixed pass's BatchNorm statistics come from the selected subset only, as the reference forwards it.
  np.testing.assert_array_equal(masks[0], selected)
  partner_rng, mix_rng = jax.random.split(rng)
  partner = partner_within(partner_rng, jnp.asarray(selected))
  mixed, _ = cutmix(mix_rng, images, partner, 1.0)
  per = losses.kd(student_fn(mixed), teacher_fn(mixed), 4.0, reduction="none")
  np.testing.assert_allclose(value, np.sum(np.asarray(per) * selected) / selected.sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics["selected_fraction"], selected.mean())
  # The gradient reaches the student through the mixed forward pass.
  grad = jax.grad(lambda w_: he_da({}, _out(images.reshape(b, -1) @ w_), _out(teacher_logits),
                                   {"image": images}, rng=rng, train=True,
                                   forward=lambda x, mask=None: (_out(x.reshape(b, -1) @ w_),
                                                                 _out(teacher_fn(x))))[0])(w)
  assert float(jnp.abs(grad).sum()) > 0


@dataclasses.dataclass(frozen=True)
class _SubsetPass(distillers.Distiller):
  """KD on a shifted copy of the batch through `ctx.forward`, with BatchNorm statistics from `rows` only."""

  rows: tuple = ()

  def loss(self, variables, student, teacher, batch, ctx):
    other_student, other_teacher = ctx.forward(batch["image"] * 0.5 + 1.0, mask=jnp.asarray(self.rows))
    return losses.kd(other_student.logits, other_teacher.logits, 4.0), {}, {}


def test_an_extra_pass_takes_its_subsets_statistics_and_the_step_keeps_its_running_update():
  model = models.create_model("cnn_tiny", num_classes=5)
  images = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 8, 1))
  variables = model.init(jax.random.PRNGKey(1), images, train=False)
  params, stats = variables["params"], variables["batch_stats"]
  rows = (True, False, True, True, False, False, True, False)
  mask = np.array(rows)
  # A masked pass equals a forward of the subset alone, on the subset's rows and in the running statistics.
  train = jax.jit(functools.partial(apply_train, model))
  out, masked_stats = train(params, stats, images, batch_mask=jnp.asarray(mask))
  alone, alone_stats = train(params, stats, images[mask])
  chex.assert_trees_all_close(out.logits[mask], alone.logits, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(masked_stats, alone_stats, atol=1e-6, rtol=1e-5)
  _, whole_stats = train(params, stats, images)
  assert not np.allclose(jax.tree.leaves(whole_stats)[0], jax.tree.leaves(alone_stats)[0])
  # The distill step keeps the extra pass's update after the main pass's, as PyTorch's two forwards do.
  tx = optax.sgd(0.0)
  state = TrainState(step=jnp.asarray(0), params=params, batch_stats=stats, distiller_params={},
                     distiller_state={}, opt_state=tx.init({"student": params, "distiller": {}}),
                     rng=jax.random.PRNGKey(2))
  batch = {"image": images, "label": jnp.arange(8) % 5}
  step = jax.jit(functools.partial(distill.train_step, student=model, teachers=Teachers((model,), (1.0,), (False,)),
                                   distiller=_SubsetPass(rows), tx=tx, schedule=optax.constant_schedule(0.0),
                                   steps_per_epoch=1))
  new_state, _ = step(state, batch, (variables,))
  _, after_main = train(params, stats, images)
  _, expected = train(params, after_main, images * 0.5 + 1.0, batch_mask=jnp.asarray(mask))
  chex.assert_trees_all_close(new_state.batch_stats, expected, atol=1e-6, rtol=1e-5)


def test_he_da_thresholds_from_prepare_and_errors():
  logits = jax.random.normal(jax.random.PRNGKey(0), (100, 10)) * 3
  prepared = distillers.HEDA().prepare(
      distillers.TrainingData(lambda: np.asarray(logits), np.zeros(100, np.int32), 10))
  energies = losses.energy_score(logits, 4.0)
  low, high = losses.energy_thresholds(energies, 0.0, 0.5)
  assert low == pytest.approx(float(np.min(energies)))  # LOW_RATE = 0: nothing of the training set is below
  assert prepared.energy_low == pytest.approx(low) and prepared.energy_high == pytest.approx(high)
  with pytest.raises(Exception, match="energy_low/energy_high are not set"):
    distillers.HEDA().selection(logits)
  with pytest.raises(Exception, match="mix must be"):
    distillers.make_distiller("he_da", mix="blend")


def _forward_linear(w, teacher_scale=2.0):
  student_fn = lambda x: x.reshape(x.shape[0], -1) @ w
  teacher_fn = lambda x: teacher_scale * x.reshape(x.shape[0], -1) @ w + 0.5
  return student_fn, teacher_fn


@pytest.mark.parametrize("augment", ["mixup", "cutmix", "cutout", "cutmixpick"])
def test_r2kd_adds_the_same_loss_on_an_augmented_copy(augment):
  b, c = 8, 5
  w = jax.random.normal(jax.random.PRNGKey(0), (4 * 4 * 1, c))
  images = jax.random.normal(jax.random.PRNGKey(1), (b, 4, 4, 1))
  student_fn, teacher_fn = _forward_linear(w)
  pair = lambda x: (_out(teacher_fn(x)), _out(teacher_fn(x) * 0.5))  # (teacher, "pruned" teacher)
  forward = lambda x: (_out(student_fn(x)), pair(x))
  r2kd = distillers.make_distiller("r2kd", augment=augment, cutout_size=2, pick=3)
  rng = jax.random.PRNGKey(5)
  value, metrics, _ = jax.jit(lambda x: r2kd({}, _out(student_fn(x)), pair(x), {"image": x}, rng=rng,
                                             train=True, forward=forward))(images)
  aug = r2kd.augmented_copy(rng, images, pair(images))
  assert aug.shape[0] == (3 if augment == "cutmixpick" else b)
  blend = lambda x: 0.7 * teacher_fn(x) + 0.3 * teacher_fn(x) * 0.5
  expected = losses.r2kd(student_fn(images), blend(images)) + losses.r2kd(student_fn(aug), blend(aug))
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert "aug_value" in metrics and "aug_rank" in metrics
  if augment == "cutmixpick":  # the picked samples are the highest-entropy ones of the original teacher
    z = np.asarray(teacher_fn(images), np.float64)  # (reference `cutmixpick_data(..., self.teacher)`)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    entropy = -np.sum(p * np.log(p), -1)
    partner_rng, mix_rng = jax.random.split(rng)
    mixed, _ = cutmix(mix_rng, images, jax.random.permutation(partner_rng, b), 1.0)
    np.testing.assert_allclose(aug, np.asarray(mixed)[np.argsort(-entropy)[:3]], rtol=1e-6)


def test_cutout_zeroes_one_square_shared_by_the_batch():
  from kd_jax.data import cutout
  images = jnp.ones((3, 10, 10, 2))
  out = np.asarray(cutout(jax.random.PRNGKey(0), images, 4))
  holes = out[..., 0] == 0
  np.testing.assert_array_equal(holes[0], holes[1])
  assert 0 < holes[0].sum() <= 16
