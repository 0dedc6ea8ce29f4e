"""Feature and relation losses: AT, SP, CC, PKT, NST, FSP, and their distillers.

Expected values are worked out by hand or computed independently in NumPy float64 from the formulas (never
by calling the function under test); identities, invariances and gradients are checked on random features.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import distillers, losses
from kd_jax.losses import features as feature_losses
from kd_jax.models.outputs import ModelOutput


# Jitted once per signature: run eagerly, every primitive would compile on its own (seconds on 2 cores).
at_loss = jax.jit(losses.attention_transfer, static_argnames=("p", "form"))
sp_loss = jax.jit(losses.similarity_preserving)
cc_loss = jax.jit(losses.correlation_congruence, static_argnames=("form", "gamma", "order", "stop_teacher_gradient"))
pkt_loss = jax.jit(losses.pkt, static_argnames=("eps", "form"))
nst_loss = jax.jit(losses.nst, static_argnames=("degree", "offset"))
fsp_loss = jax.jit(losses.fsp, static_argnames=("form",))


# ---------------------------------------------------------------- NumPy float64 references


def _np_normalize(x, axis):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def _np_at(fs, ft, p=2.0):
  def att(f):
    f = np.asarray(f, np.float64)
    return _np_normalize((np.abs(f) ** p).mean(-1).reshape(f.shape[0], -1), 1)
  return np.mean((att(fs) - att(ft)) ** 2)


def _np_sp(fs, ft):
  def gram(f):
    f = np.asarray(f, np.float64).reshape(f.shape[0], -1)
    return _np_normalize(f @ f.T, 1)
  return np.sum((gram(fs) - gram(ft)) ** 2) / fs.shape[0] ** 2


def _np_cc_paper(es, et, gamma, order):
  def kernel(e):
    e = _np_normalize(e, 1)
    c = e @ e.T
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** k / math.factorial(k) * c**k for k in range(order + 1))
  return np.mean((kernel(es) - kernel(et)) ** 2)


def _np_pkt(es, et, eps=1e-7, paper=False):
  def probs(e):
    e = np.asarray(e, np.float64)
    e = e / (np.linalg.norm(e, axis=1, keepdims=True) + eps)
    k = (e @ e.T + 1) / 2
    if paper:
      np.fill_diagonal(k, 0.0)
    return k / k.sum(1, keepdims=True)
  p, q = probs(et), probs(es)
  terms = p * np.log((p + eps) / (q + eps))
  return terms.sum(1).mean() if paper else terms.mean()


def _np_nst(fs, ft):
  """Biased MMD² with k(x, y) = (xᵀy)², one sample per channel, per example, then the batch mean."""
  out = []
  for s, t in zip(np.asarray(fs, np.float64), np.asarray(ft, np.float64)):
    xs = _np_normalize(s.reshape(-1, s.shape[-1]).T, 1)  # [C_s, HW]
    xt = _np_normalize(t.reshape(-1, t.shape[-1]).T, 1)
    k = lambda a, b: np.mean((a @ b.T) ** 2)  # noqa: E731
    out.append(k(xt, xt) + k(xs, xs) - 2 * k(xs, xt))
  return np.mean(out)


def _np_flow(f1, f2):
  f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  b, h, w, _ = f1.shape
  g = np.zeros((b, f1.shape[-1], f2.shape[-1]))
  for i in range(h):
    for j in range(w):
      g += f1[:, i, j, :, None] * f2[:, i, j, None, :]
  return g / (h * w)


def _np_block_mean(x, factor):
  b, h, w, c = x.shape
  return np.asarray(x, np.float64).reshape(b, h // factor, factor, w // factor, factor, c).mean((2, 4))


def _features(seed, shape, relu=True):
  x = np.random.default_rng(seed).normal(size=shape)
  return jnp.asarray(np.maximum(x, 0) if relu else x, jnp.float32)


# ---------------------------------------------------------------- hand-checked values


def test_attention_transfer_by_hand_both_forms():
  # One example, a 1x2 map, one channel: a_s = (1, 0), a_t = (0, 1).
  fs = jnp.array([[[[1.0], [0.0]]]])
  ft = jnp.array([[[[0.0], [2.0]]]])
  np.testing.assert_allclose(at_loss(fs, ft), 1.0, rtol=1e-6)  # mean((1, −1)²)
  np.testing.assert_allclose(at_loss(fs, ft, form="paper"), 0.5 * math.sqrt(2), rtol=1e-6)


def test_similarity_preserving_by_hand():
  # G_s = I (rows already unit); G_t = all ones, rows → 1/√2.
  fs, ft = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[1.0, 0.0], [1.0, 0.0]])
  expected = (2 * (1 - 1 / math.sqrt(2)) ** 2 + 2 * 0.5) / 4
  np.testing.assert_allclose(sp_loss(fs, ft), expected, rtol=1e-6)


def test_correlation_congruence_by_hand_both_forms():
  # Reference: δ = |e_s − 0|; neighbour products (1,2)·(3,1) = 5 and (3,1)·(1,1) = 4; mean 4.5.
  es = jnp.array([[1.0, 2.0], [3.0, 1.0], [1.0, 1.0]])
  np.testing.assert_allclose(cc_loss(es, jnp.zeros((3, 2))), 4.5, rtol=1e-6)
  np.testing.assert_allclose(cc_loss(es, -es), 4 * 4.5, rtol=1e-6)
  # Paper: cosines I vs all-ones; only the two off-diagonal entries differ, by e^{−2γ}(2γ + 2γ²).
  g = 0.4
  got = cc_loss(jnp.eye(2), jnp.array([[1.0, 0.0], [2.0, 0.0]]), form="paper", gamma=g)
  np.testing.assert_allclose(got, 0.5 * (math.exp(-2 * g) * (2 * g + 2 * g * g)) ** 2, rtol=1e-5)


def test_pkt_by_hand():
  # Student cosines I → rows (2/3, 1/3); teacher all ones → rows (1/2, 1/2); mean over the 4 entries.
  got = pkt_loss(jnp.eye(2), jnp.array([[1.0, 0.0], [3.0, 0.0]]))
  expected = 2 * (0.5 * math.log(0.5 / (2 / 3)) + 0.5 * math.log(0.5 / (1 / 3))) / 4
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Paper form with B = 2: one neighbour per row, p = q = 1, so the loss is 0.
  np.testing.assert_allclose(pkt_loss(jnp.eye(2), jnp.array([[1.0, 0.0], [3.0, 0.0]]), form="paper"), 0.0,
                             atol=1e-6)


def test_nst_by_hand():
  # 1x2 maps. Student: one channel (1, 0). Teacher with channels (1, 0), (0, 1):
  # k_tt = mean(1, 0, 0, 1) = 1/2, k_ss = 1, k_st = mean(1, 0) = 1/2 → 1/2 + 1 − 1 = 1/2.
  fs = jnp.array([[[[1.0], [0.0]]]])
  ft = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]])
  np.testing.assert_allclose(nst_loss(fs, ft), 0.5, rtol=1e-6)
  np.testing.assert_allclose(nst_loss(fs, ft[..., 1:]), 2.0, rtol=1e-6)  # orthogonal single channels


def test_fsp_by_hand_both_forms():
  # 1x1 maps: G = F1ᵀF2. Student (1, 2)ᵀ(3) = (3, 6)ᵀ, teacher (1, 1)ᵀ(1) = (1, 1)ᵀ; squared errors 4, 25.
  s = (jnp.array([[[[1.0, 2.0]]]]), jnp.array([[[[3.0]]]]))
  t = (jnp.array([[[[1.0, 1.0]]]]), jnp.array([[[[1.0]]]]))
  np.testing.assert_allclose(fsp_loss([s], [t]), 14.5, rtol=1e-6)
  np.testing.assert_allclose(fsp_loss([s], [t], form="paper"), 29.0, rtol=1e-6)
  np.testing.assert_allclose(fsp_loss([s, s], [t, t]), 29.0, rtol=1e-6)  # summed over pairs


# ---------------------------------------------------------------- NumPy references on random features


def test_losses_match_numpy_references():
  fs, ft = _features(0, (4, 4, 4, 6)), _features(1, (4, 4, 4, 10))
  np.testing.assert_allclose(at_loss(fs, ft), _np_at(fs, ft), rtol=1e-5)
  np.testing.assert_allclose(at_loss(fs, ft, p=4.0), _np_at(fs, ft, 4.0), rtol=1e-4)
  np.testing.assert_allclose(sp_loss(fs, ft), _np_sp(fs, ft), rtol=1e-5)
  np.testing.assert_allclose(nst_loss(fs, ft), _np_nst(fs, ft), rtol=1e-4, atol=1e-7)
  es, et = _features(2, (5, 7), relu=False), _features(3, (5, 9), relu=False)
  np.testing.assert_allclose(pkt_loss(es, et), _np_pkt(es, et), rtol=1e-4)
  np.testing.assert_allclose(pkt_loss(es, et, form="paper"), _np_pkt(es, et, paper=True), rtol=1e-4)
  np.testing.assert_allclose(cc_loss(es, et, form="paper", gamma=0.7, order=3),
                             _np_cc_paper(es, et, 0.7, 3), rtol=1e-4)
  et7 = _features(4, (5, 7), relu=False)
  delta = np.abs(np.asarray(es, np.float64) - np.asarray(et7, np.float64))
  np.testing.assert_allclose(cc_loss(es, et7),
                             np.mean([delta[i] @ delta[i + 1] for i in range(4)]), rtol=1e-5)


def test_fsp_matches_numpy_reference_and_pools_the_larger_map():
  s = [(_features(5, (3, 4, 4, 2)), _features(6, (3, 2, 2, 5)))]
  t = [(_features(7, (3, 4, 4, 2)), _features(8, (3, 2, 2, 5)))]
  g_s = _np_flow(_np_block_mean(s[0][0], 2), s[0][1])
  g_t = _np_flow(_np_block_mean(t[0][0], 2), t[0][1])
  np.testing.assert_allclose(fsp_loss(s, t), np.mean((g_s - g_t) ** 2), rtol=1e-5)
  np.testing.assert_allclose(fsp_loss(s, t, form="paper"), np.mean(np.sum((g_s - g_t) ** 2, (1, 2))),
                             rtol=1e-5)


def test_nst_pools_the_larger_map_to_the_smaller_size():
  fs, ft = _features(9, (2, 4, 4, 3)), _features(10, (2, 2, 2, 5))
  np.testing.assert_allclose(nst_loss(fs, ft), _np_nst(_np_block_mean(fs, 2), ft), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(nst_loss(ft, fs), _np_nst(ft, _np_block_mean(fs, 2)), rtol=1e-4, atol=1e-7)


def test_adaptive_pool_windows_match_pytorch_rule_for_uneven_sizes():
  # 5 → 3: windows [0, 2), [1, 4), [3, 5) (start = ⌊i·5/3⌋, end = ⌈(i+1)·5/3⌉).
  x = jnp.arange(5.0).reshape(1, 5, 1, 1)
  got = feature_losses._adaptive_avg_pool(x, 3, 1)
  np.testing.assert_allclose(np.asarray(got).ravel(), [0.5, 2.0, 3.5], rtol=1e-6)


# ---------------------------------------------------------------- identities and invariances


def test_zero_when_student_equals_teacher():
  f, e = _features(11, (4, 4, 4, 8)), _features(12, (4, 16), relu=False)
  for value in (at_loss(f, f), at_loss(f, f, form="paper"),
                sp_loss(f, f), nst_loss(f, f), pkt_loss(e, e),
                pkt_loss(e, e, form="paper"), cc_loss(e, e),
                cc_loss(e, e, form="paper"), fsp_loss([(f, f)], [(f, f)])):
    np.testing.assert_allclose(value, 0.0, atol=1e-6)


def test_attention_transfer_unchanged_by_positive_scaling_of_either_feature():
  fs, ft = _features(13, (4, 4, 4, 8)), _features(14, (4, 4, 4, 16))
  base = at_loss(fs, ft)
  assert base > 0
  np.testing.assert_allclose(at_loss(3.7 * fs, ft), base, rtol=1e-5)
  np.testing.assert_allclose(at_loss(fs, 0.2 * ft), base, rtol=1e-5)


def test_similarity_preserving_unchanged_by_channel_permutation_and_scaling():
  fs, ft = _features(15, (6, 2, 2, 8)), _features(16, (6, 2, 2, 12))
  base = sp_loss(fs, ft)
  assert base > 0
  rng = np.random.default_rng(17)
  np.testing.assert_allclose(sp_loss(fs[..., rng.permutation(8)], ft), base, rtol=1e-5)
  np.testing.assert_allclose(sp_loss(fs, ft[..., rng.permutation(12)]), base, rtol=1e-5)
  np.testing.assert_allclose(sp_loss(5.0 * fs, 0.3 * ft), base, rtol=1e-5)


def test_pkt_unchanged_by_positive_scaling():
  es, et = _features(18, (6, 10), relu=False), _features(19, (6, 20), relu=False)
  for form in ("reference", "paper"):
    base = pkt_loss(es, et, form=form)
    assert base > 0
    np.testing.assert_allclose(pkt_loss(4.0 * es, 0.25 * et, form=form), base, rtol=1e-5)


# ---------------------------------------------------------------- shapes and errors


def test_mismatched_channels_give_scalars_and_fsp_needs_equal_channels():
  fs, ft = _features(20, (4, 4, 4, 6)), _features(21, (4, 4, 4, 24))
  for value in (at_loss(fs, ft), sp_loss(fs, ft), nst_loss(fs, ft),
                pkt_loss(fs.reshape(4, -1), ft.reshape(4, -1))):
    assert value.shape == () and np.isfinite(value)
  with pytest.raises(ValueError, match="equal channel counts"):
    fsp_loss([(fs, fs)], [(ft, ft)])
  with pytest.raises(ValueError, match="spatial sizes must match"):
    at_loss(fs, ft[:, :2, :2])
  with pytest.raises(ValueError, match="equal shape"):
    cc_loss(fs.reshape(4, -1), ft.reshape(4, -1))
  with pytest.raises(ValueError, match="batch sizes differ"):
    sp_loss(fs, ft[:2])
  with pytest.raises(ValueError, match="unknown form"):
    pkt_loss(fs, ft, form="papr")


@pytest.mark.parametrize("name,fn", [
    ("at", lambda s, t: at_loss(s, t)),
    ("at_paper", lambda s, t: at_loss(s, t, form="paper")),
    ("sp", sp_loss),
    ("nst", nst_loss),
    ("pkt", lambda s, t: pkt_loss(s.reshape(4, -1), t.reshape(4, -1))),
    ("cc", lambda s, t: cc_loss(s.reshape(4, -1), t.reshape(4, -1))),
    ("cc_paper", lambda s, t: cc_loss(s.reshape(4, -1), t.reshape(4, -1), form="paper")),
    ("fsp", lambda s, t: fsp_loss([(s, 2 * s)], [(t, t * t)])),
])
def test_gradient_finite_nonzero_for_student_zero_for_teacher(name, fn):
  s, t = _features(22, (4, 2, 2, 8), relu=False), _features(23, (4, 2, 2, 8), relu=False)
  g_s, g_t = jax.jit(jax.grad(fn, argnums=(0, 1)))(s, t)
  assert np.all(np.isfinite(g_s)) and float(jnp.abs(g_s).sum()) > 0, name
  np.testing.assert_allclose(g_t, 0.0)


def test_gradients_finite_at_zero_features():
  z, t = jnp.zeros((4, 2, 2, 8)), _features(24, (4, 2, 2, 8))
  for fn in (at_loss, lambda s, t: at_loss(s, t, form="paper"), sp_loss, nst_loss,
             lambda s, t: pkt_loss(s.reshape(4, -1), t.reshape(4, -1))):
    assert np.all(np.isfinite(jax.jit(jax.grad(fn))(z, t)))


# ---------------------------------------------------------------- distillers


def _output(seed, channels, batch=4, sizes=(8, 4, 2)):
  keys = jax.random.split(jax.random.PRNGKey(seed), len(channels) + 2)
  stages = tuple(jax.nn.relu(jax.random.normal(k, (batch, s, s, c))) for k, c, s in zip(keys, channels, sizes))
  return ModelOutput(prediction=jax.random.normal(keys[-1], (batch, 10)), stages=stages, preact_stages=stages,
                     embedding=jnp.mean(stages[-1], axis=(1, 2)))


STUDENT = _output(0, (16, 32, 64))
TEACHER = _output(1, (32, 64, 128))
TEACHER_SAME_WIDTHS = _output(2, (16, 32, 64))
BATCH = {"label": jnp.array([0, 1, 2, 3])}


@pytest.mark.parametrize("name,spec,teacher", [
    ("at", {"weight": 1000.0}, TEACHER),
    ("sp", {"weight": 3000.0}, TEACHER),
    ("cc", {"weight": 0.02}, TEACHER),
    ("cc", {"weight": 0.02, "form": "paper", "embed_dim": 0}, TEACHER),
    ("pkt", {"weight": 30000.0}, TEACHER),
    ("nst", {"weight": 50.0, "stages": [1, 2]}, TEACHER),
    ("fsp", {"weight": 50.0}, TEACHER_SAME_WIDTHS),
])
def test_distiller_from_config_jits_on_model_outputs(name, spec, teacher):
  total = distillers.from_config({"ce": {"weight": 1.0}, name: spec})
  variables = total.init(jax.random.PRNGKey(3), STUDENT, teacher, BATCH)
  loss_fn = jax.jit(lambda v, s, t: total(v, s, t, BATCH, train=True)[:2])
  loss, metrics = loss_fn(variables, STUDENT, teacher)
  assert loss.shape == () and np.isfinite(loss) and float(metrics[f"{name}/loss"]) > 0
  np.testing.assert_allclose(loss, metrics["ce/loss"] + spec["weight"] * metrics[f"{name}/loss"], rtol=1e-5)
  grads = jax.jit(jax.grad(lambda s: loss_fn(variables, s, teacher)[0]))(STUDENT)
  assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves((grads.stages, grads.embedding)))


def _jitted(distiller):
  return jax.jit(lambda variables, s, t: distiller(variables, s, t, BATCH)[:2])


def test_at_and_nst_default_to_every_stage_with_per_stage_metrics():
  for name, fn in (("at", at_loss), ("nst", nst_loss)):
    value, metrics = _jitted(distillers.make_distiller(name))({}, STUDENT, TEACHER)
    expected = [fn(s, t) for s, t in zip(STUDENT.stages, TEACHER.stages)]
    np.testing.assert_allclose(value, sum(expected), rtol=1e-5)
    np.testing.assert_allclose([metrics[f"stage{i}"] for i in range(3)], expected, rtol=1e-5)
  with pytest.raises(ValueError, match="stage 3 does not exist"):
    _jitted(distillers.AT(stages=(3,)))({}, STUDENT, TEACHER)


def test_sp_pkt_fsp_read_the_documented_outputs():
  sp, _ = _jitted(distillers.SP())({}, STUDENT, TEACHER)
  np.testing.assert_allclose(sp, sp_loss(STUDENT.stages[-1], TEACHER.stages[-1]), rtol=1e-6)
  pk, _ = _jitted(distillers.PKT())({}, STUDENT, TEACHER)
  np.testing.assert_allclose(pk, pkt_loss(STUDENT.embedding, TEACHER.embedding), rtol=1e-6)
  s, t = STUDENT.stages, TEACHER_SAME_WIDTHS.stages
  fs, _ = _jitted(distillers.FSP())({}, STUDENT, TEACHER_SAME_WIDTHS)
  np.testing.assert_allclose(fs, fsp_loss([(s[0], s[1]), (s[1], s[2])], [(t[0], t[1]), (t[1], t[2])]), rtol=1e-6)
  with pytest.raises(ValueError, match="equal channel counts"):
    _jitted(distillers.FSP())({}, STUDENT, TEACHER)


def test_cc_owns_two_trained_embed_layers_with_pytorch_init():
  cc = distillers.CC(embed_dim=12)
  variables = cc.init(jax.random.PRNGKey(4), STUDENT, TEACHER, BATCH)
  params = variables["params"]
  assert params["student_embed"]["kernel"].shape == (64, 12)
  assert params["teacher_embed"]["kernel"].shape == (128, 12)
  assert float(jnp.abs(params["teacher_embed"]["kernel"]).max()) <= 1 / math.sqrt(128)
  assert float(jnp.abs(params["student_embed"]["bias"]).max()) > 0  # nn.Linear's bias is not zero-initialised
  s_emb = STUDENT.embedding @ params["student_embed"]["kernel"] + params["student_embed"]["bias"]
  t_emb = TEACHER.embedding @ params["teacher_embed"]["kernel"] + params["teacher_embed"]["bias"]
  value, _ = _jitted(cc)(variables, STUDENT, TEACHER)
  np.testing.assert_allclose(value, cc_loss(s_emb, t_emb), rtol=1e-5)
  grads = jax.jit(jax.grad(lambda p: cc({"params": p}, STUDENT, TEACHER, BATCH)[0]))(params)
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))  # both layers are trained


def test_bad_hyper_parameters_are_named():
  with pytest.raises(ValueError, match="at: p must be > 0"):
    distillers.AT(p=0.0)
  with pytest.raises(ValueError, match="form must be"):
    distillers.PKT(form="papr")
  with pytest.raises(ValueError, match="stage_pairs"):
    distillers.FSP(stage_pairs=((0, 1, 2),))
