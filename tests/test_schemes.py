"""Schemes that train several networks in one run: `mutual` (DML) and `adversarial` (AFD)."""

import dataclasses
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
from kd_jax.train.schemes import adversarial, mutual
from kd_jax.train.step import apply_train

from helpers import small_config

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
    chex.assert_trees_all_close(after.batch_stats[name], forward(name, before.params[name])[1], rtol=1e-6)
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


def _afd_config(peers=("cnn_small",), **overrides):
  return _config("adversarial", peers=peers, **{"loss": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0,
                                                                                       "temperature": 3.0}},
                                                "optim.schedule": "constant", **overrides})


@pytest.fixture(scope="module")
def afd3_run(digits):
  return kd_run.build_run(_afd_config(peers=("cnn_small", "cnn_tiny")), digits,
                          mesh=sharding.make_mesh(jax.devices()[:1]))


def test_the_ring_pairs_each_network_with_the_previous_one():
  assert [adversarial.partner(k, 3) for k in range(3)] == [2, 0, 1]  # 1→2→3→1: network 2 learns from 1, ...
  assert [adversarial.partner(k, 2) for k in range(2)] == [1, 0]


def test_afd_discriminator_loss_pairs_each_network_with_its_partner_by_hand(afd3_run, digits):
  """For K=3 one discriminator per network (not one per pair), each calling its partner's map real: the
  first step's discriminator loss equals the hand-computed ring sum, and differs from the other ring's."""
  state = kd_run.init_state(afd3_run)
  before = jax.device_get(state)
  assert set(before.params[adversarial.DISCRIMINATORS]) == {"student", "peer1", "peer2"}
  host = kd_data.train_batch(digits.train, 32, seed=0, step=0)
  _, metrics = kd_run.make_step(afd3_run, state, 0)(state, sharding.shard_batch(host, afd3_run.mesh), ())
  models, disc, transfer = dict(afd3_run.models), afd3_run.discriminator, afd3_run.transfers
  maps = {}
  for name, model in models.items():
    out, _ = apply_train(model, before.params[name], before.batch_stats[name], jnp.asarray(host["image"]))
    maps[name] = transfer[name].apply({"params": before.params[adversarial.TRANSFER][name]}, out.stages[-1])

  def ring_loss(partner_of):
    total = 0.0
    for name, real_name in partner_of.items():
      params, stats = before.params["discriminators"][name], before.batch_stats["discriminators"][name]
      s_real, stats = apply_train(disc, params, stats, maps[real_name])
      s_fake, _ = apply_train(disc, params, stats, maps[name])
      total += float(jnp.mean((1 - s_real) ** 2) + jnp.mean(s_fake ** 2))
    return total

  forward = ring_loss({"student": "peer2", "peer1": "student", "peer2": "peer1"})
  backward = ring_loss({"student": "peer1", "peer1": "peer2", "peer2": "student"})
  np.testing.assert_allclose(metrics["discriminator_loss"], forward, rtol=1e-4)
  assert abs(forward - backward) > 1e-3


def test_afd_updates_use_their_own_optimizers(digits):
  """A discriminator learning rate of 0 leaves the discriminators unchanged while the networks move; the
  networks' adversarial optimizer moves them on its own (its learning rate changes where they end)."""
  mesh = sharding.make_mesh(jax.devices()[:1])

  def two_steps(**overrides):
    run = kd_run.build_run(_afd_config(**overrides), digits, mesh=mesh)
    state = kd_run.init_state(run)
    start = jax.device_get(state)
    step = kd_run.make_step(run, state, 0)
    for i in range(2):
      state, _ = step(state, sharding.shard_batch(kd_data.train_batch(digits.train, 32, seed=0, step=i), mesh), ())
    return start, jax.device_get(state)

  start, frozen = two_steps(**{"discriminators.optim.lr": 0.0})
  chex.assert_trees_all_equal(frozen.params["discriminators"], start.params["discriminators"])
  for name in ("student", "peer1"):
    assert not np.array_equal(jax.tree.leaves(frozen.params[name])[0], jax.tree.leaves(start.params[name])[0])
  assert set(frozen.opt_state) == {"student", "peer1", "student/adversarial", "peer1/adversarial",
                                   "discriminators"}
  _, moving = two_steps()
  assert not np.array_equal(jax.tree.leaves(moving.params["discriminators"])[0],
                            jax.tree.leaves(start.params["discriminators"])[0])
  _, no_adversarial = two_steps(**{"discriminators.network_optim.lr": 0.0})
  assert not np.array_equal(jax.tree.leaves(no_adversarial.params["student"])[0],
                            jax.tree.leaves(moving.params["student"])[0])


