"""Pruning (kd_jax.compression.pruning): exact mask counts and deterministic ties, masks kept through
optimizer updates, the Zhu & Gupta schedule, the report, and structured filter pruning whose smaller
network equals the masked one."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax.compression import pruning
from kd_jax.errors import KDJaxError
from kd_jax.models import create_model, param_count

import helpers


def _tree():
  """Two conv kernels, a dense kernel, biases and a BN: 'a' sorts before 'b' before 'fc'."""
  rng = np.random.default_rng(0)
  return {
      "a": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32), "bias": jnp.ones(4)},
      "b": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 4, 4)) * 10, jnp.float32)},
      "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
      "fc": {"kernel": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32), "bias": jnp.zeros(5)},
  }


def _pruned_count(mask) -> int:
  return int(np.size(mask) - np.count_nonzero(np.asarray(mask)))


# ----------------------------------------------------------------------------------------------------------
# Magnitude masks.
# ----------------------------------------------------------------------------------------------------------

def test_layer_masks_reach_the_exact_count_with_ties_and_existing_zeros():
  # Every |w| equal except for a few exact zeros: the zeros go first, then the lowest flat indices.
  w = np.where(np.arange(14) % 2, 1.0, -1.0)
  w[[9, 12]] = 0.0
  params = {"layer": {"kernel": jnp.asarray(w.reshape(2, 7), jnp.float32), "bias": jnp.ones(7)},
            "other": {"kernel": jnp.ones((2, 5))}}
  masks = pruning.magnitude_masks(params, 0.25)
  # round(0.25·14) = round(3.5) = 4 (half to even); round(0.25·10) = round(2.5) = 2.
  pruned = np.flatnonzero(~np.asarray(masks["layer"]["kernel"]).reshape(-1))
  np.testing.assert_array_equal(pruned, [0, 1, 9, 12])
  np.testing.assert_array_equal(np.flatnonzero(~np.asarray(masks["other"]["kernel"]).reshape(-1)), [0, 1])
  assert masks["layer"]["bias"].shape == () and bool(masks["layer"]["bias"])      # not prunable: scalar True
  applied = pruning.apply_masks(params, masks)
  assert int(np.sum(np.asarray(applied["layer"]["kernel"]) == 0)) == 4
  np.testing.assert_array_equal(applied["layer"]["bias"], params["layer"]["bias"])
  # The existing one-shot API is the same thing without the masks.
  for s in (0.0, 0.1, 0.25, 0.5, 1.0):
    expected = pruning.apply_masks(params, pruning.magnitude_masks(params, s))
    jax.tree.map(np.testing.assert_array_equal, pruning.prune_by_magnitude(params, s), expected)


def test_layer_and_global_scopes_on_kernels_of_different_scales():
  params = _tree()
  sizes = {"a": 72, "b": 144, "fc": 20}
  layer = pruning.magnitude_masks(params, 0.5, scope="layer")
  for name, n in sizes.items():
    assert _pruned_count(layer[name]["kernel"]) == round(0.5 * n), name
  glob = pruning.magnitude_masks(params, 0.5, scope="global")
  assert sum(_pruned_count(glob[name]["kernel"]) for name in sizes) == round(0.5 * 236)
  # One threshold over all prunable kernels: every pruned |w| is at most every kept |w|.
  pruned = np.concatenate([np.abs(np.asarray(params[n]["kernel"]))[~np.asarray(glob[n]["kernel"])] for n in sizes])
  kept = np.concatenate([np.abs(np.asarray(params[n]["kernel"]))[np.asarray(glob[n]["kernel"])] for n in sizes])
  assert pruned.max() <= kept.min()
  assert _pruned_count(glob["b"]["kernel"]) < 72           # the large-scale kernel keeps more under 'global'
  # Global ties go by leaf order (path-sorted: a, b, fc), then flat index.
  ones = jax.tree.map(jnp.ones_like, params)
  tied = pruning.magnitude_masks(ones, 80 / 236, scope="global")
  assert _pruned_count(tied["a"]["kernel"]) == 72 and _pruned_count(tied["b"]["kernel"]) == 8
  np.testing.assert_array_equal(np.flatnonzero(~np.asarray(tied["b"]["kernel"]).reshape(-1)), np.arange(8))
  assert _pruned_count(tied["fc"]["kernel"]) == 0


def test_exclude_patterns_and_prunable_paths():
  params = {"conv1": {"kernel": jnp.ones((3, 3, 3, 4))}, "fc": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
            "layer1_0": {"conv1": {"kernel": jnp.ones((3, 3, 4, 4))}}}
  assert pruning.prunable_paths(params) == ["conv1/kernel", "fc/kernel", "layer1_0/conv1/kernel"]
  exclude = ("^conv1/", "^fc/")
  assert pruning.prunable_paths(params, exclude) == ["layer1_0/conv1/kernel"]
  masks = pruning.magnitude_masks(params, 0.5, exclude=exclude, scope="global")
  assert masks["conv1"]["kernel"].shape == () and masks["fc"]["kernel"].shape == ()
  assert _pruned_count(masks["layer1_0"]["conv1"]["kernel"]) == 72       # all of the global count goes here
  with pytest.raises(KDJaxError, match="regular expression"):
    pruning.magnitude_masks(params, 0.5, exclude=("(",))


def test_masks_under_jit_with_static_and_traced_sparsity():
  params = _tree()
  jitted = jax.jit(pruning.magnitude_masks, static_argnames=("sparsity", "scope"))
  for scope in pruning.SCOPES:
    traced = jax.jit(lambda p, s, scope=scope: pruning.magnitude_masks(p, s, scope=scope))
    for s in (0.0, 0.25, 0.9, 1.0):
      static = jitted(params, sparsity=s, scope=scope)
      for name, n in (("a", 72), ("b", 144), ("fc", 20)):
        if scope == "layer":
          assert _pruned_count(static[name]["kernel"]) == round(s * n)
      jax.tree.map(np.testing.assert_array_equal, traced(params, jnp.float32(s)), static)


def test_previous_masks_stay_pruned():
  # Two exact zeros tie at |w| = 0; the one `previous` pruned (index 3) stays pruned, not the lower index.
  params = {"k": {"kernel": jnp.asarray([[0.0, 5.0, 6.0, 0.0, 7.0, 8.0]], jnp.float32)}}
  previous = {"k": {"kernel": jnp.asarray([[True, True, True, False, True, True]])}}
  fresh = pruning.magnitude_masks(params, 1 / 6)
  assert np.flatnonzero(~np.asarray(fresh["k"]["kernel"]).reshape(-1)).tolist() == [0]
  kept = pruning.magnitude_masks(params, 1 / 6, previous=previous)
  assert np.flatnonzero(~np.asarray(kept["k"]["kernel"]).reshape(-1)).tolist() == [3]
  grown = pruning.magnitude_masks(params, 0.5, previous=previous)
  assert np.flatnonzero(~np.asarray(grown["k"]["kernel"]).reshape(-1)).tolist() == [0, 1, 3]


# ----------------------------------------------------------------------------------------------------------
# Masks kept through the optimizer.
# ----------------------------------------------------------------------------------------------------------

def _loss(params, x, y):
  h = jnp.tanh(x @ params["a"]["kernel"] + params["a"]["bias"])
  return jnp.mean((h @ params["b"]["kernel"] - y) ** 2)


@pytest.mark.parametrize("name,tx", [
    ("sgd_momentum_wd", optax.chain(optax.add_decayed_weights(5e-2), optax.sgd(0.1, momentum=0.9))),
    ("adamw", optax.adamw(1e-2, weight_decay=0.1)),
])
def test_pruned_weights_stay_zero_through_momentum_and_weight_decay(name, tx):
  rng = np.random.default_rng(1)
  params = {"a": {"kernel": jnp.asarray(rng.normal(size=(6, 8)), jnp.float32), "bias": jnp.zeros(8)},
            "b": {"kernel": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)}}
  x, y = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32), jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  grad = jax.jit(jax.grad(_loss))
  opt_state = tx.init(params)
  for _ in range(3):  # momentum and moments built up before pruning
    updates, opt_state = tx.update(grad(params, x, y), opt_state, params)
    params = optax.apply_updates(params, updates)
  masks = pruning.magnitude_masks(params, 0.5)
  start = params

  masked_step = jax.jit(lambda p, s: pruning.masked_update(tx, grad(p, x, y), s, p, masks))
  wrapped = pruning.keep_pruned(tx)

  @jax.jit
  def wrapped_step(p, s):
    updates, s = wrapped.update(grad(p, x, y), s, p, masks=masks)
    return optax.apply_updates(p, updates), s

  @jax.jit
  def gradient_only_step(p, s):  # masks the gradient but not the parameters: not enough
    updates, s = tx.update(pruning.masked_gradients(grad(p, x, y), masks), s, p)
    return optax.apply_updates(p, updates), s

  # keep_pruned's state is tx's own, so all three continue from the same optimizer state.
  assert jax.tree.structure(wrapped.init(params)) == jax.tree.structure(opt_state)
  (p1, s1), (p2, s2), (p3, s3) = [(params, opt_state)] * 3
  for _ in range(5):
    p1, s1 = masked_step(p1, s1)
    p2, s2 = wrapped_step(p2, s2)
    p3, s3 = gradient_only_step(p3, s3)
  for layer in ("a", "b"):
    m = np.asarray(masks[layer]["kernel"])
    w = np.asarray(p1[layer]["kernel"])
    assert np.all(w[~m] == 0.0), (name, layer)
    assert np.all(w[m] != np.asarray(start[layer]["kernel"])[m]), (name, layer)      # the rest trains
    np.testing.assert_allclose(np.asarray(p2[layer]["kernel"]), w, rtol=1e-6, atol=1e-7)
    assert np.all(np.asarray(p2[layer]["kernel"])[~m] == 0.0)
    assert np.any(np.asarray(p3[layer]["kernel"])[~m] != 0.0), (name, layer)      # drift without re-masking
  with pytest.raises(KDJaxError, match="masks"):
    wrapped.update(grad(params, x, y), opt_state, params)


def test_masks_must_match_the_parameters():
  params = _tree()
  with pytest.raises(KDJaxError, match="structure"):
    pruning.apply_masks(params, {"a": {"kernel": True}})
  with pytest.raises(KDJaxError, match="scope"):
    pruning.magnitude_masks(params, 0.5, scope="network")
  with pytest.raises(KDJaxError, match=r"\[0, 1\]"):
    pruning.magnitude_masks(params, 1.5)


# ----------------------------------------------------------------------------------------------------------
# The polynomial schedule.
# ----------------------------------------------------------------------------------------------------------

SCHEDULE = dict(initial=0.1, final=0.9, begin_step=10, num_updates=4, update_every=5)   # updates at 10..30


def test_polynomial_sparsity_matches_the_formula():
  s_i, s_f, t0, n, dt = 0.1, 0.9, 10, 4, 5

  def formula(t):
    return s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3

  at = lambda step: float(pruning.polynomial_sparsity(step, **SCHEDULE))
  assert at(0) == 0.0 and at(9) == 0.0                                    # before t0: no pruning
  np.testing.assert_allclose(at(10), s_i, atol=1e-7)                     # start
  np.testing.assert_allclose(at(20), formula(20), atol=1e-7)             # midpoint: s_f + (s_i − s_f)/8
  np.testing.assert_allclose(at(20), s_f + (s_i - s_f) / 8, atol=1e-7)
  np.testing.assert_allclose(at(30), s_f, atol=1e-7)                     # end
  np.testing.assert_allclose(at(1000), s_f, atol=1e-7)
  for step in range(10, 31):                                             # held between updates
    np.testing.assert_allclose(at(step), formula(10 + (step - 10) // 5 * 5), atol=1e-6)
  traced = jax.jit(lambda t: pruning.polynomial_sparsity(t, **SCHEDULE))
  np.testing.assert_allclose([float(traced(t)) for t in (9, 10, 17, 20, 31)],
                             [0.0, s_i, formula(15), formula(20), s_f], atol=1e-6)
  one_shot = dict(SCHEDULE, num_updates=0)
  assert float(pruning.polynomial_sparsity(9, **one_shot)) == 0.0
  np.testing.assert_allclose(float(pruning.polynomial_sparsity(10, **one_shot)), s_f, atol=1e-7)
  kw = {k: SCHEDULE[k] for k in ("begin_step", "num_updates", "update_every")}
  updates = [t for t in range(0, 50) if bool(pruning.is_update_step(t, **kw))]
  assert updates == [10, 15, 20, 25, 30]
  with pytest.raises(KDJaxError, match="initial"):
    pruning.polynomial_sparsity(0, **dict(SCHEDULE, initial=0.95))
  with pytest.raises(KDJaxError, match="update_every"):
    pruning.polynomial_sparsity(0, **dict(SCHEDULE, update_every=0))


def test_gradual_masks_in_a_jitted_loop():
  params = _tree()
  schedule = dict(initial=0.0, final=0.8, begin_step=2, num_updates=3, update_every=2)   # updates at 2, 4, 6, 8
  exclude = ("^fc/",)
  masks = pruning.magnitude_masks(params, 0.0, exclude=exclude)
  tx = optax.sgd(0.05, momentum=0.9)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, masks, opt_state, t, key):
    masks = pruning.gradual_masks(params, masks, t, exclude=exclude, **schedule)
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
    params, opt_state = pruning.masked_update(tx, grads, opt_state, params, masks)
    return params, masks, opt_state

  history = []
  for t in range(12):
    params, masks, opt_state = step(params, masks, opt_state, t, jax.random.key(t))
    target = float(pruning.polynomial_sparsity(t, **schedule))
    for name, n in (("a", 72), ("b", 144)):
      assert _pruned_count(masks[name]["kernel"]) == round(target * n), (t, name)
      assert int(np.sum(np.asarray(params[name]["kernel"]) == 0)) >= round(target * n)
    assert masks["fc"]["kernel"].shape == ()
    history.append(np.asarray(masks["b"]["kernel"]))
  for before, after in zip(history, history[1:]):
    assert not np.any(after & ~before)                                   # once pruned, always pruned
  assert _pruned_count(history[-1]) == round(0.8 * 144)


# ----------------------------------------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------------------------------------

def test_sparsity_report():
  params = _tree()
  masks = pruning.magnitude_masks(params, 0.5, exclude=("^fc/",))
  report = pruning.sparsity_report(params, masks)
  total = 72 + 4 + 144 + 4 + 4 + 20 + 5
  # The bn scale (ones) and the biases `a` (ones) are nonzero; bn bias and fc bias are zeros.
  nonzero = (72 - 36) + 4 + (144 - 72) + 4 + 20
  assert report["total"] == total and report["nonzero"] == nonzero
  np.testing.assert_allclose(report["sparsity"], 1 - nonzero / total)
  assert report["kernel_total"] == 236 and report["kernel_nonzero"] == 36 + 72 + 20
  assert set(report["layers"]) == {"a/kernel", "b/kernel", "fc/kernel"}
  assert report["layers"]["b/kernel"] == {"size": 144, "nonzero": 72, "sparsity": 0.5}
  assert report["layers"]["fc/kernel"]["sparsity"] == 0.0
  assert pruning.sparsity_report(params)["nonzero"] == nonzero + 36 + 72


# ----------------------------------------------------------------------------------------------------------
# Structured filter pruning.
# ----------------------------------------------------------------------------------------------------------

X = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _resnet8(inner_widths=None):
  model = create_model("resnet8", 10, inner_widths=inner_widths)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(X.shape), train=False))
  apply = jax.jit(lambda v, x, train: model.apply(v, x, train=train, mutable=["batch_stats"] if train else False),
                  static_argnums=2)
  return model, abstract, apply


def _outputs(out):
  return [out.prediction, out.embedding, out.stem, *out.stages, *out.preact_stages]


def test_filter_pruning_smaller_network_equals_the_masked_one():
  _, abstract, apply_full = _resnet8()
  variables = jax.tree.map(jnp.asarray, helpers.numpy_variables(abstract, seed=5))   # nonzero BN means
  params, stats = variables["params"], variables["batch_stats"]
  rate = 0.4                                                  # round(6.4) = 6 of 16, 13 of 32, 26 of 64
  masks = pruning.filter_masks(params, rate)
  apply = jax.jit(pruning.apply_masks)
  masked = {"params": apply(params, masks), "batch_stats": stats}
  inner, small_params, small_stats = pruning.prune_filters(params, stats, rate)
  assert inner == (10, 19, 38)
  keep = np.asarray(masks["layer2_0"]["bn1"]["scale"])                   # the smallest L1 norms went
  l1 = np.abs(np.asarray(params["layer2_0"]["conv1"]["kernel"])).sum((0, 1, 2))
  assert (~keep).sum() == 13 and l1[~keep].max() <= l1[keep].min()
  # The masked parameters select the same filters (their L1 norms are 0).
  inner_again, again, _ = pruning.prune_filters(masked["params"], stats, rate)
  assert inner_again == inner
  jax.tree.map(np.testing.assert_array_equal, again, small_params)

  _, small_abstract, apply_small = _resnet8(inner)
  assert jax.tree.map(lambda a: a.shape, small_abstract["params"]) == jax.tree.map(jnp.shape, small_params)
  small = {"params": small_params, "batch_stats": small_stats}
  for out_full, out_small in zip(_outputs(apply_full(masked, X, False)), _outputs(apply_small(small, X, False))):
    np.testing.assert_allclose(out_small, out_full, atol=1e-5, rtol=1e-5)
  (full_out, full_upd), (small_out, small_upd) = apply_full(masked, X, True), apply_small(small, X, True)
  for out_full, out_small in zip(_outputs(full_out), _outputs(small_out)):
    np.testing.assert_allclose(out_small, out_full, atol=1e-5, rtol=1e-5)
  # Train-mode statistics agree too (bn1 on the kept channels).
  _, _, pruned_upd = pruning.prune_filters(params, full_upd["batch_stats"], rate)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), pruned_upd,
               small_upd["batch_stats"])

  # Parameter count: down by exactly the masked-out entries, k·(9·C_in + 2 + 9·C_out) per block.
  removed = sum(_pruned_count(m) for m in jax.tree.leaves(masks))
  by_hand = 6 * (9 * 16 + 2 + 9 * 16) + 13 * (9 * 16 + 2 + 9 * 32) + 26 * (9 * 32 + 2 + 9 * 64)
  assert removed == by_hand
  assert param_count(params) - param_count(small_params) == by_hand
  report = pruning.sparsity_report(params, masks)
  assert report["nonzero"] == param_count(small_params)     # numpy_variables draws no exact zeros

  # Why bn1 is masked: with only the conv1 filters zeroed, BN turns each empty channel into a constant
  # (0 − μ)·γ/√(σ² + ε) + β that conv2 then reads; with bn1 masked as well the channel is 0, and the network
  # equals the smaller one even before conv2's input channels are masked.
  def only(keys):  # the masks of `keys` in each block applied (in numpy), the others not
    def block(name, sub):
      return {k: jax.tree.map(lambda p, m: np.where(m, p, 0), v, masks[name][k]) if k in keys else v
              for k, v in sub.items()}
    return {name: block(name, sub) if name.startswith("layer") else sub for name, sub in params.items()}

  small_logits = apply_small(small, X, False).prediction
  filters_only = {"params": only({"conv1"}), "batch_stats": stats}
  assert not np.allclose(apply_full(filters_only, X, False).prediction, small_logits, atol=1e-3)
  with_bn = {"params": only({"conv1", "bn1"}), "batch_stats": stats}
  np.testing.assert_allclose(apply_full(with_bn, X, False).prediction, small_logits, atol=1e-5, rtol=1e-5)


def test_filter_pruning_ties_block_order_and_errors():
  def block(c_in, c):
    bn = {"scale": jnp.ones(c), "bias": jnp.ones(c)}
    return {"conv1": {"kernel": jnp.ones((3, 3, c_in, c))}, "bn1": bn, "conv2": {"kernel": jnp.ones((3, 3, c, c))},
            "bn2": bn}

  # Twelve blocks, only layer1_10 wider: it comes after layer1_9 (numeric order), not after layer1_1.
  widths = [6 if i == 10 else 4 for i in range(12)]
  params = {f"layer1_{i}": block(2, c) for i, c in enumerate(widths)}
  stats = {f"layer1_{i}": {"bn1": {"mean": jnp.zeros(c), "var": jnp.ones(c)}} for i, c in enumerate(widths)}
  inner, new_params, new_stats = pruning.prune_filters(params, stats, 0.5)
  assert inner == (2,) * 10 + (3, 2)
  # All filters tie: the lowest indices go, so the kept ones are the last.
  masks = pruning.filter_masks(params, 0.5)
  np.testing.assert_array_equal(masks["layer1_2"]["bn1"]["scale"], [False, False, True, True])
  assert new_stats["layer1_2"]["bn1"]["mean"].shape == (2,)
  assert new_params["layer1_2"]["conv2"]["kernel"].shape == (3, 3, 2, 4)
  with pytest.raises(KDJaxError, match="all 2 filters"):
    pruning.filter_masks({"layer1_0": block(2, 2)}, 0.9)
  with pytest.raises(KDJaxError, match="no residual blocks"):
    pruning.filter_masks({"conv1": {"kernel": jnp.ones((3, 3, 3, 4))}}, 0.5)
  bottleneck = dict(block(2, 4), conv3={"kernel": jnp.ones((1, 1, 4, 8))})
  with pytest.raises(KDJaxError, match="Bottleneck"):
    pruning.filter_masks({"layer1_0": bottleneck}, 0.5)
  cheap = dict(block(2, 4), conv1={"conv_grouped": {"kernel": jnp.ones((3, 3, 1, 2))}})
  with pytest.raises(KDJaxError, match="standard convolutions"):
    pruning.filter_masks({"layer1_0": cheap}, 0.5)
  with pytest.raises(KDJaxError, match="inner_widths"):
    create_model("resnet8", 10, inner_widths=(4, 4))
