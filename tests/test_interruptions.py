"""Preemption: SIGTERM to a real training process checkpoints, exits 0, and the run resumes exactly."""

import os
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
  model = models.create_model("cnn_tiny", 10)
  image = kd_data.load_dataset("digits").train.get(np.arange(1))["image"]
  chex.assert_trees_all_equal(ckpt.load_exported_model(workdir, model, image),
                              ckpt.load_exported_model(str(tmp_path / "straight"), model, image))
