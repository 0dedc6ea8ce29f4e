"""The recommender distillers' added forms (METHODS.md item 15b): hierarchical TD, student-guided CD, BD's two
directions, RD's hybrid weight, and drawing only unrated items; known values in float64 NumPy, Monte Carlo
frequency checks of the samplers, and short runs of each option."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp

import numpy as np
import pytest

from kd_jax import distillers, losses, tasks
from kd_jax.distillers import Context, TrainingData
from kd_jax.distillers.recommender import draw_unrated, rated_lists, unrated_mask
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput

from test_recommender import _fake_forward, _rating_config, _rrd_loop, _small_ratings


# ----------------------------------------------------------------------------------------------------------
# Hierarchical topology, in float64 NumPy.


def _cos(a, b):
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  return unit(a) @ unit(b).T


def _entity_np(s, t, g):
  ct, cs = _cos(t, t), _cos(s, s)
  keep = (g[:, None] == g[None, :]) & (ct > 0)
  return ((ct - cs) ** 2)[keep].sum(), keep.sum()


def _prototypes(x, g):
  return np.stack([x[g == k].mean(0) for k in np.unique(g)])


def _group_np(s, t, g, form, frozen_s=None):
  pt, ps = _prototypes(t, g), _prototypes(s if frozen_s is None else frozen_s, g)
  if form == "prototype_entity":
    d = (_cos(pt, t) - _cos(ps, s)) ** 2
  else:
    d = (_cos(pt, pt) - _cos(ps, ps)) ** 2
  return d.sum(), d.size


def _topology_case():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(9, 3)), rng.normal(size=(9, 5))
  t[1] = -t[0] + 0.1 * rng.normal(size=5)  # a same-group pair with a negative teacher cosine: left out
  groups = np.array([0, 0, 3, 3, 3, 1, 5, 5, 0])  # of 6 ids; groups 2 and 4 are empty
  return s, t, groups


def test_entity_and_group_topology_match_numpy():
  s, t, g = _topology_case()
  total, count = _entity_np(s, t, g)
  assert _cos(t, t)[0, 1] < 0 and count < (g[:, None] == g[None, :]).sum()
  np.testing.assert_allclose(losses.entity_topology(s, t, g), total, rtol=1e-5)
  np.testing.assert_allclose(losses.entity_topology(s, t, g, reduction="mean"), total / count, rtol=1e-5)
  for form in ("prototype_entity", "prototype_prototype"):
    total, count = _group_np(s, t, g, form)
    np.testing.assert_allclose(losses.group_topology(s, t, g, num_groups=6, form=form), total, rtol=1e-5)
    np.testing.assert_allclose(losses.group_topology(s, t, g, num_groups=6, form=form, reduction="mean"),
                               total / count, rtol=1e-5)
  # Cosines: rescaling the student's rows changes nothing; the teacher's own representations give 0.
  scaled = s * np.array([1.0, 3.0, 0.5, 2.0, 7.0, 1.0, 0.1, 4.0, 9.0])[:, None]
  np.testing.assert_allclose(losses.entity_topology(scaled, t, g), losses.entity_topology(s, t, g), rtol=1e-5)
  assert float(losses.group_topology(t, t, g, num_groups=6)) < 1e-9
  # One group holding everything: the entity level is FTD restricted to positive teacher cosines.
  ones = np.zeros(9, int)
  ct = _cos(t, t)
  np.testing.assert_allclose(losses.entity_topology(s, t, ones), ((ct - _cos(s, s)) ** 2)[ct > 0].sum(), rtol=1e-5)


def test_group_topology_gradients_follow_the_reference():
  # 'prototype_entity': the student's prototypes are constants (the reference computes them under no_grad);
  # 'prototype_prototype': differentiable. Both against central differences of the NumPy formulas.
  s, t, g = _topology_case()

  def numeric(f):
    grad, h = np.zeros_like(s), 1e-6
    for idx in np.ndindex(s.shape):
      up, down = s.copy(), s.copy()
      up[idx] += h
      down[idx] -= h
      grad[idx] = (f(up) - f(down)) / (2 * h)
    return grad

  frozen = numeric(lambda x: _group_np(x, t, g, "prototype_entity", frozen_s=s)[0])
  jax_grad = jax.grad(lambda x: losses.group_topology(x, t, g, num_groups=6))(jnp.asarray(s, jnp.float32))
  np.testing.assert_allclose(jax_grad, frozen, rtol=2e-3, atol=2e-4)
  full = numeric(lambda x: _group_np(x, t, g, "prototype_prototype")[0])
  jax_grad = jax.grad(lambda x: losses.group_topology(x, t, g, num_groups=6, form="prototype_prototype"))(
      jnp.asarray(s, jnp.float32))
  assert np.abs(full).max() > 1e-3
  np.testing.assert_allclose(jax_grad, full, rtol=2e-3, atol=2e-4)


def _outputs(users, items, prediction=None):
  users, items = jnp.asarray(users, jnp.float32), jnp.asarray(items, jnp.float32)
  p = jnp.zeros(users.shape[0]) if prediction is None else prediction
  return ModelOutput(prediction=p, stages=(users, items), preact_stages=(), embedding=users)


def _np_experts(params, s):
  h = np.maximum(np.einsum("bd,edh->beh", s, params["hidden_kernel"]) + params["hidden_bias"], 0.0)
  return np.einsum("beh,eho->beo", h, params["output_kernel"]) + params["output_bias"]


def test_hierarchical_td_combines_topology_and_group_assignment_as_the_reference():
  rng = np.random.default_rng(3)
  su, si, tu, ti = (rng.normal(size=shape) for shape in ((6, 3), (6, 3), (6, 5), (6, 5)))
  td = distillers.make_distiller("td", form="hierarchical", num_groups=2, alpha=0.3, temperature=0.5)
  student, teacher = _outputs(su, si), _outputs(tu, ti)
  variables = jax.tree.map(np.asarray, jax.jit(lambda: td.init(jax.random.PRNGKey(0), student, teacher, {}))())
  # No rng: Gumbel noise 0. The loss and its gradient in one compiled call.
  (value, metrics), grads = jax.jit(jax.value_and_grad(
      lambda v: td.loss(v, student, teacher, {}, Context())[:2], has_aux=True))(variables)
  assignment, groups = 0.0, []
  for k, (s, t) in enumerate(((su, tu), (si, ti))):
    p = variables["params"]["users" if k == 0 else "items"]
    logits = t @ p["selection"]["kernel"] + p["selection"]["bias"]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    z = np.exp(np.log(probs + 1e-10) / 0.5)
    z /= z.sum(1, keepdims=True)
    mixed = np.einsum("beo,be->bo", _np_experts(p, s), z)
    assignment += ((t - mixed) ** 2).sum()
    groups.append(np.argmax(probs, 1) + 2 * k)
  s, t, g = np.vstack([su, si]), np.vstack([tu, ti]), np.concatenate(groups)
  entity, group = _entity_np(s, t, g)[0], _group_np(s, t, g, "prototype_entity")[0]
  np.testing.assert_allclose(metrics["assignment"], assignment, rtol=1e-4)
  np.testing.assert_allclose(metrics["entity"], entity, rtol=1e-4)
  np.testing.assert_allclose(metrics["group"], group, rtol=1e-4)
  np.testing.assert_allclose(value, 0.3 * (entity + group) + 0.7 * assignment, rtol=1e-4)
  assert float(metrics["groups_used"]) == len(np.unique(g))
  # The assignment network learns from the loss.
  assert all(float(np.abs(x).max()) > 0 for x in jax.tree.leaves(grads["params"]["users"]["selection"]))


def test_bd_sampling_forms_and_rds_discrepancy_weight_by_hand():
  own, other = np.array([0.1, 0.5, 0.9, 0.3]), np.array([0.4, 0.2, 0.9, 0.0])
  tanh = np.tanh(np.maximum(4.0 * (own - other), 0.0))
  np.testing.assert_allclose(np.exp(losses.rank_discrepancy_logits(own, other, 4.0, "tanh")), tanh, atol=1e-6)
  np.testing.assert_allclose(losses.rank_discrepancy_logits(own, other, 2.0, "exp"), 2.0 * (own - other), rtol=1e-6)
  rank = np.array([[0.0, 7.0, 1.0], [30.0, 0.0, 2.0]])
  np.testing.assert_allclose(losses.rank_discrepancy_weight(rank, np.arange(3), 0.1),
                             np.maximum(np.tanh(0.1 * (rank - np.arange(3))), 0.0), rtol=1e-6)
  rng = np.random.default_rng(4)
  s, t, d = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.random((3, 4))
  w = np.exp(-np.arange(1, 5) / 2.0)
  w /= w.sum()
  np.testing.assert_allclose(losses.ranking_distillation(s, t, lam=2.0, discrepancy=d),
                             np.mean(((s - t) ** 2 * w * d).sum(1)), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Drawing unrated items.


def _rated(num_users=3, num_items=20):
  rated = np.zeros((num_users, num_items), bool)
  rated[0, [1, 5, 7]] = True
  rated[1, [0, 19]] = True
  rated[2, :6] = True
  return rated


def _task(num_items):
  return dataclasses.replace(tasks.get_task("rating"), num_items=num_items)


def _data(rated, scores=None):
  scores = np.zeros(rated.shape) if scores is None else scores
  return TrainingData(lambda: None, np.zeros(1), 0, rated, lambda k: scores)


def _jit_loss(distiller, users, student_fn, teacher_fn, *, variables=None, student=None, teacher=None,
              num_items=20, seed=0, epoch=1):
  """`(value, metrics, items)`: one compiled call of `distiller.loss` with a `ctx.forward` of the two functions
  that also returns the item ids of every forward call, in call order (compiled once: the eager op-by-op
  dispatch of a whole loss costs seconds per call on a busy 2-core host)."""
  inner = _fake_forward(student_fn, [teacher_fn])

  def run(users, rng):
    seen = []

    def forward(x):
      seen.append(x["item"])
      return inner(x)

    ctx = Context(rng=rng, forward=forward, task=_task(num_items), epoch=epoch)
    value, metrics, _ = distiller.loss(variables or {}, student, teacher, {"user": users}, ctx)
    return value, metrics, seen

  value, metrics, seen = jax.jit(run)(users, jax.random.PRNGKey(seed))
  return value, jax.tree.map(np.asarray, metrics), [np.asarray(x) for x in seen]


def test_draw_unrated_is_uniform_over_each_users_unrated_items():
  rng = np.random.default_rng(5)
  rated = rng.random((6, 15)) < 0.4
  rated[0, :14] = True  # one unrated item left
  items = rated_lists(rated)
  draws = np.asarray(draw_unrated(jax.random.PRNGKey(0), jnp.arange(6), items, 15, 6000))
  for u in range(6):
    unrated = np.flatnonzero(~rated[u])
    assert not rated[u, draws[u]].any()
    counts = np.bincount(draws[u], minlength=15)[unrated]
    expected = 6000 / len(unrated)
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 1)
  mask = np.asarray(unrated_mask(jnp.array([3, 0, 3]), items, 15))
  np.testing.assert_array_equal(mask, ~rated[[3, 0, 3]])
  with pytest.raises(KDJaxError, match="user 1 has rated all but 0"):
    rated_lists(np.array([[True, False], [True, True]]))


def test_cd_student_guided_samples_by_the_students_current_ranking():
  rated, lam, candidates = _rated(), 2.0, 8
  cd = distillers.make_distiller("cd", mode="student_guided", num_samples=1, candidates=candidates, lam=lam)
  cd = cd.prepare(_data(rated))
  student = lambda u, i: ((i * 7 + 3 * u) % 20).astype(jnp.float32)  # one order per user
  teacher = lambda u, i: -student(u, i) + 0.5  # the reverse order: its ranking must not be the one used
  users = jnp.repeat(jnp.arange(3), 2000)
  value, _, seen = _jit_loss(cd, users, student, teacher, seed=1)
  picked = seen[-1].reshape(-1)
  u = np.asarray(users)
  assert not rated[u, picked].any()
  # The student's 1-based rank of each pick among the user's unrated items.
  scores = np.asarray(student(np.arange(3)[:, None], np.arange(20)[None, :]))
  ranks = np.empty(len(picked), int)
  for user in range(3):
    order = [i for i in np.argsort(-scores[user], kind="stable") if not rated[user, i]]
    position = {item: r + 1 for r, item in enumerate(order)}
    rows = u == user
    ranks[rows] = [position[i] for i in picked[rows]]
  p = np.exp(-np.arange(1, candidates + 1) / lam)
  p /= p.sum()
  counts = np.bincount(ranks, minlength=candidates + 1)[1:]
  assert counts.sum() == len(picked)  # nothing beyond the kept candidates
  expected = p * len(picked)
  assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected * (1 - p)) + 2)
  s, t = np.asarray(student(u, picked)), np.asarray(teacher(u, picked))
  np.testing.assert_allclose(value, np.mean((s - t) ** 2), rtol=1e-5)


def test_rrd_draws_uninteresting_items_among_unrated_items_outside_the_teachers_list():
  rated = _rated()
  rated[2, :14] = True  # user 2: 20 - 14 rated - 4 listed = 2 items left for 8 draws
  scores = np.tile(np.arange(20.0), (3, 1))
  rrd = distillers.make_distiller("rrd", num_interesting=2, candidates=4, num_uninteresting=8, temperature=1.0)
  rrd = rrd.prepare(_data(rated, scores))
  student = lambda u, i: jnp.sin(i * 1.3 + u).astype(jnp.float32)
  users = jnp.repeat(jnp.arange(3), 40)
  value, metrics, seen = _jit_loss(rrd, users, student, student, seed=2)
  items = seen[0].reshape(len(users), 10)
  keep = np.zeros((len(users), 8), bool)
  for b, user in enumerate(np.asarray(users)):
    allowed = set(np.flatnonzero(~rated[user])) - set(rrd.top_items[user])
    drawn = items[b, 2:]
    keep[b] = [i in allowed for i in drawn]
    assert keep[b].sum() == min(8, len(allowed))  # without replacement: every allowed item once at most
    assert len(set(drawn[keep[b]])) == keep[b].sum()
  np.testing.assert_allclose(metrics["uninteresting_kept"], keep.mean(), rtol=1e-6)
  s = np.asarray(student(np.asarray(users)[:, None], items))
  np.testing.assert_allclose(value, _rrd_loop(s[:, :2], s[:, 2:], keep), rtol=1e-5)


def test_bd_directions_sample_the_documented_items():
  rated = np.zeros((4, 40), bool)
  rated[:, ::3] = True
  bd = distillers.make_distiller("bd", num_candidates=20, num_samples=5, epsilon=10.0, s2t_num_samples=7,
                                 s2t_epsilon=3.0).prepare(_data(rated))
  narrow, wide = _outputs(np.zeros((2, 2)), np.zeros((2, 2))), _outputs(np.zeros((2, 4)), np.zeros((2, 4)))
  learner = lambda u, i: jnp.sin(i * 0.7 + u).astype(jnp.float32)
  other = lambda u, i: jnp.cos(i * 1.1 - u).astype(jnp.float32)
  users = jnp.repeat(jnp.arange(4), 500)
  u = np.asarray(users)

  def run(student_out, teacher_out, bd=bd):
    value, metrics, seen = _jit_loss(bd, users, learner, other, student=student_out, teacher=teacher_out,
                                     num_items=40, seed=3)
    candidates = seen[0].reshape(len(u), -1)
    own, oth = np.asarray(learner(u[:, None], candidates)), np.asarray(other(u[:, None], candidates))
    rho = lambda x: (x[:, None, :] > x[:, :, None]).sum(-1) / 20
    diff = rho(own) - rho(oth)  # > 0: the other network ranks the candidate better than the learner
    picked = seen[1].reshape(len(u), -1)
    picked_diff = np.stack([[diff[b][list(candidates[b]).index(i)] for i in picked[b]] for b in range(len(u))])
    assert not rated[u[:, None], candidates].any() and np.isin(picked, candidates).all()
    carried = (np.asarray(learner(u[:, None], picked)) - np.asarray(other(u[:, None], picked))) ** 2
    return value, metrics, diff, picked_diff, carried

  # Teacher -> student (the narrower network learns): only items the teacher ranks higher than the student.
  value, metrics, diff, picked_diff, carried = run(narrow, wide)
  assert picked_diff.shape[1] == 5
  rows = (diff > 0).any(1)
  assert np.all(picked_diff[rows] > 0)
  np.testing.assert_allclose(metrics["sampled"], (picked_diff > 0).mean(), rtol=1e-6)
  np.testing.assert_allclose(value, carried[picked_diff > 0].mean(), rtol=1e-5)
  # Student -> teacher (the wider network learns): every candidate, p ∝ exp(3 · diff), loss × s2t_scale.
  value, metrics, diff, picked_diff, carried = run(wide, narrow, dataclasses.replace(bd, s2t_scale=2.5))
  assert picked_diff.shape[1] == 7 and float(metrics["sampled"]) == 1.0
  p = np.exp(3.0 * diff)
  p /= p.sum(1, keepdims=True)
  expected = (p * diff).sum(1).mean()
  assert abs(expected - diff.mean()) > 0.1  # the weighting is visible against uniform draws
  assert abs(picked_diff.mean() - expected) < 0.03
  np.testing.assert_allclose(value, 2.5 * carried.mean(), rtol=1e-5)
  with pytest.raises(KDJaxError, match="undefined"):
    bd.loss({}, narrow, narrow, {"user": users}, Context(rng=jax.random.PRNGKey(3), task=_task(40),
                                                         forward=_fake_forward(learner, [other])))


def test_rd_hybrid_weight_uses_the_students_estimated_rank():
  rated = _rated(num_items=30)
  scores = np.tile(np.arange(30.0)[::-1], (3, 1))  # the teacher prefers low ids
  rd = distillers.make_distiller("rd", k=3, lam=1.0, mu=0.5, num_dynamic_samples=50, dynamic_start_epoch=1)
  rd = rd.prepare(_data(rated, scores))
  student = lambda u, i: jnp.cos(i * 0.9 + u).astype(jnp.float32)
  teacher = lambda u, i: (3.0 - 0.1 * i).astype(jnp.float32)
  users = jnp.array([0, 1, 2, 2])
  u = np.asarray(users)
  value, metrics, seen = _jit_loss(rd, users, student, teacher, num_items=30, seed=4, epoch=3)
  top, dynamic = seen[0].reshape(4, 3), seen[1].reshape(4, 50)
  assert not rated[u[:, None], top].any() and not rated[u[:, None], dynamic].any()
  s, t = np.asarray(student(u[:, None], top)), np.asarray(teacher(u[:, None], top))
  below = (s[:, :, None] < np.asarray(student(u[:, None], dynamic))[:, None, :]).mean(-1)
  d = np.maximum(np.tanh(0.5 * (np.floor(29 * below) - np.arange(3))), 0.0)
  w = np.exp(-np.arange(1, 4.0))
  w /= w.sum()
  np.testing.assert_allclose(value, np.mean(((s - t) ** 2 * w * d).sum(1)), rtol=1e-5)
  np.testing.assert_allclose(metrics["discrepancy"], d.mean(), rtol=1e-5)
  # Up to epoch dynamic_start_epoch + 1 the position weights act alone.
  early, _, _ = _jit_loss(rd, users, student, teacher, num_items=30, seed=4, epoch=2)
  np.testing.assert_allclose(early, np.mean(((s - t) ** 2 * w).sum(1)), rtol=1e-5)


def test_interaction_negatives_are_unrated_once_prepared():
  rated = _rated()
  term = distillers.make_distiller("interaction", num_negatives=50).prepare(_data(rated))
  zero = lambda u, i: i * 0.0
  _, _, seen = _jit_loss(term, jnp.arange(3), zero, zero, student=_outputs(np.zeros((3, 1)), np.zeros((3, 1))),
                         seed=5)
  assert not rated[np.arange(3)[:, None], seen[0].reshape(3, 50)].any()


# ----------------------------------------------------------------------------------------------------------
# Short runs on the small rating data.


def _steps(config, dataset, teachers=None, num_steps=3):
  """`(run, initial state, final state, last metrics)`: the run's builder (prepare on the training split) and its
  jitted step, a few steps on one device; no evaluation or export, which the full loop's tests cover."""
  from kd_jax import data as kd_data
  from kd_jax.train import run as kd_run
  from kd_jax.train import sharding
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = kd_run.build_run(config, dataset, mesh=mesh, teachers=teachers)
  state = kd_run.init_state(run)
  first = jax.device_get(state)  # the step donates its input state
  step = kd_run.make_step(run, state, 0)
  for i in range(num_steps):
    batch = sharding.shard_batch(kd_data.train_batch(dataset.train, 32, seed=0, step=i), mesh)
    state, metrics = step(state, batch, run.teacher_variables)
  return run, first, jax.device_get(state), jax.device_get(metrics)


