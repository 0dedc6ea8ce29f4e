"""Losses for recommender distillation (METHODS.md item 15b): RD, CD, DE-RRD, TD, BD and DUET's parts.

Pure functions of arrays: no Flax, no optax, no config. Scores are a model's predictions for (user, item) pairs
laid out per user, [B, n] (row b: the batch's b-th user, column j: its j-th item); representations are
[B, d]. Every function computes in float32, or float64 for float64 inputs (`kd_jax.losses.dtypes`).

The papers distil implicit-feedback recommenders (scores are logits of "interacted"); `kd_jax` distils
explicit ratings, where METHODS.md 15b's adaptation is [assume]: the targets are the teacher's predicted
ratings and the pointwise loss is the squared error. Each function says which form is the reference's and
which the adaptation; `form` switches between them where both exist. Which items enter a loss (the
teacher's top-K, rank-aware samples) is the distillers' business (`kd_jax.distillers.recommender`).
"""

from __future__ import annotations

from typing import Literal, Optional

import jax
import jax.numpy as jnp

from kd_jax.losses.dtypes import at_least_float32

Reduction = Literal["sum", "mean"]


def _reduce(per_row: jax.Array, reduction: str, name: str) -> jax.Array:
  if reduction == "sum":
    return jnp.sum(per_row)
  if reduction == "mean":
    return jnp.mean(per_row)
  raise ValueError(f"{name}: reduction must be 'sum' or 'mean', got {reduction!r}.")


def _pair(student: jax.Array, teacher: jax.Array, name: str):
  if student.shape != teacher.shape:
    raise ValueError(f"{name}: student {student.shape} and teacher {teacher.shape} scores must have one shape.")
  s = at_least_float32(student)
  return s, jax.lax.stop_gradient(at_least_float32(teacher)).astype(s.dtype)


def ranking_distillation(student: jax.Array, teacher: jax.Array, *, lam: float = 1.0,
                         form: Literal["mse", "logistic"] = "mse",
                         discrepancy: Optional[jax.Array] = None) -> jax.Array:
  """Ranking Distillation (Tang & Wang, "Ranking Distillation: Learning Compact Ranking Models With High
  Performance for Recommender System", KDD 2018, arXiv:1809.07428): the teacher's top-K items as extra targets
  with position weights.

      w_r = exp(−r/λ) / Σ_{r'=1..K} exp(−r'/λ)                          (r = 1..K, the teacher's rank)
      'logistic' (the reference): L = (1/B) Σ_b Σ_r w_r · (−log σ(s_br))
      'mse' (explicit ratings [assume]): L = (1/B) Σ_b Σ_r w_r · (s_br − t_br)²

  Column r − 1 of `student`/`teacher` is the user's r-th item of the teacher's ranking. The reference
  (graytowne/rank_distill, `distill_caser.py` `weight_static`, `losses.py` `weighted_sigmoid_log_loss`)
  normalises the weights to sum 1, sums over the K items and averages over the batch; its defaults are
  K = 10, λ = 1 (`--K`, `--lamda`). `discrepancy` multiplies the position weights elementwise: the reference's
  hybrid weight w_r · d_br, with d from `rank_discrepancy_weight` and no renormalisation (its default). In
  'logistic' the teacher's scores are not read (only its ranking, through which items are given).

  Args:
    student: [B, K] the student's scores of the teacher's top-K items, best first.
    teacher: [B, K] the teacher's scores of them; constants (`stop_gradient`).
    lam: λ > 0, the sharpness of the position weights.
    form: 'mse' (default, the explicit-feedback adaptation) or 'logistic' (the reference's).
    discrepancy: [B, K] extra per-item weights d_br (constants); None = 1.
  """
  s, t = _pair(student, teacher, "ranking_distillation")
  if form not in ("mse", "logistic"):
    raise ValueError(f"ranking_distillation: form must be 'mse' or 'logistic', got {form!r}.")
  ranks = jnp.arange(1, s.shape[-1] + 1, dtype=s.dtype)
  weights = jax.nn.softmax(-ranks / lam)
  if discrepancy is not None:
    weights = weights * jax.lax.stop_gradient(jnp.asarray(discrepancy, s.dtype))
  per_item = jnp.square(s - t) if form == "mse" else -jax.nn.log_sigmoid(s)
  return jnp.mean(jnp.sum(per_item * weights, axis=-1))


