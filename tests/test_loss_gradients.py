"""Every loss in `kd_jax.losses` differentiated numerically: its gradient against central differences, in float64.

For each public function (`kd_jax.losses.__all__`) one or more cases build small random inputs placed away from
the loss's kinks (no ties where it ranks or takes a max, hinge arguments away from their hinge points,
absolute values away from 0). Each case says which arguments are the student's and which the loss stops:

- the gradient with respect to the student-side arguments must match central differences of the loss
  (`(f(x + h·e_i) − f(x − h·e_i)) / 2h` for every coordinate i, all evaluated in one `vmap`), which catches a
  wrong custom rule, a missing factor or a stop_gradient where none belongs;
- the gradient with respect to the arguments the loss documents as constants (a teacher behind
  `stop_gradient`, a memory bank, a normaliser) must be exactly zero, which catches a missing stop_gradient.

Non-scalar outputs are contracted with a fixed random cotangent first, so the whole vector-Jacobian product
is checked. A few losses stop the gradient through a quantity computed from the *student* (CSWT's
temperatures, CRD's first-batch normaliser Z, LSFD's attention): there the numerical derivative would include
what the loss deliberately ignores, so the case compares with central differences of the same loss with that
quantity frozen at the base point (`frozen`). Tolerances are float64's: every loss computes in the inputs'
precision when it is above float32 (`kd_jax.losses.dtypes`).

A new loss exported from `kd_jax.losses` fails `test_every_loss_has_a_gradient_case` until it gets a case
here, or is added, with the reason, to `NOT_DIFFERENTIABLE`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from kd_jax import losses

# Public functions of kd_jax.losses that are not losses to differentiate, and why.
NOT_DIFFERENTIABLE = {
    "crd_available_negatives",  # NumPy on the host: how many negatives every anchor can draw (an int)
    "crd_memory_init",          # a fresh random memory bank drawn from a PRNG key
    "crd_memory_update",        # the memory-bank update after a step: state, not a loss
    "crd_sample_indices",       # the negative sampler: integer bank rows
    "energy_thresholds",        # NumPy on the host, once before training: quantiles of sorted energies
    "gradient_reversal",        # identity forward, gradient −λ·g by design: tests/test_mlkd_ctkd.py checks it
    "ctkd_lambda",              # CTKD's curriculum λ(epoch), a schedule: tests/test_mlkd_ctkd.py checks it
    "teacher_keep_mask",        # stochastic DGKD's 0/1 mask over teachers, drawn from a PRNG key
}


@dataclasses.dataclass(frozen=True)
class Case:
  """`fn(*student, *stopped)`: the gradient in `student` is checked against central differences (of `frozen`,
  same signature, where the loss stops the gradient through a quantity of the student); the gradient in
  `stopped` must be exactly zero."""

  fn: Callable
  student: Tuple = ()
  stopped: Tuple = ()
  frozen: Optional[Callable] = None


# ----------------------------------------------------------------------------------------------------------
# Inputs. Each case draws from its own generator, seeded by its name, so cases are independent of order.


def _normal(rng, *shape, scale=1.0):
  return jnp.asarray(rng.normal(size=shape) * scale)


def _away_from_zero(rng, *shape, low=0.3):
  """Values with |x| ≥ low and random signs: `|x|` and sign tests stay smooth under a step of 1e-6."""
  return jnp.asarray(rng.choice([-1.0, 1.0], size=shape) * (low + rng.random(size=shape)))


def _logit_pair(rng, b=4, c=5):
  return _normal(rng, b, c, scale=2.0), _normal(rng, b, c, scale=2.0)


def _labels(b=4, c=5):
  return jnp.arange(b) % c


def _pair_off_by(rng, *shape):
  """(student, teacher) whose difference is ≥ 0.3 in every entry: L1 terms are away from their kink."""
  teacher = _normal(rng, *shape)
  return teacher + _away_from_zero(rng, *shape), teacher


def _feature_map(rng, b=2, h=4, w=4, c=3, positive=False):
  x = _normal(rng, b, h, w, c)
  return jnp.abs(x) + 0.2 if positive else x


# ----------------------------------------------------------------------------------------------------------
# Cases, by loss. Values of the non-differentiable arguments (labels, indices, temperatures) are closed over.


def _kd_cases(rng):
  s, t = _logit_pair(rng)
  return [Case(lambda s, t, r=r: losses.kd(s, t, 4.0, reduction=r), (s,), (t,)) for r in ("batchmean", "mean", "none")]


def _cross_entropy_cases(rng):
  s = _normal(rng, 4, 5, scale=2.0)
  return [Case(lambda s, ls=ls: losses.cross_entropy(s, _labels(), label_smoothing=ls), (s,)) for ls in (0.0, 0.1)]


def _dkd_cases(rng):
  s, t = _logit_pair(rng)
  return [Case(lambda s, t: losses.dkd(s, t, labels=_labels(), alpha=1.0, beta=8.0, temperature=4.0), (s,), (t,)),
          Case(lambda s, t: losses.dkd(s, t, labels=_labels(), temperature=1.0), (s,), (t,))]


def _dkd_parts_cases(rng):
  s, t = _logit_pair(rng)
  return [Case(lambda s, t: losses.dkd_parts(s, t, labels=_labels(), temperature=4.0), (s,), (t,))]


def _dist_cases(rng):
  s, t = _logit_pair(rng)
  return [Case(lambda s, t, T=T: losses.dist(s, t, beta=1.0, gamma=2.0, temperature=T), (s,), (t,)) for T in (1.0, 4.0)]


def _dist_relations_cases(rng):
  ps, pt = (jax.nn.softmax(z) for z in _logit_pair(rng))
  return [Case(losses.dist_relations, (ps,), (pt,))]


def _pearson_cases(rng):
  x, y = _logit_pair(rng)  # no stop_gradient: both arguments are differentiated
  return [Case(lambda x, y, a=a: losses.pearson_correlation(x, y, axis=a), (x, y)) for a in (-1, 0)]


def _standardize_cases(rng):
  return [Case(losses.standardize_logits, (_normal(rng, 4, 5, scale=2.0),))]


def _ls_kd_cases(rng):
  s, t = _logit_pair(rng)
  return [Case(lambda s, t: losses.logit_standardized_kd(s, t, 2.0), (s,), (t,))]


def _kl_cases(rng):
  s, t = _logit_pair(rng)  # the per-example KL stops nothing (`kd` stops the teacher): both are differentiated
  return [Case(lambda s, t: losses.kl_divergence_per_example(s, t, 3.0), (s, t))]


def _energy_score_cases(rng):
  return [Case(lambda z: losses.energy_score(z, 4.0), (_normal(rng, 4, 5, scale=2.0),))]


def _energy_temperatures_cases(rng):
  e = jnp.asarray([-3.0, -1.0, 0.5, 2.0])  # piecewise constant in the energies: zero gradient
  return [Case(lambda e: losses.energy_temperatures(e, -2.0, 1.0), (), (e,))]


def _energy_kd_cases(rng):
  s, t = _logit_pair(rng, b=6)
  e = np.sort(np.asarray(losses.energy_score(t, 4.0)))
  low, high = float(e[1] + e[2]) / 2, float(e[3] + e[4]) / 2  # two samples in each group, away from the thresholds
  return [Case(lambda s, t: losses.energy_kd(s, t, energy_low=low, energy_high=high), (s,), (t,))]


def _energy_dkd_cases(rng):
  s, t = _logit_pair(rng, b=6)
  e = np.sort(np.asarray(losses.energy_score(t, 4.0)))
  low, high = float(e[1] + e[2]) / 2, float(e[3] + e[4]) / 2  # two samples in each group, away from the thresholds
  return [Case(lambda s, t: losses.energy_dkd(s, t, labels=_labels(6), energy_low=low, energy_high=high, beta=6.0),
               (s,), (t,))]


def _kd_per_sample_temperature_cases(rng):
  s, t = _logit_pair(rng)
  temps = jnp.asarray(1.0 + 5.0 * rng.random(4))  # the temperatures are differentiated too (CTKD learns them)
  return [Case(lambda s, temps, t: losses.kd_per_sample_temperature(s, t, temps), (s, temps), (t,))]


def _mlkd_gram_cases(fn):
  def cases(rng):
    s, t = _logit_pair(rng)
    return [Case(lambda s, t, T=T: fn(s, t, T), (s,), (t,)) for T in (1.0, 4.0)]
  return cases


def _mlkd_cases(fn):
  def cases(rng):
    (s_w, t_w), (s_s, t_s) = _logit_pair(rng, b=5), _logit_pair(rng, b=5)  # the masks read the teacher only
    return [Case(lambda a, b, c, d, ls=ls: fn(a, c, b, d, standardize=ls), (s_w, s_s), (t_w, t_s))
            for ls in (False, True)]
  return cases


def _ensemble_kd_cases(rng):
  s, t1 = _logit_pair(rng)
  t2 = _normal(rng, 4, 5, scale=2.0)
  return [Case(lambda s, t1, t2, a=a: losses.ensemble_kd(s, [t1, t2], 4.0, average=a, weights=[1.0, 3.0]),
               (s,), (t1, t2)) for a in ("probs", "logits")]


def _dgkd_cases(rng):
  s, t1 = _logit_pair(rng)
  t2 = _normal(rng, 4, 5, scale=2.0)
  keep = jnp.array([0.0, 1.0])
  return [Case(lambda s, t1, t2, r=r, k=k: losses.dgkd(s, [t1, t2], 5.0, keep=k, reduction=r), (s,), (t1, t2))
          for r, k in (("batchmean", None), ("mean", keep))]


def _nkd_cases(rng):
  s, t = _logit_pair(rng)
  return [Case(lambda s, t, T=T, g=g: losses.nkd(s, t, _labels(), temperature=T, gamma=g), (s,), (t,))
          for T, g in ((1.0, 1.5), (3.0, 3.5), (2.0, 0.0))]


def _ttm_cases(rng):
  s, t = _logit_pair(rng)
  return [Case(lambda s, t, l=l: losses.ttm(s, t, l), (s,), (t,)) for l in (0.1, 0.5, 1.0)]


def _wttm_cases(rng):
  s, t = _logit_pair(rng)
  return [Case(lambda s, t, l=l: losses.wttm(s, t, l), (s,), (t,)) for l in (0.2, 0.5)]


def _cskd_cases(rng):
  s, t = _logit_pair(rng, b=6)
  return [Case(lambda s, t: losses.cskd(s, t, 4.0), (s,), (t,))]


def _cswt_temperatures_cases(rng):
  s, t = _logit_pair(rng, b=6)  # stop-gradiented by design (the reference detaches the predictions)
  return [Case(losses.cswt_temperatures, (), (s, t))]


def _cskd_cswt_cases(rng):
  s, t = _logit_pair(rng, b=6)
  temps = losses.cswt_temperatures(s, t)
  # Given temperatures; and computed inside, where they are constants for the gradient: the numerical
  # derivative is then taken with them frozen at this point.
  return [Case(lambda s, t: losses.cskd_cswt(s, t, temperatures=temps), (s,), (t,)),
          Case(lambda s, t: losses.cskd_cswt(s, t), (s,), (t,),
               frozen=lambda s, t: losses.cskd_cswt(s, t, temperatures=temps))]


def _r2kd_cases(rng):
  s, t = _logit_pair(rng, b=6)
  # "reference" ranks are argsort ranks (zero gradient; the inputs have no ties within 1e-6).
  return [Case(lambda s, t, r=r: losses.r2kd(s, t, 4.0, rank=r), (s,), (t,)) for r in ("reference", "soft", "none")]


def _r2kd_rank_cases(rng):
  s, t = _logit_pair(rng, b=6)
  return [Case(lambda s, t, r=r: losses.r2kd_rank_loss(s, t, 4.0, rank=r), (s,), (t,)) for r in ("reference", "soft")]


def _r2kd_value_cases(rng):
  s, t = _logit_pair(rng, b=6)
  return [Case(lambda s, t: losses.r2kd_value_loss(s, t, 4.0), (s,), (t,))]


def _r2kd_teacher_cases(rng):
  t, tp = _logit_pair(rng)
  return [Case(losses.r2kd_teacher_logits, (), (t, tp))]


def _fitnet_cases(rng):
  return [Case(losses.fitnet, (_feature_map(rng),), (_feature_map(rng),))]


def _at_cases(rng):
  s, t = _feature_map(rng, positive=True), _feature_map(rng, c=5, positive=True)  # post-ReLU-like, |f| > 0
  return [Case(lambda s, t, f=f, p=p: losses.attention_transfer(s, t, p=p, form=f), (s,), (t,))
          for f in ("reference", "paper") for p in (2.0, 1.5)]


def _sp_cases(rng):
  return [Case(losses.similarity_preserving, (_feature_map(rng, b=4, c=2),), (_feature_map(rng, b=4, h=2, w=2, c=5),))]


def _cc_cases(rng):
  s, t = _pair_off_by(rng, 4, 6)  # |s − t| ≥ 0.3 everywhere: the reference form's abs is smooth there
  t_wide = _normal(rng, 4, 9)
  return [Case(lambda s, t: losses.correlation_congruence(s, t), (s,), (t,)),
          Case(lambda s, t: losses.correlation_congruence(s, t, form="paper"), (s,), (t_wide,)),
          # The CC distiller trains the teacher's embed layer: no stop_gradient, both differentiated.
          Case(lambda s, t: losses.correlation_congruence(s, t, stop_teacher_gradient=False), (s, t))]


def _pkt_cases(rng):
  s, t = _normal(rng, 5, 4), _normal(rng, 5, 7)
  return [Case(lambda s, t, f=f: losses.pkt(s, t, form=f), (s,), (t,)) for f in ("reference", "paper")]


def _nst_cases(rng):
  s, t = _feature_map(rng, h=4, w=4, c=3), _feature_map(rng, h=2, w=2, c=4)  # the student map is pooled
  return [Case(losses.nst, (s,), (t,))]


def _fsp_cases(rng):
  s = (_feature_map(rng, h=4, w=4, c=2), _feature_map(rng, h=2, w=2, c=3))  # pooled to 2×2 first
  t = (_feature_map(rng, h=4, w=4, c=2), _feature_map(rng, h=2, w=2, c=3))
  s2, t2 = (_feature_map(rng, h=2, w=2, c=3),) * 2, (_feature_map(rng, h=2, w=2, c=3),) * 2
  return [Case(lambda s, t, f=f: losses.fsp(s, t, form=f), ((s, s2),), ((t, t2),)) for f in ("reference", "paper")]


def _ft_cases(rng):
  s, t = _feature_map(rng, h=4, w=4, c=3), _feature_map(rng, h=2, w=2, c=5)  # reference: pooled, channel-mean
  s_same, t_same = _feature_map(rng), _feature_map(rng)
  return [Case(lambda s, t: losses.factor_transfer(s, t, form="reference"), (s,), (t,))] + [
      Case(lambda s, t, p=p: losses.factor_transfer(s, t, p=p, form="paper"), (s_same,), (t_same,)) for p in (1, 2)]


def _ab_cases(rng):
  r = _away_from_zero(rng, 2, 3, 3, 4, low=0.1)
  r = jnp.where(jnp.abs(jnp.abs(r) - 1.0) < 0.1, r * 1.3, r)  # |r| away from the margin μ = 1
  return [Case(losses.activation_boundary, (r,), (_away_from_zero(rng, 2, 3, 3, 4, low=0.1),))]


def _mismatch_cases(rng):
  # A monitor, piecewise constant in both arguments: zero gradient.
  return [Case(losses.activation_mismatch, (), (_away_from_zero(rng, 2, 3), _away_from_zero(rng, 2, 3)))]


def _review_kd_cases(rng):
  s = [_feature_map(rng, h=8, w=8, c=2), _feature_map(rng, h=2, w=2, c=3)]  # levels 4, 2, 1 and level 1
  t = [_feature_map(rng, h=8, w=8, c=2), _feature_map(rng, h=2, w=2, c=3)]
  return [Case(losses.review_kd, (s,), (t,))]


def _rkd_distance_cases(rng):
  return [Case(losses.rkd_distance, (_normal(rng, 5, 3),), (_normal(rng, 5, 4),))]


def _rkd_angle_cases(rng):
  return [Case(losses.rkd_angle, (_normal(rng, 5, 3),), (_normal(rng, 5, 4),))]


def _area_rkd_cases(rng):
  return [Case(losses.area_rkd, (_normal(rng, 5, 3),), (_normal(rng, 5, 4),))]


def _vid_cases(rng):
  mu, t, alpha = _feature_map(rng), _feature_map(rng), _normal(rng, 3)
  return [Case(lambda mu, a, t, r=r: losses.vid(mu, t, a, reduction=r), (mu, alpha), (t,)) for r in ("mean", "sum")]


# CRD: 4 anchors, 3 negatives each, banks of 10 rows (the last 2 padding), d = 6.
_CRD_N = 8
_CRD_IDX = jnp.asarray([[0, 3, 5, 7], [1, 2, 6, 4], [2, 0, 7, 5], [3, 6, 1, 4]])


def _unit_rows(rng, n, d=6):
  x = rng.normal(size=(n, d))
  return jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def _crd_scores_cases(rng):
  return [Case(lambda a, m: losses.crd_scores(m, a, _CRD_IDX), (_unit_rows(rng, 4),), (_unit_rows(rng, 10),))]


def _crd_nce_cases(rng):
  scores = _normal(rng, 4, 4, scale=3.0)
  return [Case(lambda s, z: losses.crd_nce_loss(s, z, _CRD_N), (scores,), (jnp.asarray(9.0),))]


def _crd_softmax_cases(rng):
  return [Case(losses.crd_softmax_loss, (_normal(rng, 4, 4, scale=3.0),))]


def _crd_normalizer_cases(rng):
  return [Case(lambda s: losses.crd_normalizer(s, _CRD_N), (), (_normal(rng, 4, 4, scale=3.0),))]


def _crd_cases(rng):
  se, te, sm, tm = _unit_rows(rng, 4), _unit_rows(rng, 4), _unit_rows(rng, 10), _unit_rows(rng, 10)
  z = (jnp.asarray(5.0), jnp.asarray(7.0))

  def crd(mode, normalizers):
    return lambda se, te, sm, tm: losses.crd(se, te, sm, tm, _CRD_IDX, num_examples=_CRD_N,
                                             normalizers=normalizers, temperature=0.5, mode=mode)

  # Without normalizers, Z is estimated from these very scores and is a constant for the gradient (as the
  # reference fixes it on its first batch): the numerical derivative is taken with Z frozen at this point.
  z0 = (losses.crd_normalizer(losses.crd_scores(tm, se, _CRD_IDX, temperature=0.5), _CRD_N),
        losses.crd_normalizer(losses.crd_scores(sm, te, _CRD_IDX, temperature=0.5), _CRD_N))
  return [Case(crd("nce", z), (se, te), (sm, tm)),
          Case(crd("softmax", None), (se, te), (sm, tm)),
          Case(crd("nce", None), (se, te), (sm, tm), frozen=crd("nce", z0))]


def _output_l1_cases(rng):
  s, t = _pair_off_by(rng, 2, 4, 4, 3)
  return [Case(losses.output_l1, (s,), (t,))]


def _feature_affinity_cases(rng):
  return [Case(losses.feature_affinity, (_feature_map(rng, h=3, w=3, c=4),))]


def _fakd_cases(rng):
  s, t = _feature_map(rng, h=3, w=3, c=4), _feature_map(rng, h=3, w=3, c=6)
  return [Case(lambda s, t, p=p: losses.fakd(s, t, p=p), (s,), (t,)) for p in (1, 2)]


def _lsfd_cases(rng):
  s, t = _pair_off_by(rng, 2, 3, 3, 4)
  attention = losses.lsfd_attention(s, t, temperature=0.5)
  # The attention is a constant for the gradient (it is computed from the student, then stopped): compare
  # with central differences of the same attention-weighted L1 with the attention frozen at this point.
  frozen = lambda s, t: jnp.mean(attention * jnp.mean(jnp.abs(s - t), axis=-1))
  return [Case(lambda s, t: losses.lsfd(s, t, temperature=0.5), (s,), (t,), frozen=frozen)]


def _lsfd_attention_cases(rng):
  s, t = _pair_off_by(rng, 2, 3, 3, 4)
  return [Case(losses.lsfd_attention, (), (s, t))]


def _pseudo_label_cases(rng):
  s, t = _pair_off_by(rng, 4, 3)  # |s − t| ≥ 0.3: the L1 form is smooth there
  w, m = jnp.asarray(rng.uniform(0.2, 1.0, 4)), jnp.asarray([1.0, 0.0, 1.0, 1.0])
  dense_s, dense_t = _pair_off_by(rng, 2, 3, 3, 1)
  return [Case(lambda s, t, w, n=n: losses.pseudo_label_loss(s, t, norm=n, weights=w, mask=m), (s,), (t, w))
          for n in ("l2", "l1")] + [Case(losses.pseudo_label_loss, (dense_s,), (dense_t,))]


def _ensemble_confidence_cases(rng):
  return [Case(lambda p: losses.ensemble_confidence(p, 0.5), (), (_normal(rng, 3, 4, 2),))]


def _ranking_distillation_cases(rng):
  s, t = _normal(rng, 3, 4), _normal(rng, 3, 4)
  return [Case(lambda s, t, f=f: losses.ranking_distillation(s, t, lam=2.0, form=f), (s,), (t,))
          for f in ("mse", "logistic")]


def _pointwise_distillation_cases(rng):
  s, t = _normal(rng, 3, 4), _normal(rng, 3, 4)
  mask = jnp.asarray(rng.random((3, 4)) < 0.6, jnp.float64)
  return [Case(lambda s, t: losses.pointwise_distillation(s, t, mask=mask), (s,), (t,)),
          Case(lambda s, t: losses.pointwise_distillation(s, t, form="bce"), (s,), (t,))]


def _relaxed_ranking_cases(rng):
  s, u = _normal(rng, 3, 4, scale=2.0), _normal(rng, 3, 5, scale=2.0)
  mask = jnp.asarray(rng.random((3, 5)) < 0.6)
  return [Case(lambda s, u: losses.relaxed_ranking(s, u), (s, u)),
          Case(lambda s, u: losses.relaxed_ranking(s, u, uninteresting_mask=mask, reduction="mean"), (s, u))]


def _expert_selection_cases(rng):
  probs, g = jnp.asarray(rng.dirichlet(np.ones(3), size=4)), jnp.asarray(rng.gumbel(size=(4, 3)))
  return [Case(lambda p, g: losses.expert_selection(p, g, 0.7), (probs,), (g,))]


def _distillation_experts_cases(rng):
  out, t = _normal(rng, 4, 3, 5), _normal(rng, 4, 5)
  z = jnp.asarray(rng.dirichlet(np.ones(3), size=4))
  return [Case(lambda o, z, t, r=r: losses.distillation_experts(o, z, t, reduction=r), (out, z), (t,))
          for r in ("sum", "mean")]


def _topology_distillation_cases(rng):
  s, t = _normal(rng, 5, 3), _normal(rng, 5, 6)
  return [Case(lambda s, t: losses.topology_distillation(s, t), (s,), (t,))]


def _entity_topology_cases(rng):
  s, t = _normal(rng, 6, 3), _normal(rng, 6, 4)
  groups = jnp.asarray([0, 1, 0, 1, 0, 2])
  return [Case(lambda s, t, r=r: losses.entity_topology(s, t, groups, reduction=r), (s,), (t,))
          for r in ("sum", "mean")]


def _group_topology_cases(rng):
  s, t = _normal(rng, 6, 3), _normal(rng, 6, 4)
  groups = jnp.asarray([0, 1, 0, 1, 0, 3])  # group 2 is empty and drops out
  present = (0, 1, 3)

  def cosine(a, b):
    return jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1))

  def prototypes(x):
    return jnp.stack([jnp.mean(x[np.asarray(groups) == k], axis=0) for k in present])

  def entity_form(student_prototypes):
    # cos(P^t_k, t_i) − cos(P^s_k, s_i) summed over present groups k and entities i, P^s held at the given values.
    return lambda s, t: sum(jnp.sum(jnp.square(cosine(pt, t) - cosine(ps, s)))
                            for pt, ps in zip(prototypes(t), student_prototypes(s)))

  return [Case(lambda s, t: losses.group_topology(s, t, groups, num_groups=4, form="prototype_entity"), (s,), (t,),
               frozen=entity_form(lambda _: prototypes(s))),
          Case(lambda s, t: losses.group_topology(s, t, groups, num_groups=4, form="prototype_prototype"), (s,),
               (t,))]


def _rank_discrepancy_weight_cases(rng):
  rank = jnp.asarray(rng.integers(0, 50, (3, 4)), jnp.float64)
  return [Case(lambda r: losses.rank_discrepancy_weight(r, jnp.arange(4), 0.1), (), (rank,))]


def _rank_discrepancy_logits_cases(rng):
  other = jnp.asarray(rng.integers(0, 20, 6), jnp.float64)
  own = other + jnp.asarray(rng.integers(1, 20, 6), jnp.float64)  # tanh form: every probability positive
  return [Case(lambda a, b, f=f: losses.rank_discrepancy_logits(a, b, 0.1, f), (), (own, other))
          for f in ("tanh", "exp")]


def _rank_discrepancy_cases(rng):
  own, other = jnp.asarray(rng.integers(0, 50, 6), jnp.float64), jnp.asarray(rng.integers(0, 50, 6), jnp.float64)
  return [Case(lambda a, b: losses.rank_discrepancy_probability(a, b, 0.1), (), (own, other))]


def _interaction_log_loss_cases(rng):
  return [Case(losses.interaction_log_loss, (_normal(rng, 4), _normal(rng, 4, 3)))]


def _pixel_kd_cases(rng):
  s, t = _normal(rng, 2, 3, 3, 4, scale=2.0), _normal(rng, 2, 3, 3, 4, scale=2.0)
  valid = jnp.asarray(rng.random((2, 3, 3)) > 0.3)
  return [Case(lambda s, t, v=v: losses.pixel_kd(s, t, v, temperature=2.0), (s,), (t,)) for v in (None, valid)]


def _cwd_cases(rng):
  s, t = _normal(rng, 2, 3, 3, 4, scale=2.0), _normal(rng, 2, 3, 3, 4, scale=2.0)
  return [Case(lambda s, t, tau=tau: losses.cwd(s, t, temperature=tau), (s,), (t,)) for tau in (1.0, 4.0)]


CASES = {
    "activation_boundary": _ab_cases,
    "activation_mismatch": _mismatch_cases,
    "area_rkd": _area_rkd_cases,
    "attention_transfer": _at_cases,
    "correlation_congruence": _cc_cases,
    "crd": _crd_cases,
    "crd_nce_loss": _crd_nce_cases,
    "crd_normalizer": _crd_normalizer_cases,
    "crd_scores": _crd_scores_cases,
    "crd_softmax_loss": _crd_softmax_cases,
    "cross_entropy": _cross_entropy_cases,
    "cskd": _cskd_cases,
    "cwd": _cwd_cases,
    "cskd_cswt": _cskd_cswt_cases,
    "cswt_temperatures": _cswt_temperatures_cases,
    "dist": _dist_cases,
    "dist_relations": _dist_relations_cases,
    "dkd": _dkd_cases,
    "dkd_parts": _dkd_parts_cases,
    "energy_kd": _energy_kd_cases,
    "energy_dkd": _energy_dkd_cases,
    "kd_per_sample_temperature": _kd_per_sample_temperature_cases,
    "mlkd": _mlkd_cases(losses.mlkd),
    "mlkd_parts": _mlkd_cases(losses.mlkd_parts),
    "mlkd_batch_loss": _mlkd_gram_cases(losses.mlkd_batch_loss),
    "mlkd_class_loss": _mlkd_gram_cases(losses.mlkd_class_loss),
    "energy_score": _energy_score_cases,
    "energy_temperatures": _energy_temperatures_cases,
    "ensemble_confidence": _ensemble_confidence_cases,
    "ensemble_kd": _ensemble_kd_cases,
    "dgkd": _dgkd_cases,
    "factor_transfer": _ft_cases,
    "fakd": _fakd_cases,
    "feature_affinity": _feature_affinity_cases,
    "fitnet": _fitnet_cases,
    "fsp": _fsp_cases,
    "kd": _kd_cases,
    "kl_divergence_per_example": _kl_cases,
    "logit_standardized_kd": _ls_kd_cases,
    "lsfd": _lsfd_cases,
    "lsfd_attention": _lsfd_attention_cases,
    "nkd": _nkd_cases,
    "nst": _nst_cases,
    "output_l1": _output_l1_cases,
    "pearson_correlation": _pearson_cases,
    "pixel_kd": _pixel_kd_cases,
    "pkt": _pkt_cases,
    "pseudo_label_loss": _pseudo_label_cases,
    "r2kd": _r2kd_cases,
    "r2kd_rank_loss": _r2kd_rank_cases,
    "r2kd_teacher_logits": _r2kd_teacher_cases,
    "r2kd_value_loss": _r2kd_value_cases,
    "review_kd": _review_kd_cases,
    "rkd_angle": _rkd_angle_cases,
    "rkd_distance": _rkd_distance_cases,
    "similarity_preserving": _sp_cases,
    "standardize_logits": _standardize_cases,
    "ttm": _ttm_cases,
    "vid": _vid_cases,
    "wttm": _wttm_cases,
    "distillation_experts": _distillation_experts_cases,
    "expert_selection": _expert_selection_cases,
    "interaction_log_loss": _interaction_log_loss_cases,
    "pointwise_distillation": _pointwise_distillation_cases,
    "rank_discrepancy_probability": _rank_discrepancy_cases,
    "ranking_distillation": _ranking_distillation_cases,
    "relaxed_ranking": _relaxed_ranking_cases,
    "topology_distillation": _topology_distillation_cases,
    "entity_topology": _entity_topology_cases,
    "group_topology": _group_topology_cases,
    "rank_discrepancy_weight": _rank_discrepancy_weight_cases,
    "rank_discrepancy_logits": _rank_discrepancy_logits_cases,
}


def test_every_loss_has_a_gradient_case():
  exported = set(losses.__all__)
  assert NOT_DIFFERENTIABLE <= exported, f"stale NOT_DIFFERENTIABLE entries: {sorted(NOT_DIFFERENTIABLE - exported)}"
  missing = exported - NOT_DIFFERENTIABLE - set(CASES)
  assert not missing, (f"kd_jax.losses exports {sorted(missing)} without a gradient case: add one to CASES in "
                       "tests/test_loss_gradients.py (or, with the reason, to NOT_DIFFERENTIABLE).")
  assert not set(CASES) - exported, f"cases for names kd_jax.losses does not export: {sorted(set(CASES) - exported)}"


# ----------------------------------------------------------------------------------------------------------
# The check.

# Float64: a step of 1e-6 leaves truncation error ~1e-12·f''' and rounding error ~1e-10·|f|; measured, every
# case agrees to 1.5e-8 of its gradient's largest entry, so 1e-6 leaves a wide margin yet catches any missing
# factor, term or sign.
_STEP = 1e-6
_TOLERANCE = 1e-6


def _contracted(fn, cotangent):
  """`Σ ⟨w, fn(...)⟩` over the output's leaves, in float64: a scalar whose gradient is fn's VJP with `w`."""
  def scalar(*args):
    return sum(jnp.vdot(w, jnp.asarray(o, jnp.float64)) for w, o in zip(cotangent, jax.tree.leaves(fn(*args))))
  return scalar


def _central_differences(scalar, student, stopped, step):
  """`∂scalar/∂x_i ≈ (scalar(x + h·e_i) − scalar(x − h·e_i)) / 2h` for every coordinate of the student side."""
  x0, unravel = ravel_pytree(student)
  eye = jnp.eye(x0.size, dtype=x0.dtype) * step
  # One compiled program for all 2n evaluations: eager dispatch of every primitive costs far more here.
  values = jax.jit(jax.vmap(lambda x: scalar(*unravel(x), *stopped)))(jnp.concatenate([x0 + eye, x0 - eye]))
  return (values[:x0.size] - values[x0.size:]) / (2 * step)


@pytest.fixture
def float64():
  """64-bit JAX for one test (inputs, loss, gradients and differences), restored afterwards."""
  with jax.enable_x64(True):
    yield


def _check(name: str, index: int, case: Case) -> None:
  assert jax.tree.leaves(case.student + case.stopped), f"{name}: a case needs arguments"
  assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(case.student + case.stopped)), "inputs must be float64"
  where = f"{name}[{index}]"
  n_student = len(case.student)
  args = case.student + case.stopped
  rng = np.random.default_rng(1)
  cotangent = [jnp.asarray(rng.normal(size=o.shape)) for o in jax.tree.leaves(jax.eval_shape(case.fn, *args))]
  scalar = _contracted(case.fn, cotangent)

  grads = jax.jit(jax.grad(scalar, argnums=tuple(range(len(args)))))(*args)  # one compile for both checks
  if n_student:
    analytic = np.asarray(ravel_pytree(grads[:n_student])[0])
    assert np.all(np.isfinite(analytic)), f"{where}: non-finite gradient"
    reference = scalar
    if case.frozen:  # same value here: the frozen quantity is the loss's own at this point
      reference = _contracted(case.frozen, cotangent)
      np.testing.assert_allclose(jax.jit(reference)(*args), jax.jit(scalar)(*args),
                                 rtol=1e-12, err_msg=where)
    numeric = np.asarray(_central_differences(reference, case.student, case.stopped, _STEP))
    tol = _TOLERANCE
    # Entries near 0 are judged against the gradient's scale, not their own size.
    scale = max(float(np.abs(numeric).max()), float(np.abs(analytic).max()))
    np.testing.assert_allclose(analytic, numeric, rtol=tol, atol=tol * scale,
                               err_msg=f"{where}: gradient differs from central differences")

  if case.stopped:
    for leaf in jax.tree.leaves(grads[n_student:]):
      assert np.all(np.asarray(leaf) == 0.0), f"{where}: an argument the loss documents as constant gets a gradient"


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_central_differences_and_stops_where_documented(name, float64):
  cases = CASES[name](np.random.default_rng(sum(map(ord, name))))  # a seed per loss, independent of order
  assert cases, f"{name}: no variants"
  for index, case in enumerate(cases):
    _check(name, index, case)
