"""Multi-process training: two processes on 127.0.0.1 (2 CPU devices each) end with the parameters of one
process with 4 devices; `config.distributed` is resolved with clear errors for half-given settings."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import small_config
from kd_jax.errors import KDJaxError
from kd_jax.train import distributed, sharding

CONFIG = textwrap.dedent("""
    from kd_jax.config import base_config

    def get_config():
      c = base_config()
      c.student.model = "cnn_tiny"
      c.batch_size, c.eval_batch_size, c.epochs, c.max_steps = 32, 64, 2, 4
      c.optim.schedule = "constant"
      c.log_every_steps, c.progress_bar = 2, False
      c.distributed.initialization_timeout = 60
      return c
""")

# One process trains a CE run, then a KD student with that run as its teacher: the second `main` call finds
# jax.distributed initialised already, and the teacher is read from an export written by both processes. The
# KD run shards parameters (FSDP), so its export gathers arrays split across the two processes, and runs two
# steps per compiled call, so each process feeds its rows of stacked batches. A third run reads the teacher
# from the teacher-output cache (every process computes the pass, process 0 writes the entry) and is then
# resumed for two more steps, which reuses the entry after checking it with a collective teacher pass.
CHILD = textwrap.dedent("""
    import sys
    from kd_jax.cli import main

    config, out, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    kd = ["--config.teacher.workdir=" + out + "/ce",
          "--config.loss={'ce': {'weight': 0.1}, 'kd': {'weight': 0.9, 'temperature': 4.0}}"]
    rc = main(["train", "--config", config, "--workdir", out + "/ce", *extra])
    if rc == 0:
      rc = main(["train", "--config", config, "--workdir", out + "/kd", *kd, "--config.sharding.params=fsdp",
                 "--config.sharding.fsdp_min_size=0", "--config.steps_per_call=2", *extra])
    for steps in (4, 6):
      if rc == 0:
        rc = main(["train", "--config", config, "--workdir", out + "/cached", *kd, "--config.teacher.cache=True",
                   f"--config.max_steps={steps}", *extra])
    sys.exit(rc)