def rank_discrepancy_weight(student_rank: jax.Array, position: jax.Array, mu: float) -> jax.Array:
  """RD's ranking-discrepancy weight of the teacher's r-th item (Tang & Wang, KDD 2018, arXiv:1809.07428, Eq. 9):

      d = max( tanh( μ · (r̂_s − (r − 1)) ), 0 )

  with r̂_s the student's estimated 0-based rank of the item among all items and r − 1 its 0-based position in
  the teacher's list: large where the student ranks the teacher's item much lower than the teacher does. As the
  reference (graytowne/rank_distill, `distill_caser.py`, the `dynamic_weight` loop: `tanh(mu * (predicted_rank
  − col))` clamped at 0; default μ = 0.1, `--mu`). Constants for the gradient.

  Args:
    student_rank: [B, K] r̂_s.
    position: [K] or [B, K] the 0-based positions in the teacher's list.
    mu: μ > 0.
  """
  r = jax.lax.stop_gradient(at_least_float32(student_rank))
  pos = jnp.asarray(position, r.dtype)
  return jnp.maximum(jnp.tanh(mu * (r - pos)), 0.0)


def pointwise_distillation(student: jax.Array, teacher: jax.Array, *, form: Literal["mse", "bce"] = "mse",
                           mask: Optional[jax.Array] = None) -> jax.Array:
  """The teacher's predictions as soft targets on (user, item) pairs that are not observed ratings.

      'mse' (explicit ratings [assume]): L = Σ m (s − t)² / Σ m
      'bce' (implicit feedback):         L = Σ m · BCE(σ(s), σ(t)) / Σ m,  BCE(p, q) = −q log p − (1 − q) log(1 − p)

  The pointwise objective of Collaborative Distillation (Lee, Choi, Lee & Shim, "Collaborative Distillation
  for Top-N Recommendation", ICDM 2019, arXiv:1911.05276 [paper]: the teacher's probability for sampled
  unobserved items as a soft label), of Bidirectional Distillation (Kweon, Kang & Yu, "Bidirectional
  Distillation for Top-K Recommender System", WWW 2021, arXiv:2106.02870 [paper]: each model follows the
  other's prediction on rank-discrepancy samples) and of DUET's soft ratings (Bae, Kim, Lee & Kim, Information
  Fusion 120, 2025 [paper]). BD's reference (WonbinKweon/BD_WWW2021) sums `BCEWithLogitsLoss` over the pairs
  with targets σ(t / 5); no code for CD was found. The mean over the carried pairs is our reduction [assume]. An
  all-zero mask gives 0.

  Args:
    student: [B, S] student scores (predicted ratings, or logits for 'bce').
    teacher: [B, S] the teacher's; constants (`stop_gradient`).
    form: 'mse' (default) or 'bce'.
    mask: [B, S] 0/1, which pairs carry the term; constants. None = all.
  """
  s, t = _pair(student, teacher, "pointwise_distillation")
  if form == "mse":
    per_pair = jnp.square(s - t)
  elif form == "bce":
    q = jax.nn.sigmoid(t)
    per_pair = -(q * jax.nn.log_sigmoid(s) + (1.0 - q) * jax.nn.log_sigmoid(-s))
  else:
    raise ValueError(f"pointwise_distillation: form must be 'mse' or 'bce', got {form!r}.")
  m = jnp.ones_like(per_pair) if mask is None else jax.lax.stop_gradient(jnp.asarray(mask, per_pair.dtype))
  return jnp.sum(per_pair * m) / jnp.maximum(jnp.sum(m), 1.0)