def _steps_on(devices, config, digits, count=3):
  mesh = sharding.make_mesh(devices)
  run = kd_run.build_run(config, digits, mesh=mesh)
  state, losses_ = kd_run.init_state(run), []
  step = kd_run.make_step(run, state, 0)
  for i in range(count):
    batch = sharding.shard_batch(kd_data.train_batch(digits.train, 32, seed=0, step=i), mesh)
    state, metrics = step(state, batch, ())
    losses_.append(float(metrics["loss"]))
  return np.array(losses_), jax.device_get(state)


@pytest.mark.parametrize("config", [_config("mutual", peers=("cnn_tiny",), **{"data.crop_pad": 1, "data.flip": True}),
                                    _afd_config()], ids=["dml", "afd"])
def test_eight_devices_match_one_device(digits, config):
  assert jax.device_count() == 8
  losses_1, state_1 = _steps_on(jax.devices()[:1], config, digits)
  losses_8, state_8 = _steps_on(jax.devices(), config, digits)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.params, state_1.params, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.batch_stats, state_1.batch_stats, rtol=1e-5, atol=1e-5)
  assert losses_1[-1] != losses_1[0]


@pytest.mark.parametrize("scheme", ["mutual", "adversarial"])
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


SCHEME_CONFIG = """
from kd_jax.config import base_config

def get_config():
  c = base_config()
  c.scheme = {scheme!r}
  c.student.model, c.peers = "cnn_tiny", ("mlp_tiny",)
  c.loss = {{"ce": {{"weight": 1.0}}, "kd": {{"weight": 1.0, "temperature": 1.0}}}}
  c.batch_size, c.eval_batch_size, c.epochs = 32, 256, 8
  c.optim.schedule = "constant"
  c.log_every_steps, c.progress_bar = 5, False
  c.checkpoint_every_epochs, c.keep_checkpoints = 1, 2
  return c
"""


# 'adversarial' only: its state holds every part of 'mutual's (several networks, one optimizer each) plus
# the discriminators and the networks' adversarial optimizers.
@pytest.mark.parametrize("scheme", ["adversarial"])
def test_sigkill_then_restart_equals_an_uninterrupted_run_for_every_network(tmp_path, scheme):
  import random
  import subprocess
  import sys
  import time
  from kd_jax.train import checkpoint as ckpt
  (tmp_path / "config.py").write_text(SCHEME_CONFIG.format(scheme=scheme))

  def train(workdir):
    cmd = [sys.executable, "-m", "kd_jax", "train", "--config", str(tmp_path / "config.py"), "--workdir", workdir]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

  workdir = str(tmp_path / "run")
  proc = train(workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 300
  while proc.poll() is None and time.time() < deadline and not (
      os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints))):
    time.sleep(0.05)
  time.sleep(random.Random().uniform(0.0, 1.0))  # after the first checkpoint, maybe in the middle of a write
  assert proc.poll() is None, "the run finished before it could be killed; make it longer"
  proc.kill()
  proc.wait()
  assert ckpt.checkpoint_manager(workdir, 2).all_steps()
  restarted, straight = train(workdir), train(str(tmp_path / "straight"))
  for p in (restarted, straight):
    output, _ = p.communicate(timeout=900)
    assert p.returncode == 0, output[-3000:]
  assert "| peer1 | mlp_tiny |" in output
  for network in ("", "networks/peer1"):
    a, b = (ocp_restore(os.path.join(d, network, "model")) for d in (workdir, str(tmp_path / "straight")))
    chex.assert_trees_all_equal(a, b)


def ocp_restore(path):
  import orbax.checkpoint as ocp
  return jax.tree.map(np.asarray, ocp.StandardCheckpointer().restore(path))