def test_new_options_train_from_a_teacher_through_the_runs_own_step():
  import chex
  from kd_jax import data as kd_data
  from kd_jax import models
  from kd_jax.train.teachers import Teachers
  dataset = kd_data.from_ratings(*_small_ratings())
  loss = {"supervised": {"weight": 1.0},
          "td": {"weight": 0.01, "form": "hierarchical", "num_groups": 3, "anneal_epochs": 2},
          "cd": {"weight": 0.5, "mode": "student_guided", "num_samples": 3, "candidates": 8, "lam": 2.0},
          "rd": {"weight": 0.5, "k": 3, "mu": 0.1, "num_dynamic_samples": 10, "dynamic_start_epoch": 0}}
  module = models.create_model("mf_large", num_users=40, num_items=30)  # a random teacher
  sample = {"user": np.zeros(1, np.int32), "item": np.zeros(1, np.int32)}
  teachers = (Teachers((module,), (1.0,), (False,)), (module.init(jax.random.PRNGKey(7), sample),))
  run, first, state, metrics = _steps(_rating_config(loss=loss, **{"student.model": "mf_small"}), dataset, teachers)
  # The sampling terms hold the users' training ratings, which their draws avoid.
  expected = tuple(tuple(int(i) for i in np.flatnonzero(row)) for row in kd_data.rated_matrix(dataset))
  terms = {name: term for name, _, term in run.distillers[0].terms}
  assert terms["cd"].rated_items == expected and terms["rd"].rated_items == expected
  names = ("loss", "td/entity", "td/group", "td/assignment", "cd/loss", "rd/loss", "rd/discrepancy")
  assert all(np.isfinite(float(metrics[k])) for k in names) and float(metrics["cd/loss"]) > 0
  # The group assignment (selection networks and experts) trains with the student.
  with pytest.raises(AssertionError):
    chex.assert_trees_all_close(state.distiller_params["td"], first.distiller_params["td"])