def relaxed_ranking(interesting: jax.Array, uninteresting: jax.Array, *,
                    uninteresting_mask: Optional[jax.Array] = None, reduction: Reduction = "sum") -> jax.Array:
  """Relaxed Ranking Distillation, RRD (Kang, Hwang, Kweon & Yu, "DE-RRD: A Knowledge Distillation Framework
  for Recommender System", CIKM 2020, arXiv:2012.04357): a Plackett–Luce likelihood that ranks the teacher's
  interesting items, in the teacher's order, above the uninteresting ones, ignoring the order among those.

      L_b = −Σ_{k=1..K} [ s_bk − log( Σ_{j=k..K} exp(s_bj) + Σ_l m_bl exp(u_bl) ) ]

  with s the student's scores of the interesting items (teacher's order, best first) and u of the
  uninteresting ones. As the reference (SeongKu-Kang/DE-RRD_CIKM20, `Utils/loss.py` `relaxed_ranking_loss`)
  the loss is summed over the users (`reduction='sum'`; 'mean' averages); computed with log-sum-exp here.
  `uninteresting_mask` drops sampled uninteresting items that must not count (0 = ignored), e.g. a uniform
  sample that hit an interesting item. The reference's defaults (`main_URRD.py`): K = 40 interesting items
  drawn from the teacher's top 500 by rank, L = 40 uninteresting, weight 0.001. The loss ranks scores, so it
  applies to predicted ratings unchanged.

  Args:
    interesting: [B, K] the student's scores of the interesting items, in the teacher's order.
    uninteresting: [B, L] the student's scores of the uninteresting items.
    uninteresting_mask: [B, L] 0/1; None = all count. Constants.
    reduction: 'sum' (default, the reference's) or 'mean' over users.
  """
  s, u = at_least_float32(interesting), at_least_float32(uninteresting)
  if s.ndim != 2 or u.ndim != 2 or s.shape[0] != u.shape[0]:
    raise ValueError(f"relaxed_ranking: interesting [B, K] and uninteresting [B, L] scores, got {s.shape} and "
                     f"{u.shape}.")
  u = u.astype(s.dtype)
  tail = jax.lax.cumlogsumexp(s, axis=1, reverse=True)  # log Σ_{j>=k} exp(s_j)
  if uninteresting_mask is None:
    rest = jax.nn.logsumexp(u, axis=1, keepdims=True)
  else:
    m = jax.lax.stop_gradient(jnp.asarray(uninteresting_mask, bool))
    shift = jax.lax.stop_gradient(jnp.max(jnp.where(m, u, -jnp.inf), axis=1, keepdims=True))
    shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    total = jnp.sum(jnp.where(m, jnp.exp(u - shift), 0.0), axis=1, keepdims=True)
    rest = jnp.where(total > 0, jnp.log(jnp.where(total > 0, total, 1.0)) + shift, -jnp.inf)
  per_user = -jnp.sum(s - jnp.logaddexp(tail, rest), axis=1)
  return _reduce(per_user, reduction, "relaxed_ranking")


def expert_selection(probabilities: jax.Array, gumbel: jax.Array, temperature: float) -> jax.Array:
  """DE's expert selection: a Gumbel-softmax sample over the selection network's distribution.

      z = softmax((log(α + 1e-10) + g) / τ),    g ~ Gumbel(0, 1)

  as the reference (SeongKu-Kang/DE-RRD_CIKM20, `Models/DE.py` `get_DE_loss`), where α = softmax(W t) is
  computed from the teacher's representation t; τ anneals from 1 towards 1e-10 over training (`run.py`
  `T_annealing`), which makes z one-hot: each entity is served by one expert. Differentiable in α.

  Args:
    probabilities: [B, E] the selection distribution α.
    gumbel: [B, E] Gumbel(0, 1) noise (constants).
    temperature: τ > 0.
  """
  alpha = at_least_float32(probabilities)
  g = jax.lax.stop_gradient(at_least_float32(gumbel)).astype(alpha.dtype)
  return jax.nn.softmax((jnp.log(alpha + 1e-10) + g) / temperature, axis=-1)


