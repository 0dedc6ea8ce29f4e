"""The `adversarial` scheme (AFD, online adversarial feature-map distillation): the ring, the discriminators'
loss by hand, the optimizers, devices, and an interrupted run."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import data as kd_data
from kd_jax.train import sharding
from kd_jax.train import run as kd_run
from kd_jax.train.schemes import adversarial
from kd_jax.train.step import apply_train

from helpers import scheme_steps_on, small_config

DML = {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 1.0}}


def _config(scheme, peers=("mlp_tiny",), **overrides):
  return small_config(**{"scheme": scheme, "peers": peers, "loss": DML, **overrides})


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
  networks' adversarial updates go through an optimizer of their own (its state moves)."""
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
  # The networks' adversarial optimizer received their adversarial gradients (its Adam moments moved).
  for name in ("student", "peer1"):
    moments = [leaf for leaf in jax.tree.leaves(moving.opt_state[f"{name}/adversarial"])
               if np.issubdtype(np.asarray(leaf).dtype, np.floating)]
    assert moments and any(np.any(np.asarray(m) != 0) for m in moments)


def test_eight_devices_match_one_device(digits):
  config = _afd_config()
  losses_1, state_1 = scheme_steps_on(jax.devices()[:1], config, digits)
  losses_8, state_8 = scheme_steps_on(jax.devices(), config, digits)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.params, state_1.params, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.batch_stats, state_1.batch_stats, rtol=1e-5, atol=1e-5)
  assert losses_1[-1] != losses_1[0]


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
