"""Resuming a run directory: unreadable checkpoints set aside, a changed config refused, what a resume says
and logs, and progress output in a log file."""

import dataclasses
import glob
import io
import json
import os
import struct

import chex
import numpy as np
import pytest

from kd_jax import cli
from kd_jax import data as kd_data
from kd_jax import models
from kd_jax.errors import KDJaxError
from kd_jax.train import checkpoint as ckpt
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train.writers import Progress

from helpers import small_config


@pytest.fixture(scope="module")
def small_digits(digits):
  """352 training images: 11 steps of 32 per epoch."""
  return dataclasses.replace(digits, train=dataclasses.replace(
      digits.train, images=digits.train.images[:352], labels=digits.train.labels[:352]))


def _config(**overrides):
  return small_config(**{"log_every_steps": 11, "epochs": 10, **overrides})


def _exported(workdir, dataset):
  return ckpt.load_exported_model(workdir, models.create_model("cnn_tiny", 10), dataset.train.get(np.arange(1))["image"])


def test_a_truncated_newest_checkpoint_is_set_aside_and_the_run_finishes_as_uninterrupted(tmp_path, small_digits,
                                                                                        caplog):
  straight, run = str(tmp_path / "straight"), str(tmp_path / "run")
  train_and_evaluate(_config(max_steps=44), straight, dataset=small_digits)
  train_and_evaluate(_config(max_steps=22), run, dataset=small_digits)  # checkpoints at steps 11 and 22
  record = os.path.join(run, "checkpoints", "22", "meta", "metadata")
  with open(record, "r+b") as f:
    f.truncate(100)
  # The same command with two more epochs: falls back to step 11, trains on, and reaches step 22 again.
  result = train_and_evaluate(_config(max_steps=44), run, dataset=small_digits)
  assert result["steps"] == 44 and "unreadable" in caplog.text
  assert os.path.isfile(os.path.join(run, "unreadable_checkpoints", "22", "meta", "metadata"))
  assert 22 in ckpt.checkpoint_manager(run, 3).all_steps()
  chex.assert_trees_all_equal(_exported(run, small_digits), _exported(straight, small_digits))


def test_a_changed_config_is_refused_with_the_differences_and_nothing_is_rewritten(tmp_path, small_digits):
  run = str(tmp_path / "run")
  train_and_evaluate(_config(max_steps=11), run, dataset=small_digits)
  before = {name: open(os.path.join(run, name)).read() for name in ("config.json", "results.json")}
  with pytest.raises(KDJaxError, match=r"different config \(optim\.lr: 0\.05 -> 0\.2\).*--allow-config-change"):
    train_and_evaluate(_config(max_steps=11, **{"optim.lr": 0.2}), run, dataset=small_digits)
  with pytest.raises(KDJaxError, match=r"student\.model: 'cnn_tiny' -> 'cnn_small'"):
    train_and_evaluate(_config(max_steps=11, **{"student.model": "cnn_small"}), run, dataset=small_digits)
  assert before == {name: open(os.path.join(run, name)).read() for name in before}
  assert not os.path.exists(os.path.join(run, "config_changes.jsonl"))

  # Bookkeeping and a longer run may differ; the change is recorded.
  result = train_and_evaluate(_config(max_steps=22, log_every_steps=5), run, dataset=small_digits)
  assert result["steps"] == 22
  changes = [json.loads(line) for line in open(os.path.join(run, "config_changes.jsonl"))]
  assert {(c["key"], c["old"], c["new"], c["step"]) for c in changes} == {
      ("max_steps", 11, 22, 11), ("log_every_steps", 11, 5, 11)}
  assert json.load(open(os.path.join(run, "config.json")))["max_steps"] == 22

  # On purpose: allowed, recorded, and config.json says what the run now trains with.
  train_and_evaluate(_config(max_steps=33, log_every_steps=5, **{"optim.lr": 0.2}), run, dataset=small_digits,
                     allow_config_change=True)
  changes = [json.loads(line) for line in open(os.path.join(run, "config_changes.jsonl"))]
  assert {"key": "optim.lr", "old": 0.05, "new": 0.2, "step": 22}.items() <= changes[-1].items()
  assert json.load(open(os.path.join(run, "config.json")))["optim"]["lr"] == 0.2