def test_bd_trains_both_directions_with_their_own_settings_under_the_mutual_scheme():
  from kd_jax import data as kd_data
  dataset = kd_data.from_ratings(*_small_ratings())
  config = _rating_config(loss={"supervised": {"weight": 1.0},
                                "bd": {"weight": 0.5, "num_candidates": 10, "num_samples": 3, "s2t_num_samples": 2,
                                       "s2t_epsilon": 1.0, "s2t_scale": 0.5}},
                          **{"scheme": "mutual", "peers": ({"model": "mf_large"},), "student.model": "mf_small"})
  with warnings.catch_warnings():
    # The mutual run prepares BD: its candidates are unrated items, and no "not prepared" warning.
    warnings.filterwarnings("error", message=".*was not prepared")
    run, first, state, metrics = _steps(config, dataset)
  expected = tuple(tuple(int(i) for i in np.flatnonzero(row)) for row in kd_data.rated_matrix(dataset))
  assert {name: term for name, _, term in run.distillers[0].terms}["bd"].rated_items == expected
  assert all(np.isfinite(float(metrics[k])) for k in ("student/bd/loss", "peer1/bd/loss"))
  # The peer (mf_large) learns by the exp form, in which every draw carries the loss; the student by tanh.
  assert float(metrics["peer1/bd/sampled"]) == 1.0 and 0.0 <= float(metrics["student/bd/sampled"]) <= 1.0
  for name in ("student", "peer1"):
    assert not np.allclose(state.params[name]["user_factors"]["embedding"],
                           first.params[name]["user_factors"]["embedding"])
