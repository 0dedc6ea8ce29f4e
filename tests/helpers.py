"""Shared test helpers (the tests folder is on sys.path under pytest's default import mode)."""

from kd_jax.config import base_config, set_value


def small_config(**overrides):
  """A few steps of cnn_tiny on digits; `overrides` are dotted keys, e.g. `**{"teacher.workdir": d}`."""
  c = base_config()
  c.data.name = "digits"
  c.student.model = "cnn_tiny"
  c.batch_size = 32
  c.eval_batch_size = 64
  c.epochs = 2
  c.max_steps = 4
  c.log_every_steps = 2
  c.progress_bar = False
  c.optim.schedule = "constant"
  for key, value in overrides.items():
    set_value(c, key, value)
  return c


def train_teacher(tmp_path_factory, dataset, **overrides):
  """A cnn_small teacher trained for a few steps (`small_config` plus `overrides`); returns its workdir."""
  from kd_jax.train.loop import train_and_evaluate
  workdir = str(tmp_path_factory.mktemp("teacher"))
  train_and_evaluate(small_config(**{"student.model": "cnn_small", **overrides}), workdir, dataset=dataset)
  return workdir
