"""Interrupted training processes: SIGTERM (preemption) checkpoints and exits 0; SIGKILL (a crash) loses at
most the steps since the last checkpoint. Either way, running the same command again ends with exactly the
model of an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import chex
import numpy as np

from kd_jax import data as kd_data
from kd_jax import models
from kd_jax.train import checkpoint as ckpt

CONFIG = textwrap.dedent("""
    from kd_jax.config import base_config

    def get_config():
      c = base_config()
      c.student.model = "cnn_tiny"
      c.batch_size, c.eval_batch_size, c.epochs = 32, 256, 1000
      c.optim.schedule = "constant"
      c.log_every_steps, c.progress_bar = 5, False
      c.checkpoint_every_epochs = 1000  # only the signal writes a checkpoint before the end
      return c
""")


def _train(config, workdir, *overrides, **kwargs):
  cmd = [sys.executable, "-m", "kd_jax", "train", "--config", config, "--workdir", workdir, *overrides]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kwargs)


def test_sigterm_checkpoints_exits_zero_and_resumes_to_the_uninterrupted_result(tmp_path):
  config = tmp_path / "config.py"
  config.write_text(CONFIG)
  workdir = str(tmp_path / "run")
  proc = _train(str(config), workdir)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 240
  while not os.path.exists(metrics) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)  # the first epoch's metrics: training is under way
  assert proc.poll() is None, proc.communicate()[0]
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, output
  assert "SIGTERM received: checkpointed step" in output and "Run the same command again" in output
  (step,) = ckpt.checkpoint_manager(workdir, 3).all_steps()
  assert 0 < step < 1000 * 36

  # Resume a few steps past the preemption point; an uninterrupted run to the same step must agree exactly.
  target = f"--config.max_steps={step + 7}"
  resumed = _train(str(config), workdir, target)
  straight = _train(str(config), str(tmp_path / "straight"), target)
  for proc in (resumed, straight):
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
  chex.assert_trees_all_equal(_exported(workdir), _exported(str(tmp_path / "straight")))


def _exported(workdir):
  model = models.create_model("cnn_tiny", 10)
  image = kd_data.load_dataset("digits").train.get(np.arange(1))["image"]
  return ckpt.load_exported_model(workdir, model, image)


def test_sigkill_at_a_random_step_then_restart_equals_an_uninterrupted_run(tmp_path):
  config = tmp_path / "config.py"
  config.write_text(CONFIG)
  # Checkpoint every epoch (35 steps); 40 epochs in all, so the kill lands well before the end.
  args = ("--config.checkpoint_every_epochs=1", "--config.epochs=40", "--config.keep_checkpoints=2")
  workdir = str(tmp_path / "run")
  proc = _train(str(config), workdir, *args)
  checkpoints = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 240
  while proc.poll() is None and time.time() < deadline and not (
      os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints))):
    time.sleep(0.05)
  time.sleep(random.Random().uniform(0.0, 1.0))  # somewhere after the first checkpoint, maybe mid-write
  assert proc.poll() is None, "the run finished before it could be killed; make it longer"
  proc.kill()
  proc.wait()
  manager = ckpt.checkpoint_manager(workdir, 2)
  steps = manager.all_steps()  # orbax lists only finished checkpoints; a killed write stays a temp dir
  assert steps and all(s % 35 == 0 for s in steps)  # 1132 examples // 32 = 35 steps per epoch

  restarted = _train(str(config), workdir, *args)
  straight = _train(str(config), str(tmp_path / "straight"), *args)
  for proc in (restarted, straight):
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
  chex.assert_trees_all_equal(_exported(workdir), _exported(str(tmp_path / "straight")))