def distillation_experts(expert_outputs: jax.Array, selection: jax.Array, teacher: jax.Array, *,
                         reduction: Reduction = "sum") -> jax.Array:
  """Distillation Experts, DE (Kang et al., CIKM 2020, arXiv:2012.04357): the selected experts' reconstruction
  of the teacher's representation from the student's.

      L = Σ_b ‖ t_b − Σ_e z_be · f_e(s_b) ‖²

  `expert_outputs[b, e]` is expert e's map f_e of the student representation s_b into the teacher's space
  (a small MLP, [d_s, (d_s + d_t)/2, d_t] with ReLU, in the reference), z the selection (`expert_selection`).
  As the reference (`Models/DE.py` `get_DE_loss`: `((t − expert_outputs) ** 2).sum(-1).sum()`) it is summed
  over entities (`reduction='sum'`; 'mean' averages); the reference weighs it by 0.01 (`--lmbda_DE`) and adds
  the users' term to half the sum of the positive and negative items' terms.

  Args:
    expert_outputs: [B, E, d_t].
    selection: [B, E] the selection weights z.
    teacher: [B, d_t] the teacher's representations; constants (`stop_gradient`).
    reduction: 'sum' (default, the reference's) or 'mean' over entities.
  """
  out = at_least_float32(expert_outputs)
  z = at_least_float32(selection).astype(out.dtype)
  t = jax.lax.stop_gradient(at_least_float32(teacher)).astype(out.dtype)
  if out.ndim != 3 or z.shape != out.shape[:2] or t.shape != (out.shape[0], out.shape[2]):
    raise ValueError(f"distillation_experts: expert outputs [B, E, D], selection [B, E] and teacher [B, D], got "
                     f"{out.shape}, {z.shape} and {t.shape}.")
  mixed = jnp.einsum("bed,be->bd", out, z)
  return _reduce(jnp.sum(jnp.square(t - mixed), axis=-1), reduction, "distillation_experts")


def _cosine_matrix(x: jax.Array) -> jax.Array:
  # Rows normalised with a floor (the reference divides by the raw norm, which a zero row turns into NaN).
  norms = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), 1e-24))
  unit = x / norms
  return unit @ unit.T


def topology_distillation(student: jax.Array, teacher: jax.Array, *, reduction: Reduction = "sum") -> jax.Array:
  """Full Topology Distillation, FTD (Kang, Kweon, Lee, Lian, Xie & Yu, "Topology Distillation for Recommender
  System", KDD 2021, arXiv:2106.08700): the student's cosine-similarity matrix among a batch's entities (its
  users and items together) matches the teacher's.

      L = Σ_{i,j} ( cos(t_i, t_j) − cos(s_i, s_j) )²

  As the reference (SeongKu-Kang/Topology_Distillation_KDD21, `model.py` `FTD.get_TD_loss`, `utils.py` `sim`)
  over the concatenation [users; items], summed (`reduction='sum'`; 'mean' averages over the N² pairs); the
  reference's weight is 0.001 (`lmbda_TD`). The hierarchical form (HTD) is `entity_topology` plus
  `group_topology`.

  Args:
    student: [N, d_s] the student's representations of N entities.
    teacher: [N, d_t] the teacher's, the same entities in the same order; constants (`stop_gradient`).
    reduction: 'sum' (default, the reference's) or 'mean'.
  """
  s = at_least_float32(student)
  t = jax.lax.stop_gradient(at_least_float32(teacher)).astype(s.dtype)
  if s.ndim != 2 or t.ndim != 2 or s.shape[0] != t.shape[0]:
    raise ValueError(f"topology_distillation: student [N, d_s] and teacher [N, d_t], got {s.shape} and {t.shape}.")
  return _reduce(jnp.square(_cosine_matrix(t) - _cosine_matrix(s)).reshape(-1), reduction, "topology_distillation")


def _cosine_between(a: jax.Array, b: jax.Array) -> jax.Array:
  unit = lambda x: x / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), 1e-24))
  return unit(a) @ unit(b).T


def _topology_inputs(student: jax.Array, teacher: jax.Array, groups: jax.Array, name: str):
  s = at_least_float32(student)
  t = jax.lax.stop_gradient(at_least_float32(teacher)).astype(s.dtype)
  g = jax.lax.stop_gradient(jnp.asarray(groups))
  if s.ndim != 2 or t.ndim != 2 or s.shape[0] != t.shape[0] or g.shape != (s.shape[0],):
    raise ValueError(f"{name}: student [N, d_s], teacher [N, d_t] and groups [N], got {s.shape}, {t.shape} and "
                     f"{g.shape}.")
  return s, t, g


def _masked_sum(values: jax.Array, mask: jax.Array, reduction: str, name: str) -> jax.Array:
  total = jnp.sum(jnp.where(mask, values, 0.0))
  if reduction == "sum":
    return total
  if reduction == "mean":
    return total / jnp.maximum(jnp.sum(mask), 1)
  raise ValueError(f"{name}: reduction must be 'sum' or 'mean', got {reduction!r}.")


