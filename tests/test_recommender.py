"""Recommenders with explicit ratings (METHODS.md item 15b): NDCG@k, the rating task's NDCG, the synthetic and
MovieLens rating data, the rating models, the recommender distillation losses and distillers, and short runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kd_jax import metrics
from kd_jax.errors import KDJaxError


# ----------------------------------------------------------------------------------------------------------
# NDCG@k.


def _ndcg_loop(scores, relevance, k, mask):
  """A direct per-user loop of the textbook definition."""
  values = []
  for s, r, m in zip(scores, relevance, mask):
    items = [i for i in range(len(s)) if m[i]]
    ranked = sorted(items, key=lambda i: (-s[i], i))[:k]
    dcg = sum(r[i] / math.log2(pos + 2) for pos, i in enumerate(ranked))
    ideal = sorted((r[i] for i in items), reverse=True)[:k]
    idcg = sum(g / math.log2(pos + 2) for pos, g in enumerate(ideal))
    if idcg > 0:
      values.append(dcg / idcg)
  return float(np.mean(values)) if values else float("nan")


def test_ndcg_known_values():
  # One user, relevance 3, 2, 0 ranked in the order 2, 3, 0 by the scores.
  scores = np.array([[0.9, 0.8, 0.1]])
  relevance = np.array([[2.0, 3.0, 0.0]])
  dcg = 2.0 / 1.0 + 3.0 / math.log2(3)
  idcg = 3.0 + 2.0 / math.log2(3)
  assert metrics.ndcg_at_k(scores, relevance, k=10) == pytest.approx(dcg / idcg)
  assert metrics.ndcg_at_k(scores, relevance, k=1) == pytest.approx(2.0 / 3.0)
  # A perfect ordering is 1; masking the misranked item leaves a perfect ranking of the rest.
  assert metrics.ndcg_at_k(relevance, relevance, k=2) == pytest.approx(1.0)
  assert metrics.ndcg_at_k(scores, relevance, k=10, mask=[[False, True, True]]) == pytest.approx(1.0)
  # A user without relevant items is left out of the mean; none qualifying gives NaN.
  two = metrics.ndcg_per_user(np.vstack([scores, scores]), np.vstack([relevance, np.zeros((1, 3))]))
  assert np.isnan(two[1]) and two[0] == pytest.approx(dcg / idcg)
  assert math.isnan(metrics.ndcg_at_k(scores, np.zeros((1, 3))))


def test_ndcg_matches_a_direct_loop_with_masks_and_ties():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 4, size=(30, 12)).astype(float)  # many ties: the lower index ranks first
  relevance = rng.integers(0, 6, size=(30, 12)).astype(float)
  mask = rng.random((30, 12)) < 0.6
  for k in (1, 3, 10, 50):
    assert metrics.ndcg_at_k(scores, relevance, k=k, mask=mask) == pytest.approx(_ndcg_loop(scores, relevance, k, mask))


def test_ndcg_refuses_bad_input():
  with pytest.raises(KDJaxError, match="one shape"):
    metrics.ndcg_at_k(np.zeros((2, 3)), np.zeros((2, 4)))
  with pytest.raises(KDJaxError, match="mark unknown items False"):
    metrics.ndcg_at_k(np.zeros((1, 2)), np.array([[1.0, np.nan]]))
  assert metrics.ndcg_at_k(np.zeros((1, 2)), np.array([[1.0, np.nan]]), mask=[[True, False]]) == 1.0
  with pytest.raises(KDJaxError, match="positive integer"):
    metrics.ndcg_at_k(np.zeros((1, 2)), np.ones((1, 2)), k=0)


# ----------------------------------------------------------------------------------------------------------
# The rating task's NDCG@10.


def _small_ratings(seed=0, users=40, items=30, density=0.4):
  rng = np.random.default_rng(seed)
  u, v = rng.normal(size=(users, 3)), rng.normal(size=(items, 3))
  full = np.clip(np.round(3.0 + 0.8 * (u @ v.T) + 0.3 * rng.normal(size=(users, items))), 1.0, 5.0)
  pairs = np.argwhere(rng.random((users, items)) < density)
  return pairs[:, 0], pairs[:, 1], full[pairs[:, 0], pairs[:, 1]]


def test_held_out_ndcg_ranks_each_users_held_out_items():
  from kd_jax.tasks.rating import held_out_ndcg
  rng = np.random.default_rng(1)
  users = rng.integers(0, 8, size=60)
  ratings = rng.integers(1, 6, size=60).astype(float)
  predictions = rng.normal(size=60)
  # Reference: a dense [user, item-slot] layout through the direct loop, users with >= 2 ratings only.
  rows = [np.flatnonzero(users == u) for u in range(8) if (users == u).sum() >= 2]
  width = max(len(r) for r in rows)
  scores, gains, mask = np.zeros((len(rows), width)), np.zeros((len(rows), width)), np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    scores[i, :len(r)], gains[i, :len(r)], mask[i, :len(r)] = predictions[r], ratings[r], True
  assert held_out_ndcg(users, ratings, predictions) == pytest.approx(_ndcg_loop(scores, gains, 10, mask))
  # The true ratings rank perfectly; a user with one rating only does not count.
  assert held_out_ndcg(users, ratings, ratings) == pytest.approx(1.0)
  assert math.isnan(held_out_ndcg(np.arange(5), np.ones(5), np.zeros(5)))


def test_rating_evaluation_reports_ndcg_exactly_whatever_the_batch_size(tmp_path):
  from kd_jax import data as kd_data
  from kd_jax.tasks.rating import held_out_ndcg
  from kd_jax.train.loop import train_and_evaluate
  from helpers import small_config
  dataset = kd_data.from_ratings(*_small_ratings())
  results = []
  for eval_batch in (8, 256):
    config = small_config(**{"task": "rating", "student.model": "mf", "loss": {"supervised": {"weight": 1.0}},
                             "optim.name": "adamw", "optim.lr": 0.01, "max_steps": 3, "eval_batch_size": eval_batch})
    results.append(train_and_evaluate(config, str(tmp_path / f"b{eval_batch}"), dataset=dataset))
  assert results[0]["test_ndcg@10"] == pytest.approx(results[1]["test_ndcg@10"], abs=1e-12)
  assert 0.0 < results[0]["test_ndcg@10"] <= 1.0 and "test ndcg@10" in results[0]["table"]
  assert results[0]["test_rmse"] == pytest.approx(results[1]["test_rmse"], rel=1e-6)
  # The number is the NDCG of the exported model's predictions on the test split.
  import jax
  from kd_jax import models
  from kd_jax.train import checkpoint as ckpt
  model = models.create_model("mf", num_users=dataset.info["num_users"], num_items=dataset.info["num_items"])
  test = dataset.test.arrays
  inputs = {"user": test["user"][:1], "item": test["item"][:1]}
  variables = ckpt.load_exported_model(str(tmp_path / "b8"), model, inputs)
  predictions = np.asarray(model.apply(variables, {"user": test["user"], "item": test["item"]}).prediction)
  assert results[0]["test_ndcg@10"] == pytest.approx(held_out_ndcg(test["user"], test["rating"], predictions),
                                                     abs=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Rating data.


def test_synthetic_ratings_are_deterministic_on_a_1_to_5_scale_and_missing_not_at_random():
  from kd_jax import data as kd_data
  full, observed = kd_data.synthetic_rating_matrix()
  again, observed_again = kd_data.synthetic_rating_matrix()
  np.testing.assert_array_equal(full, again)
  np.testing.assert_array_equal(observed, observed_again)
  assert full.shape == (600, 400) and set(np.unique(full)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
  assert 0.04 < observed.mean() < 0.06 and observed.sum(1).min() >= 5
  # Missing not at random: users rate what they like (observed mean above the full matrix's) and popular items.
  assert full[observed].mean() > full.mean() + 0.3
  counts = np.sort(observed.sum(0))[::-1]
  assert counts[:40].sum() > 0.25 * counts.sum()  # the top 10% of the items hold over a quarter of the ratings
  d = kd_data.load_rating_dataset("synthetic_ratings", seed=3)
  assert d.task == "rating" and d.info["num_users"] == 600 and d.info["num_items"] == 400
  assert len(d.train) + len(d.val) + len(d.test) == observed.sum()
  # The test split does not depend on the run seed; the validation split does.
  other = kd_data.load_rating_dataset("synthetic_ratings", seed=4)
  np.testing.assert_array_equal(d.test.arrays["rating"], other.test.arrays["rating"])
  assert not np.array_equal(d.val.arrays["user"], other.val.arrays["user"])
  rated = kd_data.rated_matrix(d)
  assert rated.sum() == len(d.train) and rated[d.train.arrays["user"], d.train.arrays["item"]].all()


def test_movielens_folder_in_both_formats(tmp_path):
  from kd_jax import data as kd_data
  ml100k = tmp_path / "ml-100k"
  ml100k.mkdir()
  lines = [(196, 242, 3), (186, 302, 3), (22, 377, 1), (244, 51, 2), (166, 346, 1), (298, 474, 4), (196, 51, 5)] * 3
  (ml100k / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t881250949\n" for u, i, r in lines))
  d = kd_data.load_rating_dataset("movielens", data_dir=str(ml100k), val_fraction=0.0, test_fraction=0.2)
  assert d.name == "movielens-100k" and d.info == {"num_users": 6, "num_items": 6, "mean_rating": d.info["mean_rating"]}
  users, items, ratings, _ = kd_data.load_movielens(str(ml100k))
  # Dense re-indexing in increasing order of the file's ids: user 22 -> 0, 196 -> 3; item 51 -> 0, 474 -> 5.
  assert users[:3].tolist() == [3, 2, 0] and items[[3, 5]].tolist() == [0, 5] and ratings[6] == 5.0
  latest = tmp_path / "ml-latest-small"
  latest.mkdir()
  (latest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
                                      "7,31,4.5,1260759182\n7,1061,0.5,1260759185\n")
  users, items, ratings, name = kd_data.load_movielens(str(latest))
  assert name == "movielens" and users.tolist() == [0, 0, 1, 1] and items.tolist() == [0, 1, 0, 2]
  np.testing.assert_array_equal(ratings, [2.5, 3.0, 4.5, 0.5])


@pytest.mark.parametrize("content,name,message", [
    (None, None, "holds neither u.data nor ratings.csv"),
    ("1\t2\n", "u.data", "is not a MovieLens ratings file"),
    ("1\t2.5\t3\t0\n", "u.data", "line 1: item ids must be integers"),
    ("1\t2\t3\t0\n2\t2\tnan\t0\n", "u.data", "line 2: ratings must be finite"),
    ("user,item,rating\n1,2,3\n", "ratings.csv", "must start with the header userId,movieId,rating"),
])
def test_movielens_errors_say_what_to_put_where(tmp_path, content, name, message):
  from kd_jax import data as kd_data
  if name:
    (tmp_path / name).write_text(content)
  with pytest.raises(KDJaxError, match=message) as info:
    kd_data.load_rating_dataset("movielens", data_dir=str(tmp_path))
  if content is None:
    assert "config.data.data_dir" in str(info.value) and "u.data" in str(info.value)


def test_rating_data_errors_exit_2_through_the_cli(tmp_path, capsys):
  import os
  from kd_jax import cli
  from kd_jax import data as kd_data
  repo = os.path.join(os.path.dirname(__file__), os.pardir)
  base = ["train", "--config", os.path.join(repo, "experiments/rec_student.py"), "--workdir", str(tmp_path / "run")]
  assert cli.main(base + ["--config.data.name=movielens"]) == 2
  assert "config.data.data_dir, which is empty" in capsys.readouterr().err
  assert cli.main(base + ["--config.data.name=digits"]) == 2
  assert "Unknown rating dataset 'digits'" in capsys.readouterr().err
  with pytest.raises(KDJaxError, match="ids exceed num_users"):
    kd_data.from_ratings([0, 5], [0, 1], [3.0, 4.0], num_users=3)
  with pytest.raises(KDJaxError, match="ratings must be finite"):
    kd_data.from_ratings([0, 1], [0, 1], [3.0, np.nan])


# ----------------------------------------------------------------------------------------------------------
# Rating models.


@pytest.mark.parametrize("name, user_dim", [("mf_large", 100), ("mf_small", 10), ("neumf_large", 64),
                                            ("neumf_small", 16)])
def test_rating_models_share_one_output_layout(name, user_dim):
  import jax
  import jax.numpy as jnp
  from kd_jax import models
  model = models.create_model(name, num_users=7, num_items=5)
  x = {"user": jnp.array([0, 3, 6]), "item": jnp.array([4, 0, 2])}
  variables = model.init(jax.random.PRNGKey(0), x)
  out = model.apply(variables, x)
  assert out.prediction.shape == (3,)
  assert [s.shape for s in out.stages] == [(3, user_dim), (3, user_dim)]
  # stages[0] depends on the user only, stages[1] on the item only.
  swapped = model.apply(variables, {"user": jnp.array([0, 3, 6]), "item": jnp.array([1, 1, 1])})
  np.testing.assert_array_equal(swapped.stages[0], out.stages[0])
  assert not np.allclose(swapped.stages[1], out.stages[1])
  with pytest.raises(KDJaxError, match="mlp_layers"):
    models.create_model("neumf", num_users=3, num_items=3, mlp_layers=())


# ----------------------------------------------------------------------------------------------------------
# The pure losses against NumPy.


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_ranking_distillation_and_pointwise_distillation_by_hand():
  from kd_jax import losses
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
  w = np.exp(-np.arange(1, 5) / 2.0)
  w /= w.sum()
  np.testing.assert_allclose(losses.ranking_distillation(s, t, lam=2.0), np.mean(((s - t) ** 2 * w).sum(1)), rtol=1e-5)
  np.testing.assert_allclose(losses.ranking_distillation(s, t, lam=2.0, form="logistic"),
                             np.mean((-np.log(_sigmoid(s)) * w).sum(1)), rtol=1e-5)
  # K = 1: plain squared error; λ → 0 puts all the weight on the first item.
  np.testing.assert_allclose(losses.ranking_distillation(s[:, :1], t[:, :1]), np.mean((s[:, 0] - t[:, 0]) ** 2), rtol=1e-5)
  np.testing.assert_allclose(losses.ranking_distillation(s, t, lam=1e-3), np.mean((s[:, 0] - t[:, 0]) ** 2), rtol=1e-5)
  mask = rng.random((3, 4)) < 0.5
  np.testing.assert_allclose(losses.pointwise_distillation(s, t, mask=mask), ((s - t) ** 2)[mask].mean(), rtol=1e-5)
  q = _sigmoid(t)
  bce = -(q * np.log(_sigmoid(s)) + (1 - q) * np.log(1 - _sigmoid(s)))
  np.testing.assert_allclose(losses.pointwise_distillation(s, t, form="bce"), bce.mean(), rtol=1e-5)
  assert float(losses.pointwise_distillation(s, t, mask=np.zeros((3, 4)))) == 0.0


def _rrd_loop(s, u, m):
  total = 0.0
  for row_s, row_u, row_m in zip(s, u, m):
    rest = sum(np.exp(x) for x, keep in zip(row_u, row_m) if keep)
    total -= sum(row_s[k] - np.log(np.exp(row_s[k:]).sum() + rest) for k in range(len(row_s)))
  return total


def test_relaxed_ranking_matches_the_plackett_luce_formula():
  from kd_jax import losses
  rng = np.random.default_rng(1)
  s, u = rng.normal(size=(3, 4)) * 3, rng.normal(size=(3, 6)) * 3
  m = rng.random((3, 6)) < 0.6
  m[2] = False  # a row without uninteresting items: the list likelihood of the interesting ones alone
  np.testing.assert_allclose(losses.relaxed_ranking(s, u), _rrd_loop(s, u, np.ones_like(m)), rtol=1e-5)
  np.testing.assert_allclose(losses.relaxed_ranking(s, u, uninteresting_mask=m), _rrd_loop(s, u, m), rtol=1e-5)
  np.testing.assert_allclose(losses.relaxed_ranking(s, u, reduction="mean"), _rrd_loop(s, u, np.ones_like(m)) / 3,
                             rtol=1e-5)
  # The reference's form, `-(S1.sum(1) - (S1.flip(-1).exp().cumsum(1) + S2.exp().sum(1)).log().sum(1)).sum()`,
  # as written there (its flip makes the cumulative sum run from the last item, as the formula's tail does).
  below = np.log(np.cumsum(np.exp(s[:, ::-1]), axis=1) + np.exp(u).sum(1, keepdims=True)).sum(1)
  np.testing.assert_allclose(losses.relaxed_ranking(s, u), -(s.sum(1) - below).sum(), rtol=1e-5)


def test_distillation_experts_topology_and_interaction_by_hand():
  from kd_jax import losses
  rng = np.random.default_rng(2)
  probs = rng.dirichlet(np.ones(3), size=4)
  g = rng.gumbel(size=(4, 3))
  z = np.exp((np.log(probs + 1e-10) + g) / 0.5)
  z /= z.sum(1, keepdims=True)
  np.testing.assert_allclose(losses.expert_selection(probs, g, 0.5), z, rtol=1e-5)
  hard = np.asarray(losses.expert_selection(probs, g, 1e-10))
  np.testing.assert_array_equal(hard, np.eye(3)[np.argmax(np.log(probs + 1e-10) + g, 1)])
  out, t = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 5))
  mixed = np.einsum("bed,be->bd", out, z)
  np.testing.assert_allclose(losses.distillation_experts(out, z, t), ((t - mixed) ** 2).sum(), rtol=1e-5)
  np.testing.assert_allclose(losses.distillation_experts(out, z, t, reduction="mean"), ((t - mixed) ** 2).sum(1).mean(),
                             rtol=1e-5)
  s, tt = rng.normal(size=(6, 3)), rng.normal(size=(6, 8))
  cos = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
  np.testing.assert_allclose(losses.topology_distillation(s, tt), ((cos(tt) - cos(s)) ** 2).sum(), rtol=1e-5)
  assert float(losses.topology_distillation(tt, tt)) < 1e-10  # same representations: no loss
  np.testing.assert_allclose(losses.rank_discrepancy_probability(np.array([5.0, 1.0]), np.array([1.0, 5.0]), 0.5),
                             [np.tanh(2.0), 0.0], rtol=1e-6)
  pos, neg = rng.normal(size=4), rng.normal(size=(4, 2))
  np.testing.assert_allclose(losses.interaction_log_loss(pos, neg),
                             np.mean(-np.log(_sigmoid(pos)) - np.log(1 - _sigmoid(neg)).sum(1)), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Distillers: which pairs they read.


def _fake_forward(student_fn, teacher_fns):
  """A `ctx.forward` on id pairs: predictions are functions of (user, item) arrays."""
  from kd_jax.models.outputs import ModelOutput
  out = lambda p: ModelOutput(prediction=p, stages=(), preact_stages=(), embedding=p[:, None])

  def forward(x):
    teachers = tuple(out(f(x["user"], x["item"])) for f in teacher_fns)
    return out(student_fn(x["user"], x["item"])), teachers[0] if len(teachers) == 1 else teachers

  return forward


def test_top_unrated_excludes_rated_items_and_breaks_ties_by_id():
  from kd_jax.distillers.recommender import top_unrated
  scores = np.array([[0.1, 0.9, 0.5, 0.5, 0.2], [3.0, 2.0, 1.0, 0.0, -1.0]])
  rated = np.array([[False, True, False, False, False], [True, False, False, False, False]])
  assert top_unrated(scores, rated, 3) == ((2, 3, 4), (1, 2, 3))
  with pytest.raises(KDJaxError, match="has only 4 unrated items"):
    top_unrated(scores, rated, 5)


def test_rd_and_duet_score_the_prepared_items_of_each_rows_user():
  import jax.numpy as jnp
  from kd_jax import distillers, losses
  from kd_jax.distillers import Context, TrainingData
  scores = np.arange(12, dtype=float).reshape(3, 4)  # the teacher prefers higher item ids
  rated = np.zeros((3, 4), bool)
  rated[:, 3] = True
  data = TrainingData(lambda: None, np.zeros(1), 0, rated, lambda k: scores if k == 0 else -scores)
  rd = distillers.make_distiller("rd", k=2, lam=1.0).prepare(data)
  assert rd.top_items == ((2, 1), (2, 1), (2, 1))
  student = lambda u, i: (u * 10 + i).astype(jnp.float32)
  teacher = lambda u, i: (u * 10 + i).astype(jnp.float32) + 1.0 + i
  batch = {"user": jnp.array([0, 2]), "item": jnp.array([3, 3])}
  value, _, _ = rd.loss({}, None, None, batch, Context(forward=_fake_forward(student, [teacher])))
  expected_items = jnp.array([[2, 1], [2, 1]])
  expected = losses.ranking_distillation(student(batch["user"][:, None], expected_items),
                                         teacher(batch["user"][:, None], expected_items), lam=1.0)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  # DUET: the selector (the term's teacher 1) ranks, the rater (teacher 0) gives the targets.
  duet = distillers.make_distiller("duet", k=2).prepare(data)
  assert duet.top_items == ((0, 1), (0, 1), (0, 1))  # by -scores: the lowest ids first
  value, _, _ = duet.loss({}, None, None, batch, Context(forward=_fake_forward(student, [teacher, student])))
  items = jnp.array([[0, 1], [0, 1]])
  np.testing.assert_allclose(value, losses.pointwise_distillation(student(batch["user"][:, None], items),
                                                                  teacher(batch["user"][:, None], items)), rtol=1e-6)
  with pytest.raises(KDJaxError, match="duet reads two teachers"):
    duet.init(None, None, _fake_forward(student, [teacher])({"user": batch["user"], "item": batch["item"]})[1], batch)


def test_a_weighted_sum_gives_a_term_its_picked_teachers_in_prepare_and_forward():
  import jax.numpy as jnp
  from kd_jax import distillers
  from kd_jax.distillers import Context, TrainingData
  total = distillers.from_config({"duet": {"weight": 1.0, "k": 1, "teacher": (2, 0)}})
  scores = [np.array([[1.0, 2.0, 3.0]]), None, np.array([[3.0, 2.0, 1.0]])]
  data = TrainingData(lambda: None, np.zeros(1), 0, np.zeros((1, 3), bool), lambda k: scores[k])
  prepared = total.prepare(data)
  # Its teacher 1 (the selector) is the run's teacher 0, which prefers item 2.
  assert prepared.terms[0][2].top_items == ((2,),)
  run_teachers = [lambda u, i: i * 1.0, lambda u, i: i * 100.0, lambda u, i: i * 10.0]
  batch = {"user": jnp.array([0]), "item": jnp.array([0])}
  value, _, _ = prepared.loss({}, None, None, batch,
                              Context(forward=_fake_forward(lambda u, i: i * 0.0, run_teachers)))
  np.testing.assert_allclose(value, 20.0 ** 2)  # the rater is the run's teacher 2: target 10 · item 2
  # A term given fewer teachers than it reads is told so.
  with pytest.raises(KDJaxError, match="reads its teacher 1, but its `teacher` key \\(0\\) gives it 1"):
    distillers.from_config({"duet": {"weight": 1.0, "k": 1, "teacher": 0}}).prepare(data)


def test_factor_l2_is_the_mean_squared_norm_of_the_batchs_factors():
  import jax.numpy as jnp
  from kd_jax import distillers
  from kd_jax.models.outputs import ModelOutput
  p, q = np.arange(6.0).reshape(3, 2), np.ones((3, 2))
  out = ModelOutput(prediction=jnp.zeros(3), stages=(jnp.asarray(p), jnp.asarray(q)), preact_stages=(),
                    embedding=jnp.zeros((3, 2)))
  value, _, _ = distillers.make_distiller("factor_l2")({}, out, None, {})
  np.testing.assert_allclose(value, np.mean((p ** 2).sum(1) + (q ** 2).sum(1)))


def test_bd_samples_only_items_the_other_network_ranks_higher():
  import jax
  import jax.numpy as jnp
  from kd_jax import distillers, tasks
  from kd_jax.distillers import Context
  bd = distillers.make_distiller("bd", num_candidates=20, num_samples=5, epsilon=10.0, direction="t2s")
  own = lambda u, i: (i % 7).astype(jnp.float32)
  other = lambda u, i: -(i % 7).astype(jnp.float32)
  seen = []

  def forward(x):
    seen.append(x["item"])
    return _fake_forward(own, [other])(x)

  task = dataclasses_replace(tasks.get_task("rating"), num_items=50)
  batch = {"user": jnp.arange(8), "item": jnp.zeros(8, jnp.int32)}
  value, metrics, _ = bd.loss({}, None, None, batch, Context(rng=jax.random.PRNGKey(0), forward=forward, task=task))
  candidates, picked = np.asarray(seen[0]).reshape(8, 20), np.asarray(seen[1]).reshape(8, 5)
  # Every sampled item the learner scores lower than some candidate that the other scores lower: a
  # positive discrepancy. Sampled items with p = 0 are masked out of the loss (the "sampled" share).
  for row_c, row_p in zip(candidates, picked):
    assert set(row_p) <= set(row_c)
  own_s, other_s = own(0, jnp.asarray(picked)), other(0, jnp.asarray(picked))
  assert 0 < float(metrics["sampled"]) <= 1
  assert np.isfinite(float(value)) and float(value) > 0
  assert float(jnp.max(own_s)) < 6  # the learner's best items (i % 7 == 6) are never the other's better ones


def dataclasses_replace(obj, **changes):
  import dataclasses
  return dataclasses.replace(obj, **changes)


# ----------------------------------------------------------------------------------------------------------
# Runs: teachers, DUET's two teachers, BD under the mutual scheme, resume, 8 devices.


def _rating_config(**overrides):
  from helpers import small_config
  import ml_collections
  loss = overrides.pop("loss", {"supervised": {"weight": 1.0}, "factor_l2": {"weight": 0.05}})
  c = small_config(**{"task": "rating", "student.model": "mf", "optim.name": "adamw", "optim.lr": 0.01,
                      "optim.weight_decay": 0.0, "max_steps": 3, **overrides})
  c.loss = ml_collections.ConfigDict(loss)
  return c


@pytest.fixture(scope="module")
def rec_runs(tmp_path_factory):
  """The small rating data, a rating teacher and a preference ("rated or not") teacher, a few steps each."""
  from kd_jax import data as kd_data
  from kd_jax.train.loop import train_and_evaluate
  dataset = kd_data.from_ratings(*_small_ratings())
  root = tmp_path_factory.mktemp("rec")
  teacher, preference = str(root / "teacher"), str(root / "preference")
  train_and_evaluate(_rating_config(**{"student.model": "mf_large"}), teacher, dataset=dataset)
  train_and_evaluate(_rating_config(**{"student.model": "mf_large"},
                                    loss={"interaction": {"weight": 1.0, "num_negatives": 2}}), preference,
                     dataset=dataset)
  return dataset, teacher, preference


def _exported(workdir):
  import jax
  import os
  import orbax.checkpoint as ocp
  return jax.tree.map(np.asarray, ocp.StandardCheckpointer().restore(os.path.join(workdir, "model")))


def test_duet_reads_the_preference_teachers_picks_and_the_rating_teachers_ratings(tmp_path, rec_runs):
  import json
  import jax
  import jax.numpy as jnp
  from kd_jax import models
  from kd_jax.distillers.recommender import top_unrated
  from kd_jax import data as kd_data
  from kd_jax.train import checkpoint as ckpt
  from kd_jax.train.loop import train_and_evaluate
  dataset, teacher, preference = rec_runs
  config = _rating_config(loss={"supervised": {"weight": 1.0}, "duet": {"weight": 0.5, "k": 4, "teacher": (0, 1)}},
                          **{"teacher.workdir": teacher, "teacher.extra_workdirs": (preference,)})
  result = train_and_evaluate(config, str(tmp_path / "duet"), dataset=dataset)
  assert np.isfinite(result["test_rmse"]) and np.isfinite(result["test_ndcg@10"])
  # The stored picks are the preference teacher's 4 best unrated items of every user.
  with open(tmp_path / "duet" / "prepared.json") as f:
    picks = json.load(f)["fields"]["duet"]["top_items"]
  module = models.create_model("mf_large", num_users=40, num_items=30)
  sample = {"user": jnp.zeros(1, jnp.int32), "item": jnp.zeros(1, jnp.int32)}
  variables = ckpt.load_exported_model(preference, module, sample)
  users, items = np.divmod(np.arange(40 * 30), 30)
  scores = np.asarray(module.apply(variables, {"user": users, "item": items}).prediction).reshape(40, 30)
  assert [tuple(p) for p in picks] == list(top_unrated(scores, kd_data.rated_matrix(dataset), 4))
  # One teacher only: DUET says which two to give it.
  config.teacher.extra_workdirs = ()
  with pytest.raises(KDJaxError, match="ranks items by teacher 1, but the run has 1 teacher"):
    train_and_evaluate(config, str(tmp_path / "one"), dataset=dataset)


def test_a_cd_run_resumes_bit_identically(tmp_path, rec_runs):
  from kd_jax.train.loop import train_and_evaluate
  import chex
  dataset, teacher, _ = rec_runs
  loss = {"supervised": {"weight": 1.0}, "cd": {"weight": 0.5, "num_samples": 3, "candidates": 8, "lam": 2.0}}
  student = lambda steps: _rating_config(loss=loss, max_steps=steps, **{"teacher.workdir": teacher,
                                                                        "student.model": "mf_small"})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(student(8), straight, dataset=dataset)
  train_and_evaluate(student(4), resumed, dataset=dataset)
  result = train_and_evaluate(student(8), resumed, dataset=dataset)
  assert result["steps"] == 8
  chex.assert_trees_all_equal(_exported(resumed), _exported(straight))


def test_bd_trains_the_student_and_its_peer_together(tmp_path, rec_runs):
  from kd_jax.train.loop import train_and_evaluate
  dataset, _, _ = rec_runs
  config = _rating_config(loss={"supervised": {"weight": 1.0},
                                "bd": {"weight": 0.5, "num_candidates": 10, "num_samples": 3}},
                          **{"scheme": "mutual", "peers": ({"model": "mf_large"},), "student.model": "mf_small"})
  result = train_and_evaluate(config, str(tmp_path / "bd"), dataset=dataset)
  rows = {r["network"]: r for r in result["networks"]}
  assert set(rows) == {"student", "peer1"} and all(np.isfinite(r["test"]["rmse"]) for r in rows.values())


def test_eight_devices_match_one_for_the_recommender_distillers(rec_runs):
  import chex
  import jax
  import ml_collections
  from kd_jax import data as kd_data
  from kd_jax import models
  from kd_jax.train import run as kd_run
  from kd_jax.train import sharding
  from kd_jax.train.teachers import Teachers
  assert jax.device_count() == 8
  dataset = rec_runs[0]
  config = _rating_config(loss={
      "supervised": {"weight": 1.0},
      "rd": {"weight": 0.5, "k": 3, "teacher": 0},
      "rrd": {"weight": 0.01, "num_interesting": 3, "candidates": 6, "num_uninteresting": 5, "teacher": 0},
      "de": {"weight": 0.01, "num_experts": 3, "teacher": 0},
      "td": {"weight": 0.01, "teacher": 0},
      "duet": {"weight": 0.5, "k": 3, "teacher": (0, 1)}}, **{"student.model": "mf_small"})
  sample = {"user": np.zeros(1, np.int32), "item": np.zeros(1, np.int32)}
  modules = [models.create_model(n, num_users=40, num_items=30) for n in ("mf_large", "neumf_small")]
  teachers = (Teachers(tuple(modules), (1.0, 1.0), (False, False)),
              tuple(m.init(jax.random.PRNGKey(5 + i), sample) for i, m in enumerate(modules)))

  def steps(devices):
    mesh = sharding.make_mesh(devices)
    run = kd_run.build_run(config, dataset, mesh=mesh, teachers=teachers)
    state = kd_run.init_state(run)
    step = kd_run.make_step(run, state, 0)
    out = []
    for i in range(3):
      batch = sharding.shard_batch(kd_data.train_batch(dataset.train, 32, seed=0, step=i), mesh)
      state, metrics = step(state, batch, run.teacher_variables)
      out.append([float(metrics[k]) for k in ("loss", "rd/loss", "rrd/loss", "de/loss", "td/loss", "duet/loss")])
    return np.array(out), jax.device_get(state)

  one, state_1 = steps(jax.devices()[:1])
  eight, state_8 = steps(jax.devices())
  assert np.all(np.isfinite(one)) and np.all(one[:, 1:] > 0)
  np.testing.assert_allclose(eight, one, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(state_8.params, state_1.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(state_8.distiller_params, state_1.distiller_params, rtol=1e-5, atol=1e-6)
