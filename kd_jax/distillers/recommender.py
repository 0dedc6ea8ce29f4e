"""Recommender distillers for explicit ratings (task 'rating', METHODS.md item 15b): RD, CD, DE, RRD, TD, BD,
DUET, and the "rated or not" objective of DUET's first teacher.

The pure losses are in `kd_jax.losses.recommender`; a distiller here decides which (user, item) pairs the loss
reads. A batch holds observed ratings `{'user', 'item', 'rating'}`; the ranking-based methods need the models'
predictions for other items of the batch's users. Two mechanisms provide them:

* **Ranked candidates, fixed before training** (RD, CD, RRD, DUET). The frozen teacher ranks every item a
  user has not rated in the training split, once: `prepare` reads `TrainingData.teacher_scores(k)` (teacher
  k's predicted rating of every (user, item) pair, [num_users, num_items]) and `TrainingData.rated`, and keeps
  each user's `candidates` best unrated items in the hyper-parameter `top_items` ([num_users][candidates]
  item ids, best first). The run stores it in the workdir's `prepared.json`, so a resumed run reads the same
  lists. This is what the reference codes do (rank_distill's `_get_teacher_topk`, DE-RRD's
  `teacher_topk_dict` are computed once from the frozen teacher). "Unrated" is exact here: the training
  split's ratings are excluded.
* **Pairs scored inside the step** (every method reads some): `ctx.forward({'user': u, 'item': i})` applies
  the student (with gradient) and the teachers (constants) to any batch of ids at this step's parameters; the
  helper `score_pairs` lays the [B·S] pairs out as [B, S] per batch row. Items drawn in the step (RRD's
  uninteresting items, CD's student-guided samples, RD's rank-estimation samples, BD's candidates, negatives of
  the interaction objective) come from `ctx.rng`, a pure function of the step, so a resumed run draws the same.
  They are drawn among the user's *unrated* items, as the reference codes sample from unobserved items: `prepare`
  stores every user's rated items of the training split (`rated_items`, from `TrainingData.rated`) and the step
  draws around them (`draw_unrated`, `unrated_mask`); a training run prepares them under every scheme, with or
  without a frozen teacher. A term used without `prepare` (called directly) has `rated_items` empty and draws
  from all items, saying so with a warning.

Each row of a batch is one rating, so a user with several ratings in a batch carries a ranking term once per
rating, as in the references (rank_distill's terms are per training instance).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kd_jax import losses
from kd_jax.distillers.base import Context, Distiller, Forward, TrainingData, require_positive
from kd_jax.errors import KDJaxError, one_of
from kd_jax.models.outputs import ModelOutput

REDUCTIONS = ("sum", "mean")
_PAST_EVERY_RANK = 2**30  # an offset larger than any rank: padding of `draw_unrated`'s sorted table


# ------------------------------------------------------------------------------------------------------
# Shared helpers.


def top_unrated(scores: np.ndarray, rated: np.ndarray, n: int, *, name: str = "distiller") -> Tuple[Tuple[int, ...], ...]:
  """Every user's `n` best-scored items among those it has not rated, best first (ties: lower item id),
  as a tuple of tuples (hashable and JSON-serialisable: a distiller's prepared hyper-parameter).

  Raises:
    KDJaxError: a user has fewer than `n` unrated items.
  """
  scores, rated = np.asarray(scores, np.float64), np.asarray(rated, bool)
  unrated = (~rated).sum(axis=1)
  if unrated.min() < n:
    raise KDJaxError(f"{name}: ranks the {n} best unrated items per user, but user {int(np.argmin(unrated))} has only "
                     f"{int(unrated.min())} unrated items; lower the distiller's `candidates` (or `k`).")
  order = np.argsort(-np.where(rated, -np.inf, scores), axis=1, kind="stable")[:, :n]
  return tuple(tuple(int(i) for i in row) for row in order)


def _rating_data(data: TrainingData, name: str) -> None:
  if data.rated is None or data.teacher_scores is None:
    raise KDJaxError(f"{name} distils recommenders: it needs rating data (config.task='rating') and a teacher "
                     "(config.teacher.workdir).")


def _as_rows(value: Any) -> Tuple[Tuple[int, ...], ...]:
  """A prepared id table as a tuple of tuples, whether it came from `prepare` or back from JSON (lists)."""
  return tuple(tuple(int(i) for i in row) for row in value)


def _forward(ctx: Context, name: str) -> Forward:
  if ctx.forward is None:
    raise KDJaxError(f"{name} scores items beyond the batch's ratings through the models (ctx.forward), which only "
                     "a training step provides.")
  return ctx.forward


def score_pairs(forward: Forward, users: jax.Array, items: jax.Array):
  """`(student [B, S], teacher)`: the models' predictions for user `users[b]` and item `items[b, s]`, with
  `teacher` a [B, S] array for one teacher or a tuple of them (None without teachers)."""
  b, s = items.shape
  student, teacher = forward({"user": jnp.repeat(users, s), "item": items.reshape(-1)})
  shaped = lambda out: out.prediction.reshape(b, s)
  if teacher is None:
    return shaped(student), None
  if isinstance(teacher, ModelOutput):
    return shaped(student), shaped(teacher)
  return shaped(student), tuple(shaped(t) for t in teacher)


def _single(teacher: Any, name: str) -> Any:
  if teacher is None:
    raise KDJaxError(f"{name} needs a teacher: set config.teacher.workdir.")
  if isinstance(teacher, (tuple, list)):
    raise KDJaxError(f"{name} reads one teacher but gets {len(teacher)}; pick one with the term's `teacher` key "
                     "(e.g. config.loss.<term>.teacher=0).")
  return teacher


def sample_without_replacement(rng: jax.Array, logits: jax.Array, num: int) -> jax.Array:
  """[..., num] indices into the last axis of `logits`, drawn without replacement with probabilities ∝
  exp(logits) (the Gumbel-top-k trick; what `torch.multinomial(w, num, replacement=False)` draws with w =
  exp(logits)). Entries with logit −inf are drawn only when fewer than `num` others remain."""
  keys = logits + jax.random.gumbel(rng, logits.shape, logits.dtype)
  return jax.lax.top_k(keys, num)[1]


def rated_lists(rated: np.ndarray, *, min_unrated: int = 1,
                name: str = "distiller") -> Tuple[Tuple[int, ...], ...]:
  """Every user's rated items (the True columns of its row of `rated`, [num_users, num_items]) in increasing
  order, as a tuple of tuples (a distiller's prepared hyper-parameter).

  Raises:
    KDJaxError: a user has fewer than `min_unrated` unrated items (nothing to draw for it).
  """
  rated = np.asarray(rated, bool)
  unrated = (~rated).sum(axis=1)
  if unrated.min() < min_unrated:
    raise KDJaxError(f"{name}: draws items each user has not rated, but user {int(np.argmin(unrated))} has rated "
                     f"all but {int(unrated.min())} of the {rated.shape[1]} items; it needs {min_unrated}.")
  return tuple(tuple(int(i) for i in np.flatnonzero(row)) for row in rated)


def _rated_table(rated_items: Sequence[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
  """`(table [U, W], counts [U])`: row u holds user u's rated items in its first counts[u] columns."""
  counts = np.array([len(row) for row in rated_items], np.int64)
  table = np.zeros((len(rated_items), max(1, int(counts.max(initial=0)))), np.int64)
  for u, row in enumerate(rated_items):
    table[u, :len(row)] = row
  return table, counts


def unrated_mask(users: jax.Array, rated_items: Sequence[Sequence[int]], num_items: int) -> jax.Array:
  """[B, num_items] bool: True where user `users[b]` has not rated the item (`rated_items` from `rated_lists`):
  the unobserved-item mask DE-RRD's reference builds for its uninteresting items (SeongKu-Kang/DE-RRD_CIKM20,
  `Utils/dataset.py`, `self.mask`), here for the batch's users only."""
  table, counts = _rated_table(rated_items)
  # Padding points past the last item, which the scatter drops.
  table = np.where(np.arange(table.shape[1]) < counts[:, None], table, num_items)
  rows = jnp.arange(users.shape[0])[:, None]
  cols = jnp.asarray(table, jnp.int32)[users]
  return jnp.ones((users.shape[0], num_items), bool).at[rows, cols].set(False, mode="drop")


def draw_unrated(rng: jax.Array, users: jax.Array, rated_items: Sequence[Sequence[int]], num_items: int,
                 num: int) -> jax.Array:
  """[B, num] items drawn uniformly with replacement among each user's unrated items.

  Exact and without a [B, num_items] mask: with user u's rated items a_0 < a_1 < … (0-based j), the r-th unrated
  item (0-based) is x = r + #{j : a_j − j ≤ r}, since a_j − j counts the unrated items before a_j and grows
  with j. So r is drawn uniformly in [0, num_items − |rated_u|) and shifted by a binary search
  (`rated_items` from `rated_lists`: every user has at least one unrated item). The draws the reference codes
  make from "all items minus the user's" (graytowne/rank_distill `distill_caser.py` `_generate_negative_samples`,
  WonbinKweon/BD_WWW2021's `negs_np`), without listing every user's unrated items.
  """
  table, counts = _rated_table(rated_items)
  column = np.arange(table.shape[1])
  offsets = np.where(column < counts[:, None], table - column, _PAST_EVERY_RANK)
  available = jnp.asarray(num_items - counts, jnp.int32)[users]
  r = jax.random.randint(rng, (users.shape[0], num), 0, available[:, None])
  shift = jax.vmap(lambda row, v: jnp.searchsorted(row, v, side="right"))(jnp.asarray(offsets, jnp.int32)[users], r)
  return r + shift.astype(r.dtype)


def _num_items(ctx: Context, name: str) -> int:
  num_items = getattr(ctx.task, "num_items", 0)
  if not num_items:
    raise KDJaxError(f"{name} draws items from the catalogue: it needs the rating task's item count "
                     "(ctx.task.num_items), which the run sets from the data.")
  return int(num_items)


def _unprepared_warning(name: str) -> None:
  warnings.warn(f"{name}: this term was not prepared (Distiller.prepare with the training split), so the users' "
                "rated items are unknown and items are drawn from all items, rated ones included.",
                stacklevel=3)


def _draw_candidates(rng: jax.Array, users: jax.Array, rated_items: Sequence[Sequence[int]], num_items: int,
                     num: int, name: str) -> jax.Array:
  """`draw_unrated`, or uniform over all items (with a warning) when the term was not prepared."""
  if rated_items:
    return draw_unrated(rng, users, rated_items, num_items, num)
  _unprepared_warning(name)
  return jax.random.randint(rng, (users.shape[0], num), 0, num_items)


def _annealed(temperature: float, end_temperature: float, anneal_epochs: int, epoch: Any) -> jax.Array:
  """`T0 · (T_end / T0)^((e − 1) / anneal_epochs)` at 1-based epoch e, floored at T_end; T0 when anneal_epochs = 0
  (the references' `T_annealing`: DE-RRD's `run.py`, Topology_Distillation_KDD21's `run.py`)."""
  if not anneal_epochs:
    return jnp.float32(temperature)
  progress = (jnp.asarray(epoch, jnp.float32) - 1.0) / anneal_epochs
  return jnp.maximum(temperature * (end_temperature / temperature) ** progress, end_temperature)


def _check_prepared(top_items: Sequence, name: str) -> None:
  if not top_items:
    raise KDJaxError(f"{name}: the teacher's ranked items (top_items) are empty. They are filled before training "
                     "from the teacher's predictions on every (user, item) pair: run it on rating data "
                     "(config.task='rating') with config.teacher.workdir set, under config.scheme='distill'.")


# ------------------------------------------------------------------------------------------------------
# RD: ranking distillation.


@dataclasses.dataclass(frozen=True)
class RD(Distiller):
  """Ranking Distillation (Tang & Wang, KDD 2018, arXiv:1809.07428): the teacher's top-`k` unrated items of the
  batch's user as extra targets with position weights `w_r ∝ exp(−r/λ)`; see `losses.ranking_distillation`.

  With `form='mse'` (default) the student's predicted rating of the r-th item regresses onto the teacher's
  [assume, METHODS.md 15b's explicit-feedback adaptation]; `form='logistic'` is the reference's implicit form
  (−log σ of the student's score). Defaults k = 10, λ = 1: the reference's `--K`, `--lamda`
  (graytowne/rank_distill `distill_caser.py`).

  `mu > 0` switches on the reference's hybrid weight w_r · d_r (`losses.rank_discrepancy_weight`, its `--mu`,
  default there 0.1): each step, `num_dynamic_samples` of the user's unrated items are drawn uniformly, the
  student's rank of each of the k items among all items is estimated as ⌊(num_items − 1) · (the fraction of
  samples it scores lower)⌋, and d_r = max(tanh(μ (r̂ − (r − 1))), 0). As the reference the hybrid starts after
  `dynamic_start_epoch` epochs (its `epoch_num > dynamic_start_epoch`, 0-based: from 1-based epoch
  dynamic_start_epoch + 2) and the weights are not renormalised; its defaults are 100 samples and 10 epochs.
  `mu = 0` (default) keeps the position weights alone.

  Attributes:
    k: K, the length of the teacher's list.
    lam: λ, the position weights' sharpness.
    form: 'mse' or 'logistic'.
    mu, num_dynamic_samples, dynamic_start_epoch: the hybrid weight (see above).
    top_items: filled by `prepare`: every user's k best unrated items by the teacher.
    rated_items: filled by `prepare` when mu > 0: every user's rated items (`rated_lists`).
  """

  k: int = 10
  lam: float = 1.0
  form: str = "mse"
  mu: float = 0.0
  num_dynamic_samples: int = 100
  dynamic_start_epoch: int = 10
  top_items: Tuple[Tuple[int, ...], ...] = ()
  rated_items: Tuple[Tuple[int, ...], ...] = ()

  def __post_init__(self):
    require_positive("rd", k=self.k, lam=self.lam, num_dynamic_samples=self.num_dynamic_samples)
    if self.form not in ("mse", "logistic"):
      raise ValueError(f"rd: form must be {one_of(('mse', 'logistic'))}, got {self.form!r}.")
    if self.mu < 0 or self.dynamic_start_epoch < 0:
      raise ValueError(f"rd: mu and dynamic_start_epoch must be >= 0, got {self.mu} and {self.dynamic_start_epoch}.")
    object.__setattr__(self, "top_items", _as_rows(self.top_items))
    object.__setattr__(self, "rated_items", _as_rows(self.rated_items))

  def prepare(self, data: TrainingData) -> "RD":
    _rating_data(data, "rd")
    top = top_unrated(data.teacher_scores(0), data.rated, self.k, name="rd")
    rated = rated_lists(data.rated, name="rd") if self.mu > 0 else ()
    return dataclasses.replace(self, top_items=top, rated_items=rated)

  def init(self, rng, student, teacher, batch):
    _single(teacher, "rd")
    _check_prepared(self.top_items, "rd")
    return {}

  def _discrepancy(self, s: jax.Array, users: jax.Array, ctx: Context, forward: Forward) -> jax.Array:
    num_items = _num_items(ctx, "rd")
    samples = _draw_candidates(ctx.rng, users, self.rated_items, num_items, self.num_dynamic_samples, "rd")
    sampled, _ = score_pairs(forward, users, samples)
    s, sampled = jax.lax.stop_gradient(s), jax.lax.stop_gradient(sampled)
    above = jnp.sum(s[:, :, None] < sampled[:, None, :], axis=-1) / self.num_dynamic_samples
    estimated_rank = jnp.floor((num_items - 1) * above)
    d = losses.rank_discrepancy_weight(estimated_rank, jnp.arange(self.k), self.mu)
    return jnp.where(jnp.asarray(ctx.epoch) - 1 > self.dynamic_start_epoch, d, 1.0)

  def loss(self, variables, student, teacher, batch, ctx):
    users = batch["user"]
    items = jnp.asarray(self.top_items, jnp.int32)[users]
    forward = _forward(ctx, "rd")
    s, t = score_pairs(forward, users, items)
    discrepancy = self._discrepancy(s, users, ctx, forward) if self.mu > 0 else None
    value = losses.ranking_distillation(s, _single(t, "rd"), lam=self.lam, form=self.form, discrepancy=discrepancy)
    metrics = {} if discrepancy is None else {"discrepancy": jnp.mean(discrepancy)}
    return value, metrics, {}


# ------------------------------------------------------------------------------------------------------
# CD: collaborative distillation.


CD_MODES = ("teacher_guided", "student_guided")


@dataclasses.dataclass(frozen=True)
class CD(Distiller):
  """Collaborative Distillation (Lee, Choi, Lee & Shim, "Collaborative Distillation for Top-N Recommendation",
  ICDM 2019, arXiv:1911.05276): per batch row, `num_samples` of the user's unrated items drawn rank-aware,
  P(rank r) ∝ exp(−r/λ) (without replacement), with the teacher's predictions as soft targets
  (`losses.pointwise_distillation`: MSE for ratings [assume], or the paper's BCE on sigmoids).

  The paper's two training strategies (`mode`, named as there):
    * 'teacher_guided' (default): r is the item's rank in the frozen teacher's ranking of the user's unrated
      items, computed once before training (`prepare`: the teacher's `candidates` best).
    * 'student_guided': r is its rank in the *student's* current ranking, recomputed every step: the student
      scores every item for the batch's users (`ctx.forward`, no gradient), the rated ones are removed and the
      `candidates` best kept. It costs a student pass over batch × num_items pairs per step.
  The ranking is truncated to `candidates` items (exp(−candidates/λ) is negligible at the defaults). No
  reference code was found; the defaults are ours [assume]: 10 samples, λ = 10, 100 candidates.

  Attributes:
    num_samples: items per batch row.
    lam: λ of the rank-aware sampling.
    candidates: length of the ranking kept per user.
    form: 'mse' or 'bce'.
    mode: 'teacher_guided' or 'student_guided'.
    top_items: filled by `prepare` ('teacher_guided').
    rated_items: filled by `prepare` ('student_guided'): every user's rated items (`rated_lists`).
  """

  num_samples: int = 10
  lam: float = 10.0
  candidates: int = 100
  form: str = "mse"
  mode: str = "teacher_guided"
  top_items: Tuple[Tuple[int, ...], ...] = ()
  rated_items: Tuple[Tuple[int, ...], ...] = ()

  def __post_init__(self):
    require_positive("cd", num_samples=self.num_samples, lam=self.lam, candidates=self.candidates)
    if self.num_samples > self.candidates:
      raise ValueError(f"cd: num_samples={self.num_samples} exceeds candidates={self.candidates}.")
    if self.form not in ("mse", "bce"):
      raise ValueError(f"cd: form must be {one_of(('mse', 'bce'))}, got {self.form!r}.")
    if self.mode not in CD_MODES:
      raise ValueError(f"cd: mode must be {one_of(CD_MODES)}, got {self.mode!r}.")
    object.__setattr__(self, "top_items", _as_rows(self.top_items))
    object.__setattr__(self, "rated_items", _as_rows(self.rated_items))

  def prepare(self, data: TrainingData) -> "CD":
    _rating_data(data, "cd")
    if self.mode == "student_guided":
      return dataclasses.replace(self, rated_items=rated_lists(data.rated, min_unrated=self.num_samples, name="cd"))
    return dataclasses.replace(self, top_items=top_unrated(data.teacher_scores(0), data.rated, self.candidates,
                                                           name="cd"))

  def init(self, rng, student, teacher, batch):
    _single(teacher, "cd")
    if self.mode == "teacher_guided":
      _check_prepared(self.top_items, "cd")
    return {}

  def student_ranking(self, users: jax.Array, ctx: Context) -> Tuple[jax.Array, jax.Array]:
    """`(items [B, candidates], valid [B, candidates])`: the student's best unrated items of each row's user at
    this step's parameters, best first; `valid` is False past the user's unrated items."""
    num_items = _num_items(ctx, "cd")
    if self.candidates > num_items:
      raise KDJaxError(f"cd: candidates={self.candidates} exceeds the {num_items} items; lower it.")
    every_item = jnp.broadcast_to(jnp.arange(num_items, dtype=jnp.int32), (users.shape[0], num_items))
    scores, _ = score_pairs(_forward(ctx, "cd"), users, every_item)
    if self.rated_items:
      allowed = unrated_mask(users, self.rated_items, num_items)
    else:
      _unprepared_warning("cd")
      allowed = jnp.ones(scores.shape, bool)
    best, items = jax.lax.top_k(jnp.where(allowed, jax.lax.stop_gradient(scores), -jnp.inf), self.candidates)
    return items, jnp.isfinite(best)

  def loss(self, variables, student, teacher, batch, ctx):
    users = batch["user"]
    rank_logits = -jnp.arange(1, self.candidates + 1, dtype=jnp.float32) / self.lam
    if self.mode == "teacher_guided":
      ranked, valid = jnp.asarray(self.top_items, jnp.int32)[users], None
      rank_logits = jnp.broadcast_to(rank_logits, ranked.shape)
    else:
      ranked, valid = self.student_ranking(users, ctx)
      rank_logits = jnp.where(valid, rank_logits, -jnp.inf)
    ranks = sample_without_replacement(ctx.rng, rank_logits, self.num_samples)
    items = jnp.take_along_axis(ranked, ranks, axis=1)
    keep = None if valid is None else jnp.take_along_axis(valid, ranks, axis=1)
    s, t = score_pairs(_forward(ctx, "cd"), users, items)
    return losses.pointwise_distillation(s, _single(t, "cd"), form=self.form, mask=keep), {}, {}


# ------------------------------------------------------------------------------------------------------
# DE-RRD: distillation experts and relaxed ranking distillation.


@dataclasses.dataclass(frozen=True)
class RRD(Distiller):
  """Relaxed Ranking Distillation (Kang et al., CIKM 2020), the ranking half of DE-RRD: per batch row,
  `num_interesting` items drawn from the teacher's `candidates` best unrated items with P(rank r) ∝
  exp(−r/T) without replacement and kept in the teacher's order, and `num_uninteresting` items drawn
  uniformly; the student's scores enter `losses.relaxed_ranking`.

  As the reference (SeongKu-Kang/DE-RRD_CIKM20, `Utils/dataset.py` `URRD_sampling`): the uninteresting items
  are drawn uniformly without replacement among the user's unobserved items outside its `candidates` list (its
  `mask`: rated items and the teacher's list set to 0); the draws here are per step, not per epoch. A row with
  fewer such items than L masks the rest out (`uninteresting_kept`). The reference's defaults (K = 40 of the
  top 500, T = 10, L = 40) assume thousands of items; ours are scaled to the synthetic data's 400 [assume]:
  10 of the top 50, T = 10, 40 uninteresting. `reduction='sum'` is the reference's (weight 0.001 there).

  Attributes:
    num_interesting, candidates, temperature: K, the teacher's list length, T.
    num_uninteresting: L.
    reduction: 'sum' or 'mean' over batch rows.
    top_items: filled by `prepare`.
    rated_items: filled by `prepare`: every user's rated items (`rated_lists`).
  """

  num_interesting: int = 10
  candidates: int = 50
  temperature: float = 10.0
  num_uninteresting: int = 40
  reduction: str = "sum"
  top_items: Tuple[Tuple[int, ...], ...] = ()
  rated_items: Tuple[Tuple[int, ...], ...] = ()

  def __post_init__(self):
    require_positive("rrd", num_interesting=self.num_interesting, candidates=self.candidates,
                     temperature=self.temperature, num_uninteresting=self.num_uninteresting)
    if self.num_interesting > self.candidates:
      raise ValueError(f"rrd: num_interesting={self.num_interesting} exceeds candidates={self.candidates}.")
    if self.reduction not in REDUCTIONS:
      raise ValueError(f"rrd: reduction must be {one_of(REDUCTIONS)}, got {self.reduction!r}.")
    object.__setattr__(self, "top_items", _as_rows(self.top_items))
    object.__setattr__(self, "rated_items", _as_rows(self.rated_items))

  def prepare(self, data: TrainingData) -> "RRD":
    _rating_data(data, "rrd")
    return dataclasses.replace(self, top_items=top_unrated(data.teacher_scores(0), data.rated, self.candidates,
                                                           name="rrd"),
                               rated_items=rated_lists(data.rated, name="rrd"))

  def init(self, rng, student, teacher, batch):
    _single(teacher, "rrd")
    _check_prepared(self.top_items, "rrd")
    return {}

  def loss(self, variables, student, teacher, batch, ctx):
    users = batch["user"]
    top = jnp.asarray(self.top_items, jnp.int32)[users]  # [B, candidates]
    interesting_rng, uninteresting_rng = jax.random.split(ctx.rng)
    rank_logits = -jnp.arange(1, self.candidates + 1, dtype=jnp.float32) / self.temperature
    ranks = jnp.sort(sample_without_replacement(
        interesting_rng, jnp.broadcast_to(rank_logits, top.shape), self.num_interesting), axis=1)
    interesting = jnp.take_along_axis(top, ranks, axis=1)
    num_items = _num_items(ctx, "rrd")
    if self.rated_items:
      allowed = unrated_mask(users, self.rated_items, num_items)
    else:
      _unprepared_warning("rrd")
      allowed = jnp.ones((users.shape[0], num_items), bool)
    allowed = allowed.at[jnp.arange(users.shape[0])[:, None], top].set(False)
    uninteresting = sample_without_replacement(uninteresting_rng, jnp.where(allowed, 0.0, -jnp.inf),
                                               self.num_uninteresting)
    keep = jnp.take_along_axis(allowed, uninteresting, axis=1)
    s, _ = score_pairs(_forward(ctx, "rrd"), users, jnp.concatenate([interesting, uninteresting], axis=1))
    value = losses.relaxed_ranking(s[:, :self.num_interesting], s[:, self.num_interesting:],
                                   uninteresting_mask=keep, reduction=self.reduction)
    return value, {"uninteresting_kept": jnp.mean(keep.astype(jnp.float32))}, {}


class DistillationExperts(nn.Module):
  """DE's trainable parts for one entity type: `num_experts` experts from the student's representation to the
  teacher's, and the selection network `softmax(Dense(t))` over the teacher's representation.

  Each expert is the reference's `Expert` (`Models/DE.py`): Dense(hidden) → ReLU → Dense(d_t), hidden width
  (d_s + d_t) // 2, or d_s // 2 when d_s = d_t (its self-distillation case); the experts' weights are stacked
  along a leading axis and applied as one batched product (each initialised as a Flax Dense layer would be).
  `__call__(s, t) -> (expert outputs [B, E, d_t], selection probabilities [B, E])`.
  """

  num_experts: int
  student_dim: int
  teacher_dim: int

  @nn.compact
  def __call__(self, s: jax.Array, t: jax.Array):
    hidden = (self.teacher_dim + self.student_dim) // 2
    if self.teacher_dim == self.student_dim:
      hidden = max(self.student_dim // 2, 1)
    e = self.num_experts
    kernel = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    w1 = self.param("hidden_kernel", kernel, (e, self.student_dim, hidden))
    b1 = self.param("hidden_bias", nn.initializers.zeros, (e, hidden))
    w2 = self.param("output_kernel", kernel, (e, hidden, self.teacher_dim))
    b2 = self.param("output_bias", nn.initializers.zeros, (e, self.teacher_dim))
    h = nn.relu(jnp.einsum("bd,edh->beh", s, w1) + b1)
    outputs = jnp.einsum("beh,eho->beo", h, w2) + b2
    probabilities = jax.nn.softmax(nn.Dense(e, name="selection")(t), axis=-1)
    return outputs, probabilities


@dataclasses.dataclass(frozen=True)
class DE(Distiller):
  """Distillation Experts (Kang et al., CIKM 2020), the representation half of DE-RRD: experts map the
  student's user and item representations (`stages[0]`, `stages[1]` of the rating models) into the teacher's,
  one expert per entity chosen by Gumbel-softmax over the teacher's representation; `L = L_users + L_items`
  with `losses.distillation_experts` and `losses.expert_selection`.

  As the reference (SeongKu-Kang/DE-RRD_CIKM20, `Models/DE.py`, `run.py` `LOO_DE_run`): 30 experts, summed
  squared error, the Gumbel temperature annealed as `T = T0 · (T_end / T0)^(e / anneal_epochs)` after e epochs
  from T0 = 1 to T_end = 1e-10 (`--end_T`, `--anneal_size`); `anneal_epochs = 0` keeps T0. Differences: the
  batch's rows are used (the reference takes the unique users and items of a batch), and the items are the
  batch's rated items only (the reference averages its positive and sampled negative items' terms).

  Attributes:
    num_experts: E.
    temperature, end_temperature, anneal_epochs: the annealing schedule above.
    reduction: 'sum' or 'mean' over entities.
  """

  num_experts: int = 30
  temperature: float = 1.0
  end_temperature: float = 1e-10
  anneal_epochs: int = 0
  reduction: str = "sum"

  def __post_init__(self):
    require_positive("de", num_experts=self.num_experts, temperature=self.temperature,
                     end_temperature=self.end_temperature)
    if self.anneal_epochs < 0:
      raise ValueError(f"de: anneal_epochs must be >= 0, got {self.anneal_epochs}.")
    if self.reduction not in REDUCTIONS:
      raise ValueError(f"de: reduction must be {one_of(REDUCTIONS)}, got {self.reduction!r}.")

  def _modules(self, student: ModelOutput, teacher: ModelOutput):
    if len(student.stages) < 2 or len(teacher.stages) < 2:
      raise KDJaxError("de reads the user and item representations (stages[0], stages[1]) of rating models "
                       "(mf, neumf); these models have no such stages.")
    return [DistillationExperts(self.num_experts, s.shape[-1], t.shape[-1], name=name)
            for name, s, t in (("users", student.stages[0], teacher.stages[0]),
                               ("items", student.stages[1], teacher.stages[1]))]

  def init(self, rng, student, teacher, batch):
    teacher = _single(teacher, "de")
    params = {}
    for i, module in enumerate(self._modules(student, teacher)):
      params[module.name] = module.init(jax.random.fold_in(rng, i), student.stages[i], teacher.stages[i])["params"]
    return {"params": params}

  def current_temperature(self, epoch: Any) -> jax.Array:
    return _annealed(self.temperature, self.end_temperature, self.anneal_epochs, epoch)

  def loss(self, variables, student, teacher, batch, ctx):
    teacher = _single(teacher, "de")
    temperature = self.current_temperature(ctx.epoch)
    total, metrics = jnp.zeros((), jnp.float32), {"temperature": temperature}
    for i, module in enumerate(self._modules(student, teacher)):
      t = jax.lax.stop_gradient(teacher.stages[i])
      outputs, probabilities = module.apply({"params": variables["params"][module.name]}, student.stages[i], t)
      gumbel = (jnp.zeros_like(probabilities) if ctx.rng is None
                else jax.random.gumbel(jax.random.fold_in(ctx.rng, i), probabilities.shape, probabilities.dtype))
      selection = losses.expert_selection(probabilities, gumbel, temperature)
      value = losses.distillation_experts(outputs, selection, t, reduction=self.reduction)
      metrics[module.name] = value
      total = total + value
    return total, metrics, {}


# ------------------------------------------------------------------------------------------------------
# TD: topology distillation.


TD_FORMS = ("full", "hierarchical")
GROUP_FORMS = ("prototype_entity", "prototype_prototype")


@dataclasses.dataclass(frozen=True)
class TD(Distiller):
  """Topology Distillation (Kang, Kweon, Lee, Lian, Xie & Yu, "Topology Distillation for Recommender System",
  KDD 2021, arXiv:2106.08700) on the batch's users and items (the rows of `stages[0]` then `stages[1]`, 2B
  entities). The reference (SeongKu-Kang/Topology_Distillation_KDD21, `model.py`, `run.py`) takes the batch's
  unique users and items; here every row counts (a user with several ratings in the batch appears several times).

  `form='full'` (default; FTD, `losses.topology_distillation`): the cosine-similarity matrix among all of them
  matches the teacher's. The repository has no default between the two: its guide notebook runs both, FTD for
  students close to the teacher's size and HTD for much smaller ones.

  `form='hierarchical'` (HTD, `FTD`'s sibling `HTD` with `run_HTD`): the entities are split into preference
  groups, `num_groups` for users and as many for items (ids K..2K−1), and the topology is transferred in two
  levels. The assignment is learnt: per entity type, a selection network softmax(Dense(t)) over the teacher's
  representation and `num_groups` experts from the student's representation to the teacher's (DE's parts,
  `DistillationExperts`), trained by the group-assignment loss GA = `losses.distillation_experts` with a
  Gumbel-softmax selection (`losses.expert_selection`) at a temperature annealed from `temperature` to
  `end_temperature` over `anneal_epochs` (the reference: 1 → 1e-10 over the run). An entity's group is the
  argmax of its selection distribution (a constant for the topology terms). Then

      HTD = α · (L_entity + L_group) + (1 − α) · (GA_users + GA_items)

  with `losses.entity_topology` (same-group pairs) and `losses.group_topology` (`group_form`:
  'prototype_entity' is the reference's `choice='second'`, the one its guide runs; 'prototype_prototype' its
  'first'). The guide's settings are K = 30, α = 0.5, weight 0.001 with sums; the experts' hidden width is
  (d_s + d_t) // 2 as there (d_s // 2 when the widths are equal, as DE's).

  Attributes:
    reduction: 'sum' (the reference's) or 'mean' for every term.
    form: 'full' or 'hierarchical'.
    num_groups: K, groups per entity type ('hierarchical').
    group_form: 'prototype_entity' or 'prototype_prototype' ('hierarchical').
    alpha: α, the topology terms' share against the group assignment ('hierarchical').
    temperature, end_temperature, anneal_epochs: the Gumbel temperature's schedule ('hierarchical').
  """

  reduction: str = "sum"
  form: str = "full"
  num_groups: int = 30
  group_form: str = "prototype_entity"
  alpha: float = 0.5
  temperature: float = 1.0
  end_temperature: float = 1e-10
  anneal_epochs: int = 0

  def __post_init__(self):
    if self.reduction not in REDUCTIONS:
      raise ValueError(f"td: reduction must be {one_of(REDUCTIONS)}, got {self.reduction!r}.")
    if self.form not in TD_FORMS:
      raise ValueError(f"td: form must be {one_of(TD_FORMS)}, got {self.form!r}.")
    if self.group_form not in GROUP_FORMS:
      raise ValueError(f"td: group_form must be {one_of(GROUP_FORMS)}, got {self.group_form!r}.")
    require_positive("td", num_groups=self.num_groups, temperature=self.temperature,
                     end_temperature=self.end_temperature)
    if not 0.0 <= self.alpha <= 1.0 or self.anneal_epochs < 0:
      raise ValueError(f"td: alpha must be in [0, 1] and anneal_epochs >= 0, got {self.alpha} and "
                       f"{self.anneal_epochs}.")

  @staticmethod
  def _entities(out: ModelOutput, who: str) -> jax.Array:
    if len(out.stages) < 2:
      raise KDJaxError(f"td reads the user and item representations (stages[0], stages[1]) of rating models; the "
                       f"{who} has no such stages.")
    return jnp.concatenate([out.stages[0], out.stages[1]], axis=0)

  def _modules(self, student: ModelOutput, teacher: ModelOutput):
    return [DistillationExperts(self.num_groups, s.shape[-1], t.shape[-1], name=name)
            for name, s, t in (("users", student.stages[0], teacher.stages[0]),
                               ("items", student.stages[1], teacher.stages[1]))]

  def init(self, rng, student, teacher, batch):
    teacher = _single(teacher, "td")
    self._entities(student, "student"), self._entities(teacher, "teacher")
    if self.form == "full":
      return {}
    params = {}
    for i, module in enumerate(self._modules(student, teacher)):
      params[module.name] = module.init(jax.random.fold_in(rng, i), student.stages[i], teacher.stages[i])["params"]
    return {"params": params}

  def loss(self, variables, student, teacher, batch, ctx):
    teacher = _single(teacher, "td")
    s, t = self._entities(student, "student"), self._entities(teacher, "teacher")
    if self.form == "full":
      return losses.topology_distillation(s, t, reduction=self.reduction), {}, {}
    temperature = _annealed(self.temperature, self.end_temperature, self.anneal_epochs, ctx.epoch)
    assignment, groups = jnp.zeros((), jnp.float32), []
    for i, module in enumerate(self._modules(student, teacher)):
      t_i = jax.lax.stop_gradient(teacher.stages[i])
      outputs, probabilities = module.apply({"params": variables["params"][module.name]}, student.stages[i], t_i)
      gumbel = (jnp.zeros_like(probabilities) if ctx.rng is None
                else jax.random.gumbel(jax.random.fold_in(ctx.rng, i), probabilities.shape, probabilities.dtype))
      selection = losses.expert_selection(probabilities, gumbel, temperature)
      assignment = assignment + losses.distillation_experts(outputs, selection, t_i, reduction=self.reduction)
      # Users take groups 0..K-1, items K..2K-1: a user and an item never share a group.
      groups.append(jnp.argmax(jax.lax.stop_gradient(probabilities), axis=-1) + i * self.num_groups)
    groups = jnp.concatenate(groups)
    entity = losses.entity_topology(s, t, groups, reduction=self.reduction)
    group = losses.group_topology(s, t, groups, num_groups=2 * self.num_groups, form=self.group_form,
                                  reduction=self.reduction)
    value = self.alpha * (entity + group) + (1.0 - self.alpha) * assignment
    used = jnp.sum(jnp.any(jax.nn.one_hot(groups, 2 * self.num_groups, dtype=bool), axis=0))
    return value, {"entity": entity, "group": group, "assignment": assignment, "temperature": temperature,
                   "groups_used": used.astype(jnp.float32)}, {}


# ------------------------------------------------------------------------------------------------------
# BD: bidirectional distillation (under config.scheme='mutual').


BD_DIRECTIONS = ("auto", "t2s", "s2t")
BD_SAMPLINGS = ("tanh", "exp")


@dataclasses.dataclass(frozen=True)
class BD(Distiller):
  """Bidirectional Distillation (Kweon, Kang & Yu, "Bidirectional Distillation for Top-K Recommender System",
  WWW 2021, arXiv:2106.02870; reference WonbinKweon/BD_WWW2021, `BD_WWW2021_BPR_CiteULike.ipynb`), one direction:
  the network being trained ("student" here, either network under config.scheme='mutual') learns the other's
  predictions on items sampled by rank discrepancy.

  Per batch row: `num_candidates` of the user's unrated items drawn uniformly (`draw_unrated`); both networks
  score them (`ctx.forward`) and rank them; a candidate's relative rank ρ = (the number of candidates scored
  higher) / num_candidates estimates its position in the whole list as a fraction. Samples are drawn from the
  candidates with replacement (the reference's `torch.multinomial(..., replacement=True)`) with probability
  given by `losses.rank_discrepancy_logits(ρ_own, ρ_other, ε, sampling)`, and this network's predictions
  regress onto the other's (`losses.pointwise_distillation`, MSE for ratings [assume]); draws with probability
  0 are masked out. ε here acts on relative ranks, ε_paper = ε / num_items on absolute ones.

  The two directions have their own settings, as in the reference: teacher → student (the student learns;
  `num_samples`, `epsilon`, `sampling`, default 'tanh': only items the teacher ranks higher than the student)
  and student → teacher (the teacher learns; `s2t_num_samples`, `s2t_epsilon`, `s2t_sampling`, default 'exp':
  every candidate, weighted towards items the student ranks higher than the teacher; its loss is multiplied
  by `s2t_scale` on top of the term's weight). The reference's values, on absolute ranks over its catalogue,
  are ε = 1e-2 (tanh) and 1e-4 (exp), one sample per (user, positive) pair in each direction, loss weights 0.5
  and 0.5 (`s2t_scale = 1`), and BCE targets σ(score / 5) in both directions (the 'bce' form here has no
  temperature). It recomputes full rankings every 10 epochs; here the per-step candidate estimate replaces them.
  Our defaults [assume]: 100 candidates, 10 samples and ε = 10 (tanh) for teacher → student, 10 samples and
  ε = 2 (exp) for student → teacher.

  Which direction a call serves (`direction`): 't2s' or 's2t' fix it; 'auto' (default) reads the two
  networks' user-representation widths (`stages[0]`): the narrower network is BD's student (under the mutual
  scheme the student is mf_small and its peer the larger teacher). Equal widths leave it undefined: set it.

  Attributes:
    num_candidates: uniform unrated candidates per row, shared by both directions.
    num_samples, epsilon, sampling: the teacher → student direction.
    s2t_num_samples, s2t_epsilon, s2t_sampling, s2t_scale: the student → teacher direction.
    direction: 'auto', 't2s' or 's2t'.
    form: 'mse' or 'bce'.
    rated_items: filled by `prepare` (every user's rated items); a term used unprepared draws candidates from
      all items, with a warning.
  """

  num_candidates: int = 100
  num_samples: int = 10
  epsilon: float = 10.0
  sampling: str = "tanh"
  s2t_num_samples: int = 10
  s2t_epsilon: float = 2.0
  s2t_sampling: str = "exp"
  s2t_scale: float = 1.0
  direction: str = "auto"
  form: str = "mse"
  rated_items: Tuple[Tuple[int, ...], ...] = ()

  def __post_init__(self):
    require_positive("bd", num_candidates=self.num_candidates, num_samples=self.num_samples, epsilon=self.epsilon,
                     s2t_num_samples=self.s2t_num_samples, s2t_epsilon=self.s2t_epsilon)
    if self.s2t_scale < 0:
      raise ValueError(f"bd: s2t_scale must be >= 0, got {self.s2t_scale}.")
    if self.form not in ("mse", "bce"):
      raise ValueError(f"bd: form must be {one_of(('mse', 'bce'))}, got {self.form!r}.")
    if self.direction not in BD_DIRECTIONS:
      raise ValueError(f"bd: direction must be {one_of(BD_DIRECTIONS)}, got {self.direction!r}.")
    for name in ("sampling", "s2t_sampling"):
      if getattr(self, name) not in BD_SAMPLINGS:
        raise ValueError(f"bd: {name} must be {one_of(BD_SAMPLINGS)}, got {getattr(self, name)!r}.")
    object.__setattr__(self, "rated_items", _as_rows(self.rated_items))

  def prepare(self, data: TrainingData) -> "BD":
    if data.rated is None:
      raise KDJaxError("bd distils recommenders: it needs rating data (config.task='rating').")
    return dataclasses.replace(self, rated_items=rated_lists(data.rated, name="bd"))

  def init(self, rng, student, teacher, batch):
    _single(teacher, "bd")
    return {}

  def which_direction(self, student: Any, teacher: Any) -> str:
    """'t2s' or 's2t' for this call (see the class docstring)."""
    if self.direction != "auto":
      return self.direction
    stages = [getattr(out, "stages", ()) for out in (student, _single(teacher, "bd"))]
    if not all(stages):
      raise KDJaxError("bd with direction='auto' tells which network is BD's teacher from the widths of their user "
                       "representations (stages[0]), which these outputs do not have: set direction='t2s' or "
                       "'s2t' in the term's config.")
    own, other = stages[0][0].shape[-1], stages[1][0].shape[-1]
    if own == other:
      raise KDJaxError(f"bd with direction='auto': both networks' user representations are {own} wide, so which "
                       "is BD's teacher is undefined; set direction='t2s' (both networks then use the teacher → "
                       "student settings) or give the networks different widths.")
    return "t2s" if own < other else "s2t"

  def loss(self, variables, student, teacher, batch, ctx):
    users = batch["user"]
    t2s = self.which_direction(student, teacher) == "t2s"
    num_samples = self.num_samples if t2s else self.s2t_num_samples
    epsilon = self.epsilon if t2s else self.s2t_epsilon
    sampling = self.sampling if t2s else self.s2t_sampling
    candidate_rng, sample_rng = jax.random.split(ctx.rng)
    candidates = _draw_candidates(candidate_rng, users, self.rated_items, _num_items(ctx, "bd"),
                                  self.num_candidates, "bd")
    forward = _forward(ctx, "bd")
    # Ranking the candidates needs no gradient; only the sampled pairs are scored again with one.
    own_all, other_all = jax.lax.stop_gradient(score_pairs(forward, users, candidates))
    other_all = _single(other_all, "bd")
    # How many of its row's candidates score higher, as a fraction (a comparison count: faster than sorting on CPU).
    relative_rank = lambda x: jnp.sum(x[:, None, :] > x[:, :, None], axis=-1) / self.num_candidates
    logits = losses.rank_discrepancy_logits(relative_rank(own_all), relative_rank(other_all), epsilon, sampling)
    picked = jax.random.categorical(sample_rng, logits[:, None, :], axis=-1, shape=(users.shape[0], num_samples))
    mask = jnp.isfinite(jnp.take_along_axis(logits, picked, axis=1))
    own, other = score_pairs(forward, users, jnp.take_along_axis(candidates, picked, axis=1))
    value = losses.pointwise_distillation(own, _single(other, "bd"), form=self.form, mask=mask)
    if not t2s:
      value = self.s2t_scale * value
    return value, {"sampled": jnp.mean(mask.astype(jnp.float32))}, {}


# ------------------------------------------------------------------------------------------------------
# DUET and its first teacher's objective.


@dataclasses.dataclass(frozen=True)
class DUET(Distiller):
  """DUET (Bae, Kim, Lee & Kim, "DUET: Dually guided knowledge distillation from explicit feedback",
  Information Fusion 120, 2025 [paper]): two teachers. The preference teacher (trained on pre-use
  preferences, rated or not: a run with the `interaction` term) picks, for each user, the `k` unrated items it
  ranks highest; the rating teacher (trained on ratings) gives its predicted rating of them as soft targets;
  the student regresses onto those (`losses.pointwise_distillation`, MSE) next to the hard ratings (the
  `supervised` term). The picks are fixed before training from the preference teacher's scores of every
  (user, item) pair; each step reads the rating teacher on the batch users' k items.

  The term sees two teachers: `config.loss.duet.teacher=(0, 1)` gives it config.teacher.workdir (0) and the
  first of config.teacher.extra_workdirs (1); `rater` and `selector` index that pair. The paper's code was not
  found; k = 10 and the MSE are our choices [assume].

  Attributes:
    k: unrated items per user.
    rater: which of the term's teachers gives the soft ratings.
    selector: which ranks the unrated items (the preference teacher).
    top_items: filled by `prepare`.
  """

  k: int = 10
  rater: int = 0
  selector: int = 1
  top_items: Tuple[Tuple[int, ...], ...] = ()

  def __post_init__(self):
    require_positive("duet", k=self.k)
    if self.rater == self.selector or min(self.rater, self.selector) < 0:
      raise ValueError(f"duet: rater and selector must be two different teacher indices >= 0, got rater="
                       f"{self.rater}, selector={self.selector}.")
    object.__setattr__(self, "top_items", _as_rows(self.top_items))

  def _teachers(self, teacher: Any) -> Tuple[Any, ...]:
    teachers = () if teacher is None else (teacher,) if isinstance(teacher, ModelOutput) else tuple(teacher)
    if len(teachers) <= max(self.rater, self.selector):
      raise KDJaxError(f"duet reads two teachers (rater {self.rater}, selector {self.selector}) but gets "
                       f"{len(teachers)}: set config.teacher.workdir to the rating teacher's run, "
                       "config.teacher.extra_workdirs=(<the preference teacher's run>,) and "
                       "config.loss.duet.teacher=(0, 1).")
    return teachers

  def prepare(self, data: TrainingData) -> "DUET":
    _rating_data(data, "duet")
    scores = data.teacher_scores(self.selector)
    return dataclasses.replace(self, top_items=top_unrated(scores, data.rated, self.k, name="duet"))

  def init(self, rng, student, teacher, batch):
    self._teachers(teacher)
    _check_prepared(self.top_items, "duet")
    return {}

  def loss(self, variables, student, teacher, batch, ctx):
    items = jnp.asarray(self.top_items, jnp.int32)[batch["user"]]
    s, t = score_pairs(_forward(ctx, "duet"), batch["user"], items)
    return losses.pointwise_distillation(s, self._teachers(t)[self.rater]), {}, {}


@dataclasses.dataclass(frozen=True)
class Interaction(Distiller):
  """The "rated or not" objective (`losses.interaction_log_loss`): the batch's rated pairs are positives,
  `num_negatives` items per row drawn uniformly among the user's unrated items are negatives (as the
  rank_distill reference's `_generate_negative_samples`: all items minus the user's), and the model's output is
  read as the logit of "rated". A run whose loss is this term alone trains DUET's preference teacher on the
  rating data (its RMSE is then meaningless). 4 negatives per positive is our choice [assume]. Reads no
  teacher; the run still prepares it with the training split's rated items.

  Attributes:
    num_negatives: negatives per batch row.
    rated_items: filled by `prepare` when the run prepares its terms: every user's rated items.
  """

  num_negatives: int = 4
  rated_items: Tuple[Tuple[int, ...], ...] = ()
  needs_teacher = False

  def __post_init__(self):
    require_positive("interaction", num_negatives=self.num_negatives)
    object.__setattr__(self, "rated_items", _as_rows(self.rated_items))

  def prepare(self, data: TrainingData) -> "Interaction":
    if data.rated is None:
      return self
    return dataclasses.replace(self, rated_items=rated_lists(data.rated, name="interaction"))

  def loss(self, variables, student, teacher, batch, ctx):
    negatives = _draw_candidates(ctx.rng, batch["user"], self.rated_items, _num_items(ctx, "interaction"),
                                 self.num_negatives, "interaction")
    s, _ = score_pairs(_forward(ctx, "interaction"), batch["user"], negatives)
    return losses.interaction_log_loss(student.prediction, s), {}, {}


# ------------------------------------------------------------------------------------------------------
# Regularisation of the rating models' factors.


@dataclasses.dataclass(frozen=True)
class FactorL2(Distiller):
  """`mean_b (‖p_{u_b}‖² + ‖q_{i_b}‖²)`: the squared norms of the batch's user and item representations
  (`stages[0]`, `stages[1]` of the rating models), the per-rating regularisation of matrix factorisation
  (Koren, Bell & Volinsky, IEEE Computer 2009: λ(‖q_i‖² + ‖p_u‖²) next to each rating's squared error; the
  biases are left out here). Unlike an optimizer's weight decay it only shrinks the rows a batch uses, so
  rarely rated users and items are not pulled to zero between their ratings. Reads no teacher; the config's
  weight is λ.
  """

  needs_teacher = False

  def loss(self, variables, student, teacher, batch, ctx):
    if len(student.stages) < 2:
      raise KDJaxError("factor_l2 reads the user and item representations (stages[0], stages[1]) of rating models "
                       "(mf, neumf).")
    squares = lambda x: jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1)
    return jnp.mean(squares(student.stages[0]) + squares(student.stages[1])), {}, {}