def entity_topology(student: jax.Array, teacher: jax.Array, groups: jax.Array, *,
                    reduction: Reduction = "sum") -> jax.Array:
  """HTD's entity-level topology (Kang, Kweon, Lee, Lian, Xie & Yu, "Topology Distillation for Recommender
  System", KDD 2021, arXiv:2106.08700): the cosine similarities among entities of the same preference group.

      L = Σ_{i,j: g_i = g_j, cos(t_i, t_j) > 0} ( cos(t_i, t_j) − cos(s_i, s_j) )²

  As the reference (SeongKu-Kang/Topology_Distillation_KDD21, `model.py` `HTD.get_TD_loss1/2`): the pairs are
  those of one group (`Z Zᵀ`) whose teacher similarity is positive (it keeps `t_sim[t_sim > 0]` of the masked
  matrix, so same-group pairs with cos ≤ 0 drop out too), summed (`reduction='sum'`; 'mean' divides by the
  number of pairs kept). The diagonal counts and contributes (1 − 1)² = 0.

  Args:
    student: [N, d_s] the student's representations.
    teacher: [N, d_t] the teacher's; constants (`stop_gradient`).
    groups: [N] int, each entity's group (users and items in disjoint ids); constants.
    reduction: 'sum' (default, the reference's) or 'mean'.
  """
  s, t, g = _topology_inputs(student, teacher, groups, "entity_topology")
  ct, cs = _cosine_matrix(t), _cosine_matrix(s)
  keep = (g[:, None] == g[None, :]) & (ct > 0)
  return _masked_sum(jnp.square(ct - cs), keep, reduction, "entity_topology")


def group_topology(student: jax.Array, teacher: jax.Array, groups: jax.Array, *, num_groups: int,
                   form: Literal["prototype_entity", "prototype_prototype"] = "prototype_entity",
                   reduction: Reduction = "sum") -> jax.Array:
  """HTD's group-level topology (Kang et al., KDD 2021, arXiv:2106.08700): similarities that involve the groups'
  prototypes, P_k = the mean representation of the batch's entities in group k (groups without entities left out).

      'prototype_entity':    L = Σ_{k present} Σ_i ( cos(P^t_k, t_i) − cos(P^s_k, s_i) )²
      'prototype_prototype': L = Σ_{k, l present} ( cos(P^t_k, P^t_l) − cos(P^s_k, P^s_l) )²

  'prototype_entity' is the reference's `choice='second'` ("Group(P,e)", `HTD.get_TD_loss2`), the choice its
  guide notebook runs; 'prototype_prototype' its `choice='first'` ("Group(P,P)", `get_TD_loss1`). The
  reference computes both prototypes under `torch.no_grad()`: in 'prototype_entity' the student's gradient then
  flows through s_i only, which is kept here (P^s is a constant); in 'prototype_prototype' that would leave the
  term without any gradient, so here the student's prototypes are differentiable there [assume]. Summed as the
  reference (`reduction='sum'`; 'mean' divides by the number of terms).

  Args:
    student: [N, d_s]; teacher: [N, d_t] (constants); groups: [N] int in [0, num_groups).
    num_groups: the number of group ids (HTD: K user groups and K item groups, 2K).
    form: 'prototype_entity' (default) or 'prototype_prototype'.
    reduction: 'sum' or 'mean'.
  """
  s, t, g = _topology_inputs(student, teacher, groups, "group_topology")
  if form not in ("prototype_entity", "prototype_prototype"):
    raise ValueError(f"group_topology: form must be 'prototype_entity' or 'prototype_prototype', got {form!r}.")
  z = jax.nn.one_hot(g, num_groups, dtype=s.dtype)  # [N, G]
  counts = jnp.sum(z, axis=0)
  present = counts > 0
  share = z.T / jnp.maximum(counts, 1.0)[:, None]  # [G, N]: row k averages group k's entities
  proto_t, proto_s = share @ t, share @ s
  if form == "prototype_entity":
    proto_s = jax.lax.stop_gradient(proto_s)
    ct, cs = _cosine_between(proto_t, t), _cosine_between(proto_s, s)
    mask = jnp.broadcast_to(present[:, None], ct.shape)
  else:
    ct, cs = _cosine_between(proto_t, proto_t), _cosine_between(proto_s, proto_s)
    mask = present[:, None] & present[None, :]
  return _masked_sum(jnp.square(ct - cs), mask, reduction, "group_topology")