""")

TIMEOUT_S = 240  # generous for 3 processes sharing 2 busy cores; a hung collective fails instead of blocking CI


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(tmp_path, name, workdir, devices, extra=()):
  # Each child forces its own device count (this test process has 8 from conftest.py) and takes its
  # distributed settings from the command line only.
  env = {k: v for k, v in os.environ.items() if not k.startswith("KD_JAX_")}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  log = open(tmp_path / f"{name}.log", "w")
  cmd = [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "config.py"), str(tmp_path / workdir), *extra]
  return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, text=True), log


def _run_all(procs, tmp_path):
  """Waits for every child; on a failure or the deadline kills the rest, so nothing waits on a dead peer."""
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while any(p.poll() is None for p, _ in procs.values()):
      failed = [n for n, (p, _) in procs.items() if p.poll() not in (None, 0)]
      if failed or time.monotonic() > deadline:
        logs = {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in procs}
        pytest.fail(f"{'failed: ' + ', '.join(failed) if failed else 'timed out'}; logs: {logs}")
      time.sleep(0.2)
  finally:
    for p, log in procs.values():
      if p.poll() is None:
        p.kill()
        p.wait()
      log.close()
  for name, (p, _) in procs.items():
    assert p.returncode == 0, (tmp_path / f"{name}.log").read_text()[-3000:]


def _exported(workdir):
  return jax.tree.map(np.asarray, ocp.StandardCheckpointer().restore(str(workdir / "model")))


def test_two_processes_match_one_process_with_four_devices(tmp_path):
  (tmp_path / "config.py").write_text(CONFIG)
  (tmp_path / "child.py").write_text(CHILD)
  address = f"--config.distributed.coordinator_address=127.0.0.1:{_free_port()}"
  procs = {"single": _launch(tmp_path, "single", "single", 4)}
  for i in range(2):  # both processes share the workdir, as on a cluster's shared filesystem
    procs[f"p{i}"] = _launch(tmp_path, f"p{i}", "multi", 2, [address, "--config.distributed.num_processes=2",
                                                             f"--config.distributed.process_id={i}"])
  _run_all(procs, tmp_path)
  # Only process 0 reports (the CLI's result line, once per run).
  assert (tmp_path / "p0.log").read_text().count("test accuracy") == 4
  assert "test accuracy" not in (tmp_path / "p1.log").read_text()

  # The cached run built its entry once (process 0 wrote it) and reused it on resume, in both setups.
  for log in ("single", "p0"):
    text = (tmp_path / f"{log}.log").read_text()
    assert text.count("teacher cache: computing") == 1 and text.count("teacher cache: reusing") == 1, text[-3000:]
  assert len(os.listdir(tmp_path / "multi" / "cached" / "teacher_cache" / "train")) == 1

  for run in ("ce", "kd", "cached"):
    single, multi = tmp_path / "single" / run, tmp_path / "multi" / run
    a, b = _exported(single), _exported(multi)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert diff < 1e-5, f"{run}: max |param difference| {diff:.3g}"
    print(f"{run}: max |param difference| between 2 processes and 1 process: {diff:.3g}")
    # Process 0 alone writes the run's files: one metrics record per evaluation, one TensorBoard file.
    results = json.loads((multi / "results.json").read_text())
    assert results["processes"] == 2 and results["devices"] == 4 and results["steps"] == (6 if run == "cached" else 4)
    assert len((multi / "metrics.jsonl").read_text().splitlines()) == \
        len((single / "metrics.jsonl").read_text().splitlines())
    assert len(os.listdir(multi / "tb")) == len(os.listdir(single / "tb")) == (2 if run == "cached" else 1)  # per invocation
    assert (multi / "model.json").is_file() and (multi / "config.json").is_file()


def test_settings_default_to_single_process():
  assert distributed.resolve(small_config(), env={}) is None
  assert distributed.initialize(small_config(), env={}) is False  # no-op: nothing asked for


def test_half_specified_settings_name_what_is_missing():
  with pytest.raises(KDJaxError, match="half-specified: coordinator_address, num_processes missing"):
    distributed.resolve(small_config(**{"distributed.process_id": 1}), env={})
  with pytest.raises(KDJaxError, match=r"process_id=2 must be in \[0, num_processes=2\)"):
    distributed.resolve(small_config(**{"distributed.num_processes": 2, "distributed.process_id": 2}), env={})
  with pytest.raises(KDJaxError, match="must be 'host:port'"):
    distributed.resolve(small_config(**{"distributed.coordinator_address": "10.0.0.1"}), env={})
  with pytest.raises(KDJaxError, match="local_device_ids is set but no multi-process run"):
    distributed.resolve(small_config(**{"distributed.local_device_ids": (0,)}), env={})
  with pytest.raises(KDJaxError, match="KD_JAX_NUM_PROCESSES='two' must be an integer"):
    distributed.resolve(small_config(), env={"KD_JAX_NUM_PROCESSES": "two"})


def test_environment_fills_what_the_config_leaves_unset():
  env = {"KD_JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "KD_JAX_NUM_PROCESSES": "4", "KD_JAX_PROCESS_ID": "3"}
  s = distributed.resolve(small_config(**{"distributed.process_id": 0}), env=env)
  assert (s.coordinator_address, s.num_processes, s.process_id, s.auto_detect) == ("10.0.0.1:1234", 4, 0, False)
  auto = distributed.resolve(small_config(**{"distributed.auto_detect": True}), env={})
  assert auto.auto_detect and auto.num_processes is None and auto.process_id is None


def test_initialize_after_jax_started_says_so():
  jax.devices()  # the backend of this test process is up
  config = small_config(**{"distributed.coordinator_address": "127.0.0.1:1", "distributed.num_processes": 2,
                           "distributed.process_id": 0})
  with pytest.raises(KDJaxError, match="must be initialised before anything uses JAX"):
    distributed.initialize(config, env={})
  assert not jax.distributed.is_initialized()


def test_one_process_feeds_every_row_and_batch_sizes_must_divide():
  mesh = sharding.make_mesh()
  assert sharding.process_rows(32, mesh) == slice(0, 32)
  batch = sharding.shard_batch({"x": np.arange(32.0)}, mesh)
  np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(32.0))
  with pytest.raises(KDJaxError, match="batch_size=12 is not divisible by the 8 devices"):
    sharding.process_rows(12, mesh)
  with pytest.raises(KDJaxError, match="feeds rows \\[0, 32\\)"):
    sharding.shard_batch({"x": np.zeros(16)}, mesh, global_batch_size=32)
