"""Schemes that train several networks in one run: `mutual` (DML); `adversarial` (AFD) is test_schemes_afd.py."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax import data as kd_data
from kd_jax import distillers, losses
from kd_jax.distillers import Context
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.train import optim, sharding
from kd_jax.train import run as kd_run
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train.schemes import mutual

from helpers import scheme_steps_on, small_config

DML = {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 1.0}}


def _config(scheme, peers=("mlp_tiny",), **overrides):
  return small_config(**{"scheme": scheme, "peers": peers, "loss": DML, **overrides})


def _out(z):
  return ModelOutput(prediction=z, stages=(), preact_stages=(), embedding=z)


def _kl(p_logits, q_logits):
  """KL(softmax(p) ‖ softmax(q)) per row, in numpy float64."""
  p, q = (np.asarray(jax.nn.log_softmax(jnp.asarray(z, jnp.float32)), np.float64) for z in (p_logits, q_logits))
  return np.sum(np.exp(p) * (p - q), -1)


def _ce(z, y):
  log_p = np.asarray(jax.nn.log_softmax(z), np.float64)
  return -np.mean(log_p[np.arange(len(y)), y])


@pytest.mark.parametrize("count", [2, 3])
def test_dml_loss_of_each_network_is_ce_plus_the_mean_kl_to_the_others_by_hand(count):
  zs = [jax.random.normal(jax.random.PRNGKey(k), (8, 10)) * 3 for k in range(count)]
  labels = jnp.arange(8) % 10
  results = mutual.peer_losses(distillers.from_config(DML), [_out(z) for z in zs], {"label": labels},
                               Context(task=None))
  for k, (value, metrics) in enumerate(results):
    kls = [np.mean(_kl(zs[j], zs[k])) for j in range(count) if j != k]
    np.testing.assert_allclose(value, _ce(zs[k], labels) + np.mean(kls), rtol=1e-5)
    np.testing.assert_allclose(metrics["kd/loss"], np.mean(kls), rtol=1e-5)


@pytest.fixture(scope="module")
def dml_run(digits):
  return kd_run.build_run(_config("mutual"), digits, mesh=sharding.make_mesh(jax.devices()[:1]))


def test_gradients_reach_only_the_network_they_belong_to(dml_run, digits):
  state = kd_run.init_state(dml_run)
  batch = {k: jnp.asarray(v) for k, v in kd_data.train_batch(digits.train, 32, seed=0, step=0).items()}
  models = dict(dml_run.models)

  def first_loss(params):
    outs = [models[n].apply({"params": params[n], "batch_stats": state.batch_stats[n]}, batch["image"])
            for n in ("student", "peer1")]
    return mutual.peer_losses(dml_run.distillers[0], outs, batch, Context())[0][0]

  grads = jax.grad(first_loss)(state.params)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["peer1"]))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["student"]))


@pytest.mark.parametrize("update", ["sequential", "simultaneous"])
def test_one_compiled_mutual_step_equals_two_hand_written_updates(digits, update):
  """Sequential (the paper's Algorithm 1): the student is updated against the peer's prediction, then the
  peer against the student's prediction after that update. Simultaneous: both against the first forward."""
  run = kd_run.build_run(_config("mutual", mutual_update=update), digits, mesh=sharding.make_mesh(jax.devices()[:1]))
  state = kd_run.init_state(run)
  before = jax.device_get(state)
  host = kd_data.train_batch(digits.train, 32, seed=0, step=0)
  after, metrics = kd_run.make_step(run, state, 0)(state, sharding.shard_batch(host, run.mesh), ())
  after = jax.device_get(after)

  batch = {k: jnp.asarray(v) for k, v in host.items()}
  models = dict(run.models)
  tx = optim.make_optimizer(run.config.optim, optim.learning_rate_schedule(run.config.optim, 1, 1))

  def forward(name, params):
    out, updates = models[name].apply({"params": params, "batch_stats": before.batch_stats[name]}, batch["image"],
                                      train=True, mutable=["batch_stats"])
    return out.logits, updates.get("batch_stats", {})

  targets = {name: forward(name, before.params[name])[0] for name in models}
  for name, other in (("student", "peer1"), ("peer1", "student")):
    def loss(params, name=name, other=other):
      logits, _ = forward(name, params)
      return (losses.cross_entropy(logits, batch["label"]) +
              losses.kd(logits, jax.lax.stop_gradient(targets[other]), 1.0))
    value, grads = jax.value_and_grad(loss)(before.params[name])
    updates, _ = tx.update(grads, tx.init(before.params[name]), before.params[name])
    expected = optax.apply_updates(before.params[name], updates)
    chex.assert_trees_all_close(after.params[name], expected, rtol=1e-5, atol=1e-6)
    # atol: a channel's running mean near 0 (5e-4) cannot be held to rtol alone when the two programs sum the
    # batch in different orders (1e-8 is about three ulps of a typical entry, ~0.03).
    chex.assert_trees_all_close(after.batch_stats[name], forward(name, before.params[name])[1], rtol=1e-6,
                                atol=1e-8)
    np.testing.assert_allclose(metrics[f"{name}/loss"], value, rtol=1e-5)
    if update == "sequential":
      targets[name] = forward(name, expected)[0]
  np.testing.assert_allclose(metrics["loss"], metrics["student/loss"] + metrics["peer1/loss"], rtol=1e-6)


def test_mutual_refuses_distillers_with_parameters_and_frozen_teachers(tmp_path, digits):
  with pytest.raises(KDJaxError, match="own no parameters.*hint"):
    train_and_evaluate(_config("mutual", peers=("cnn_tiny",),
                               loss={"ce": {"weight": 1.0}, "hint": {"weight": 1.0, "distiller": "fitnet", "stage": 0}}),
                       str(tmp_path / "a"), dataset=digits)
  with pytest.raises(KDJaxError, match="list the others in config.peers"):
    train_and_evaluate(_config("mutual", peers=()), str(tmp_path / "b"), dataset=digits)
  with pytest.raises(KDJaxError, match="without frozen teachers"):
    train_and_evaluate(_config("mutual", **{"teacher.workdir": str(tmp_path)}), str(tmp_path / "c"), dataset=digits)


def test_eight_devices_match_one_device(digits):
  config = _config("mutual", peers=("cnn_tiny",), **{"data.crop_pad": 1, "data.flip": True})
  assert jax.device_count() == 8
  losses_1, state_1 = scheme_steps_on(jax.devices()[:1], config, digits)
  losses_8, state_8 = scheme_steps_on(jax.devices(), config, digits)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.params, state_1.params, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.batch_stats, state_1.batch_stats, rtol=1e-5, atol=1e-5)
  assert losses_1[-1] != losses_1[0]


# 'mutual' here; an 'adversarial' run trains, exports and reloads every network in test_schemes_afd.py's
# SIGKILL test.
@pytest.mark.parametrize("scheme", ["mutual"])
def test_a_run_trains_evaluates_and_exports_every_network(tmp_path, digits, scheme):
  config = _config(scheme, peers=("cnn_tiny", "cnn_small"), max_steps=6)
  results = train_and_evaluate(config, str(tmp_path / scheme), dataset=digits)
  rows = [r for r in results["table"].splitlines()[2:]]
  assert [r.split("|")[1].strip() for r in rows] == ["student", "peer1", "peer2"]
  assert [n["model"] for n in results["networks"]] == ["cnn_tiny", "cnn_tiny", "cnn_small"]
  for network in results["networks"]:
    assert 0.0 <= network["test"]["accuracy"] <= 1.0 and "accuracy" in network["val"]
  for path in ("model.json", "networks/peer1/model.json", "networks/peer2/model.json"):
    assert os.path.isfile(tmp_path / scheme / path)
  # An exported peer is a teacher for a later distill run.
  from kd_jax.train.checkpoint import read_export_info
  assert read_export_info(str(tmp_path / scheme / "networks" / "peer2"))["model"] == "cnn_small"