def rank_discrepancy_probability(own_rank: jax.Array, other_rank: jax.Array, epsilon: float) -> jax.Array:
  """BD's rank-discrepancy-aware sampling probability of an item for the model that learns from the other:

      p = tanh( max( ε · (rank_own − rank_other), 0 ) )

  high where the other model ranks the item much better (a smaller rank) than the learner does (Kweon et al.,
  WWW 2021, arXiv:2106.02870): the teacher → student direction's sampling (reference WonbinKweon/BD_WWW2021,
  `weights_S`; see `rank_discrepancy_logits` for both directions). Ranks are 0-based positions over the whole
  item list; ε sets how large a discrepancy saturates the probability. Probabilities, not a loss: constant for
  the gradient.
  """
  own = jax.lax.stop_gradient(at_least_float32(own_rank))
  other = jax.lax.stop_gradient(at_least_float32(other_rank)).astype(own.dtype)
  return jnp.tanh(jnp.maximum(epsilon * (own - other), 0.0))


def rank_discrepancy_logits(own_rank: jax.Array, other_rank: jax.Array, epsilon: float,
                            form: Literal["tanh", "exp"] = "tanh") -> jax.Array:
  """Log-probabilities (up to a constant) of BD's rank-discrepancy-aware sampling for the network that learns
  (Kweon, Kang & Yu, "Bidirectional Distillation for Top-K Recommender System", WWW 2021, arXiv:2106.02870):

      'tanh' (teacher → student): p ∝ tanh( max( ε · (rank_own − rank_other), 0 ) )   (log 0 = −inf)
      'exp'  (student → teacher): p ∝ exp( ε · (rank_own − rank_other) )

  Ranks are positions with 0 (or 1) for the best item, so both favour items the other network ranks better
  than the learner. The reference (WonbinKweon/BD_WWW2021, `BD_WWW2021_BPR_CiteULike.ipynb`: `weights_S` with
  tanh and `eps_t = 1e-2`, `weights_T` with exp and `eps = 1e-4`, on absolute ranks) uses the tanh form for the
  student and the exp form for the teacher: the student follows only items the teacher places clearly higher,
  while the teacher, being the stronger, samples every item but leans towards those the student places higher.
  The notebook orders its ranks by ascending score (`torch.argsort`), which flips the sign of its differences;
  this follows the paper's description (rank 1 = the top item). Constants for the gradient.
  """
  own = jax.lax.stop_gradient(at_least_float32(own_rank))
  other = jax.lax.stop_gradient(at_least_float32(other_rank)).astype(own.dtype)
  if form == "tanh":
    return jnp.log(rank_discrepancy_probability(own, other, epsilon))
  if form == "exp":
    return epsilon * (own - other)
  raise ValueError(f"rank_discrepancy_logits: form must be 'tanh' or 'exp', got {form!r}.")


def interaction_log_loss(positive: jax.Array, negative: jax.Array) -> jax.Array:
  """The "rated or not" objective: observed pairs as positives, sampled pairs as negatives, logistic loss.

      L = (1/B) Σ_b [ −log σ(p_b) − Σ_n log(1 − σ(q_bn)) ]

  the point-wise log loss of the rank_distill reference (graytowne/rank_distill, `losses.py`
  `sigmoid_log_loss`: summed over a row's positive and negatives, averaged over rows). DUET's first teacher
  learns users' pre-use preferences, whether they rate an item at all, from it: the model's rating output is
  read as the logit of "rated" (Bae et al., Information Fusion 2025 [paper]; this objective for it is
  [assume]).

  Args:
    positive: [B] logits of the observed (user, item) pairs.
    negative: [B, N] logits of N sampled pairs per row.
  """
  p = at_least_float32(positive)
  q = at_least_float32(negative).astype(p.dtype)
  if p.ndim != 1 or q.ndim != 2 or q.shape[0] != p.shape[0]:
    raise ValueError(f"interaction_log_loss: positive [B] and negative [B, N] logits, got {p.shape} and {q.shape}.")
  return jnp.mean(-jax.nn.log_sigmoid(p) - jnp.sum(jax.nn.log_sigmoid(-q), axis=1))
