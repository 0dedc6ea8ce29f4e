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
  helper `score_pairs` lays the [B·S] pairs out as [B, S] per batch row. Items drawn in the step (uniform
  uninteresting items for RRD, BD's candidates, negatives of the interaction objective) come from `ctx.rng`,
  a pure function of the step, so a resumed run draws the same. Uniform draws are from all items: with
  ~5% of a matrix rated, about 1 in 20 is a rated item, which these distillers do not filter [assume].

Each row of a batch is one rating, so a user with several ratings in a batch carries a ranking term once per
rating, as in the references (rank_distill's terms are per training instance).
"""

from __future__ import annotations

import dataclasses
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


def _check_prepared(top_items: Sequence, name: str) -> None:
  if not top_items:
    raise KDJaxError(f"{name}: the teacher's ranked items (top_items) are empty. They are filled before training "
                     "from the teacher's predictions on every (user, item) pair: run it on rating data "
                     "(config.task='rating') with config.teacher.workdir set, under config.scheme='distill'.")


# ------------------------------------------------------------------------------------------------------
# RD: ranking distillation.


@dataclasses.dataclass(frozen=True)
class RD(Distiller):
  """Ranking Distillation (Tang & Wang, KDD 2018): the teacher's top-`k` unrated items of the batch's user
  as extra targets with position weights `w_r ∝ exp(−r/λ)`; see `losses.ranking_distillation`.

  With `form='mse'` (default) the student's predicted rating of the r-th item regresses onto the teacher's
  [assume, METHODS.md 15b's explicit-feedback adaptation]; `form='logistic'` is the reference's implicit form
  (−log σ of the student's score). Defaults k = 10, λ = 1: the reference's `--K`, `--lamda`
  (graytowne/rank_distill `distill_caser.py`); its dynamic (rank-discrepancy) weight is not implemented.

  Attributes:
    k: K, the length of the teacher's list.
    lam: λ, the position weights' sharpness.
    form: 'mse' or 'logistic'.
    top_items: filled by `prepare`: every user's k best unrated items by the teacher.
  """

  k: int = 10
  lam: float = 1.0
  form: str = "mse"
  top_items: Tuple[Tuple[int, ...], ...] = ()

  def __post_init__(self):
    require_positive("rd", k=self.k, lam=self.lam)
    if self.form not in ("mse", "logistic"):
      raise ValueError(f"rd: form must be {one_of(('mse', 'logistic'))}, got {self.form!r}.")
    object.__setattr__(self, "top_items", _as_rows(self.top_items))

  def prepare(self, data: TrainingData) -> "RD":
    _rating_data(data, "rd")
    return dataclasses.replace(self, top_items=top_unrated(data.teacher_scores(0), data.rated, self.k, name="rd"))

  def init(self, rng, student, teacher, batch):
    _single(teacher, "rd")
    _check_prepared(self.top_items, "rd")
    return {}

  def loss(self, variables, student, teacher, batch, ctx):
    items = jnp.asarray(self.top_items, jnp.int32)[batch["user"]]
    s, t = score_pairs(_forward(ctx, "rd"), batch["user"], items)
    return losses.ranking_distillation(s, _single(t, "rd"), lam=self.lam, form=self.form), {}, {}


# ------------------------------------------------------------------------------------------------------
# CD: collaborative distillation.


@dataclasses.dataclass(frozen=True)
class CD(Distiller):
  """Collaborative Distillation (Lee, Choi, Lee & Shim, ICDM 2019, arXiv:1911.05276), teacher-guided: per batch
  row, `num_samples` of the user's unrated items drawn rank-aware, P(rank r) ∝ exp(−r/λ) over the teacher's
  ranking (without replacement), with the teacher's predictions as soft targets
  (`losses.pointwise_distillation`: MSE for ratings [assume], or the paper's BCE on sigmoids).

  The ranking is truncated to the teacher's `candidates` best unrated items (exp(−candidates/λ) is
  negligible at the defaults). No reference code was found; the defaults are ours [assume]: 10 samples, λ = 10,
  100 candidates. The paper's student-guided mode (sampling by the student's ranking) is not implemented.

  Attributes:
    num_samples: items per batch row.
    lam: λ of the rank-aware sampling.
    candidates: length of the teacher's ranking kept per user.
    form: 'mse' or 'bce'.
    top_items: filled by `prepare`.
  """

  num_samples: int = 10
  lam: float = 10.0
  candidates: int = 100
  form: str = "mse"
  top_items: Tuple[Tuple[int, ...], ...] = ()

  def __post_init__(self):
    require_positive("cd", num_samples=self.num_samples, lam=self.lam, candidates=self.candidates)
    if self.num_samples > self.candidates:
      raise ValueError(f"cd: num_samples={self.num_samples} exceeds candidates={self.candidates}.")
    if self.form not in ("mse", "bce"):
      raise ValueError(f"cd: form must be {one_of(('mse', 'bce'))}, got {self.form!r}.")
    object.__setattr__(self, "top_items", _as_rows(self.top_items))

  def prepare(self, data: TrainingData) -> "CD":
    _rating_data(data, "cd")
    return dataclasses.replace(self, top_items=top_unrated(data.teacher_scores(0), data.rated, self.candidates,
                                                           name="cd"))

  def init(self, rng, student, teacher, batch):
    _single(teacher, "cd")
    _check_prepared(self.top_items, "cd")
    return {}

  def loss(self, variables, student, teacher, batch, ctx):
    users = batch["user"]
    rank_logits = -jnp.arange(1, self.candidates + 1, dtype=jnp.float32) / self.lam
    ranks = sample_without_replacement(ctx.rng, jnp.broadcast_to(rank_logits, (users.shape[0], self.candidates)),
                                       self.num_samples)
    items = jnp.take_along_axis(jnp.asarray(self.top_items, jnp.int32)[users], ranks, axis=1)
    s, t = score_pairs(_forward(ctx, "cd"), users, items)
    return losses.pointwise_distillation(s, _single(t, "cd"), form=self.form), {}, {}


# ------------------------------------------------------------------------------------------------------
# DE-RRD: distillation experts and relaxed ranking distillation.


@dataclasses.dataclass(frozen=True)
class RRD(Distiller):
  """Relaxed Ranking Distillation (Kang et al., CIKM 2020), the ranking half of DE-RRD: per batch row,
  `num_interesting` items drawn from the teacher's `candidates` best unrated items with P(rank r) ∝
  exp(−r/T) without replacement and kept in the teacher's order, and `num_uninteresting` items drawn
  uniformly; the student's scores enter `losses.relaxed_ranking`.

  As the reference (SeongKu-Kang/DE-RRD_CIKM20, `Utils/dataset.py` `URRD_sampling`), except: the draws are
  per step, not per epoch; uninteresting items come from all items with the user's interesting list masked
  out, rather than from the unobserved items outside it (rated items are not removed [assume]). The reference's
  defaults (K = 40 of the top 500, T = 10, L = 40) assume thousands of items; ours are scaled to the
  synthetic data's 400 [assume]: 10 of the top 50, T = 10, 40 uninteresting. `reduction='sum'` is the
  reference's (weight 0.001 there).

  Attributes:
    num_interesting, candidates, temperature: K, the teacher's list length, T.
    num_uninteresting: L.
    reduction: 'sum' or 'mean' over batch rows.
    top_items: filled by `prepare`.
  """

  num_interesting: int = 10
  candidates: int = 50
  temperature: float = 10.0
  num_uninteresting: int = 40
  reduction: str = "sum"
  top_items: Tuple[Tuple[int, ...], ...] = ()

  def __post_init__(self):
    require_positive("rrd", num_interesting=self.num_interesting, candidates=self.candidates,
                     temperature=self.temperature, num_uninteresting=self.num_uninteresting)
    if self.num_interesting > self.candidates:
      raise ValueError(f"rrd: num_interesting={self.num_interesting} exceeds candidates={self.candidates}.")
    if self.reduction not in REDUCTIONS:
      raise ValueError(f"rrd: reduction must be {one_of(REDUCTIONS)}, got {self.reduction!r}.")
    object.__setattr__(self, "top_items", _as_rows(self.top_items))

  def prepare(self, data: TrainingData) -> "RRD":
    _rating_data(data, "rrd")
    return dataclasses.replace(self, top_items=top_unrated(data.teacher_scores(0), data.rated, self.candidates,
                                                           name="rrd"))

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
    num_items = getattr(ctx.task, "num_items", 0)
    if not num_items:
      raise KDJaxError("rrd draws uninteresting items from all items: it needs the rating task's item count "
                       "(ctx.task.num_items), which the run sets from the data.")
    uninteresting = jax.random.randint(uninteresting_rng, (users.shape[0], self.num_uninteresting), 0, num_items)
    keep = ~jnp.any(uninteresting[:, :, None] == top[:, None, :], axis=-1)
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
    if not self.anneal_epochs:
      return jnp.float32(self.temperature)
    progress = (jnp.asarray(epoch, jnp.float32) - 1.0) / self.anneal_epochs
    t = self.temperature * (self.end_temperature / self.temperature) ** progress
    return jnp.maximum(t, self.end_temperature)

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


@dataclasses.dataclass(frozen=True)
class TD(Distiller):
  """Full Topology Distillation (Kang et al., KDD 2021): the cosine-similarity matrix among the batch's users
  and items (the rows of `stages[0]` then `stages[1]`, 2B entities) matches the teacher's;
  `losses.topology_distillation`. The reference (`model.py` `FTD.get_TD_loss`) takes the batch's unique users
  and items; here every row counts (a user with several ratings in the batch appears several times).
  The hierarchical form (HTD) is not implemented.

  Attributes:
    reduction: 'sum' (the reference's, weight 0.001) or 'mean'.
  """

  reduction: str = "sum"

  def __post_init__(self):
    if self.reduction not in REDUCTIONS:
      raise ValueError(f"td: reduction must be {one_of(REDUCTIONS)}, got {self.reduction!r}.")

  @staticmethod
  def _entities(out: ModelOutput, who: str) -> jax.Array:
    if len(out.stages) < 2:
      raise KDJaxError(f"td reads the user and item representations (stages[0], stages[1]) of rating models; the "
                       f"{who} has no such stages.")
    return jnp.concatenate([out.stages[0], out.stages[1]], axis=0)

  def init(self, rng, student, teacher, batch):
    self._entities(student, "student"), self._entities(_single(teacher, "td"), "teacher")
    return {}

  def loss(self, variables, student, teacher, batch, ctx):
    s, t = self._entities(student, "student"), self._entities(_single(teacher, "td"), "teacher")
    return losses.topology_distillation(s, t, reduction=self.reduction), {}, {}


# ------------------------------------------------------------------------------------------------------
# BD: bidirectional distillation (under config.scheme='mutual').


@dataclasses.dataclass(frozen=True)
class BD(Distiller):
  """Bidirectional Distillation (Kweon, Kang & Yu, WWW 2021, arXiv:2106.02870), one direction: the network
  being trained ("student" here, either network under config.scheme='mutual') learns the other's predictions
  on items sampled by rank discrepancy.

  Per batch row: `num_candidates` items drawn uniformly; both networks score them (`ctx.forward`) and rank
  them; a candidate's relative rank ρ = (the number of candidates scored higher) / num_candidates estimates its
  position in the whole list as a fraction. `num_samples` candidates are drawn without replacement with
  probability ∝ `losses.rank_discrepancy_probability(ρ_own, ρ_other, epsilon)` = tanh(max(ε (ρ_own −
  ρ_other), 0)) (items the other network ranks better than this one), and this network's predictions regress
  onto the other's (`losses.pointwise_distillation`, MSE for ratings [assume]); candidates with probability 0
  are masked out. ε here acts on relative ranks, ε_paper = ε / num_items on absolute ones.

  Under the mutual scheme both networks share this term's hyper-parameters, whereas the paper tunes ε and the
  loss weight per direction (teacher → student and student → teacher); the paper's per-epoch full ranking is
  replaced by the per-step candidate estimate. Defaults are ours [assume]: 100 candidates, 10 samples, ε = 10.
  No reference code was found.

  Attributes:
    num_candidates, num_samples, epsilon: see above.
    form: 'mse' or 'bce'.
  """

  num_candidates: int = 100
  num_samples: int = 10
  epsilon: float = 10.0
  form: str = "mse"

  def __post_init__(self):
    require_positive("bd", num_candidates=self.num_candidates, num_samples=self.num_samples, epsilon=self.epsilon)
    if self.num_samples > self.num_candidates:
      raise ValueError(f"bd: num_samples={self.num_samples} exceeds num_candidates={self.num_candidates}.")
    if self.form not in ("mse", "bce"):
      raise ValueError(f"bd: form must be {one_of(('mse', 'bce'))}, got {self.form!r}.")

  def init(self, rng, student, teacher, batch):
    _single(teacher, "bd")
    return {}

  def loss(self, variables, student, teacher, batch, ctx):
    users = batch["user"]
    num_items = getattr(ctx.task, "num_items", 0)
    if not num_items:
      raise KDJaxError("bd draws candidates from all items: it needs the rating task's item count "
                       "(ctx.task.num_items), which the run sets from the data.")
    candidate_rng, sample_rng = jax.random.split(ctx.rng)
    candidates = jax.random.randint(candidate_rng, (users.shape[0], self.num_candidates), 0, num_items)
    forward = _forward(ctx, "bd")
    # Ranking the candidates needs no gradient; only the sampled pairs are scored again with one.
    own_all, other_all = jax.lax.stop_gradient(score_pairs(forward, users, candidates))
    other_all = _single(other_all, "bd")
    # How many of its row's candidates score higher, as a fraction (a comparison count: faster than sorting on CPU).
    relative_rank = lambda x: jnp.sum(x[:, None, :] > x[:, :, None], axis=-1) / self.num_candidates
    p = losses.rank_discrepancy_probability(relative_rank(own_all), relative_rank(other_all), self.epsilon)
    picked = sample_without_replacement(sample_rng, jnp.log(p), self.num_samples)
    mask = jnp.take_along_axis(p, picked, axis=1) > 0
    own, other = score_pairs(forward, users, jnp.take_along_axis(candidates, picked, axis=1))
    value = losses.pointwise_distillation(own, _single(other, "bd"), form=self.form, mask=mask)
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
  `num_negatives` items per row drawn uniformly from all items are negatives, and the model's output is read
  as the logit of "rated". A run whose loss is this term alone trains DUET's preference teacher on the rating
  data (its RMSE is then meaningless). Negatives are not filtered for rated items [assume]; 4 per positive
  is our choice [assume]. Reads no teacher.

  Attributes:
    num_negatives: negatives per batch row.
  """

  num_negatives: int = 4
  needs_teacher = False

  def __post_init__(self):
    require_positive("interaction", num_negatives=self.num_negatives)

  def loss(self, variables, student, teacher, batch, ctx):
    num_items = getattr(ctx.task, "num_items", 0)
    if not num_items:
      raise KDJaxError("interaction draws negatives from all items: it needs the rating task's item count "
                       "(ctx.task.num_items), which the run sets from the data.")
    negatives = jax.random.randint(ctx.rng, (batch["user"].shape[0], self.num_negatives), 0, num_items)
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