def test_the_cli_refuses_a_changed_config_with_exit_2_unless_allowed(tmp_path, capsys):
  config = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments", "digits_teacher.py")
  common = ["train", "--config", config, "--workdir", str(tmp_path / "run"), "--config.student.model=cnn_tiny",
            "--config.max_steps=2", "--config.progress_bar=False", "--config.batch_size=32"]
  assert cli.main(common) == 0
  assert cli.main(common + ["--config.optim.lr=0.2"]) == 2
  assert "optim.lr" in capsys.readouterr().err
  assert cli.main(common + ["--config.optim.lr=0.2", "--allow-config-change"]) == 0


def test_a_resume_says_where_it_resumed_from(tmp_path, small_digits, capsys):
  run = str(tmp_path / "run")
  train_and_evaluate(_config(max_steps=11), run, dataset=small_digits)
  assert "resuming" not in capsys.readouterr().out
  train_and_evaluate(_config(max_steps=13), run, dataset=small_digits)
  assert "from step 11 (epoch 1, phase 'main') of 13" in capsys.readouterr().out
  train_and_evaluate(_config(max_steps=15), run, dataset=small_digits)
  out = capsys.readouterr().out
  assert f"resuming {os.path.join(run, 'checkpoints')} from step 13 (epoch 2, phase 'main') of 15" in out


def _events(workdir):
  """The TensorBoard files' records in order: ('scalar', step, tag) and ('purge', step, None) for a session
  start (what `purge_step` writes)."""
  from tensorboardX.proto import event_pb2
  records = []
  for path in sorted(glob.glob(os.path.join(workdir, "tb", "events.*"))):
    data = open(path, "rb").read()
    offset = 0
    while offset < len(data):  # TFRecord: length (8), its CRC (4), the Event, its CRC (4)
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      if event.HasField("session_log") and event.session_log.status == event.session_log.START:
        records.append(("purge", event.step, None))
      records += [("scalar", event.step, value.tag) for value in event.summary.value]
  return records


def _tensorboard_view(records):
  """What TensorBoard shows: a session start at step s hides every earlier scalar at a step >= s."""
  shown = []
  for kind, step, tag in records:
    if kind == "purge":
      shown = [(s, t) for s, t in shown if s < step]
    else:
      shown.append((step, tag))
  return shown


def test_log_entries_after_the_resumed_checkpoint_are_dropped(tmp_path, small_digits):
  run = str(tmp_path / "run")
  # Epochs are logged every epoch, checkpointed every second: a crash after epoch 3's log loses its steps.
  config = _config(max_steps=33, checkpoint_every_epochs=2)
  train_and_evaluate(config, run, dataset=small_digits)
  assert [json.loads(l)["step"] for l in open(os.path.join(run, "metrics.jsonl"))] == [11, 22, 33]
  manager = ckpt.checkpoint_manager(run, 3)
  assert manager.all_steps() == [22, 33]
  manager.delete(33)  # as if killed after logging epoch 3 and before its checkpoint
  train_and_evaluate(config, run, dataset=small_digits)
  lines = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
  assert [l["step"] for l in lines] == [11, 22, 33]
  shown = [step for step, tag in _tensorboard_view(_events(run)) if tag == "val/accuracy"]
  assert shown == [11, 22, 33]
  assert [step for _, step, tag in _events(run) if tag == "val/accuracy"] == [11, 22, 33, 33]  # written twice


def test_progress_is_one_plain_line_per_interval_when_output_is_not_a_terminal(tmp_path, small_digits, capsys):
  stream = io.StringIO()
  progress = Progress("run", 22, 0, 11, interactive=False, stream=stream)
  progress.update(11, {"loss": 1.5, "accuracy": 0.25})
  progress.update(11, {"loss": 1.0, "accuracy": 0.5})
  lines = stream.getvalue().splitlines()
  assert [l.split(" (")[0] for l in lines] == ["[run] step 11/22 epoch 1 loss 1.5 accuracy 0.25",
                                               "[run] step 22/22 epoch 2 loss 1 accuracy 0.5"]
  train_and_evaluate(_config(max_steps=11, progress_bar=True, log_every_steps=4), str(tmp_path / "run"),
                     dataset=small_digits)
  out = capsys.readouterr()
  assert "\r" not in out.out + out.err
  assert [l.split(" loss")[0] for l in out.out.splitlines() if l.startswith("[run]")] == [
      "[run] step 4/11 epoch 1", "[run] step 8/11 epoch 1", "[run] step 11/11 epoch 1"]
