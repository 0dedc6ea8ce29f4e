"""Pipelines of runs: teachers from earlier stages, finished stages skipped, an interrupted stage resumed
(after SIGKILL) to the uninterrupted result, and stages whose teacher failed not started."""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import chex
import numpy as np
import pytest

from kd_jax import data as kd_data
from kd_jax import metrics
from kd_jax import models
from kd_jax.errors import KDJaxError
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import pipeline as kd_pipeline
from kd_jax.train.pipeline import Stage, check_stages, run_pipeline

from helpers import small_config

_TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "error_overlap.py")
_spec = importlib.util.spec_from_file_location("error_overlap", _TOOL)
error_overlap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(error_overlap)

KD = {"ce": {"weight": 0.5}, "kd": {"weight": 0.5, "temperature": 4.0}}


def _stage(name, model, teachers=(), loss=None, **overrides):
  return Stage(name, small_config(**{"student.model": model, "loss": loss or ({"ce": {"weight": 1.0}} if not
                                                                              teachers else KD), **overrides}),
               tuple(teachers))


def test_stages_must_be_unique_ordered_and_leave_teacher_dirs_to_the_pipeline():
  with pytest.raises(KDJaxError, match="no stages"):
    check_stages([])
  with pytest.raises(KDJaxError, match="named 'a'"):
    check_stages([_stage("a", "cnn_tiny"), _stage("a", "mlp_tiny")])
  with pytest.raises(KDJaxError, match="comes later"):
    check_stages([_stage("s", "mlp_tiny", ["t"]), _stage("t", "cnn_tiny")])
  with pytest.raises(KDJaxError, match="not a stage"):
    check_stages([_stage("s", "mlp_tiny", ["nobody"])])
  with pytest.raises(KDJaxError, match="leave them empty"):
    check_stages([_stage("t", "cnn_tiny"), _stage("s", "mlp_tiny", ["t"], **{"teacher.workdir": "/elsewhere"})])
  with pytest.raises(KDJaxError, match="Stage 'bad'.*batch_size"):
    check_stages([_stage("bad", "cnn_tiny", batch_size=0)])


def test_a_chain_runs_with_earlier_stages_as_teachers_and_finished_stages_are_skipped(tmp_path, monkeypatch,
                                                                                     capsys):
  stages = [_stage("teacher", "cnn_small"), _stage("assistant", "cnn_tiny", ["teacher"]),
            _stage("student", "mlp_tiny", ["teacher", "assistant"],
                   {"ce": {"weight": 0.5}, "dgkd": {"weight": 0.5, "drop_num": 1}})]
  out = run_pipeline(stages, str(tmp_path))
  assert [r["status"] for r in out["rows"]] == ["done"] * 3 and not out["failed"]
  config = kd_pipeline.stage_config(stages[2], str(tmp_path))
  assert config.teacher.workdir == os.path.join(str(tmp_path), "teacher")
  assert config.teacher.extra_workdirs == (os.path.join(str(tmp_path), "assistant"),)
  lines = out["table"].splitlines()
  assert lines[0].startswith("| stage | model | teachers | loss | val accuracy | test accuracy")
  assert "| student | mlp_tiny | teacher, assistant | 0.5·ce + 0.5·dgkd(drop_num=1) |" in lines[4]
  assert open(tmp_path / "results.md").read().strip() == out["table"]

  # The error-overlap tool reads the finished stages; the student's accuracy is the one its run reported.
  overlap = error_overlap.error_overlap_of_runs(os.path.join(str(tmp_path), "student"),
                                               [config.teacher.workdir, *config.teacher.extra_workdirs])
  np.testing.assert_allclose(overlap["student_accuracy"], out["rows"][2]["test"]["accuracy"], atol=1e-6)
  np.testing.assert_allclose(overlap["others"][0]["test_accuracy"], out["rows"][0]["test"]["accuracy"], atol=1e-6)
  assert error_overlap.main(["--pipeline", str(tmp_path), "--student", "student"]) == 0
  assert "| any of them |" in capsys.readouterr().out

  def no_training(*args, **kwargs):
    raise AssertionError("a finished stage was trained again")

  monkeypatch.setattr(kd_pipeline, "train_and_evaluate", no_training)
  again = run_pipeline(stages, str(tmp_path))
  assert again["table"] == out["table"]
  assert capsys.readouterr().out.count("finished earlier; skipped") == 3
  # A stage whose config now computes something else is not "finished": it goes back to its run, which
  # refuses to mix two configs in one directory.
  changed = stages[:2] + [_stage("student", "mlp_tiny", ["teacher", "assistant"])]
  monkeypatch.undo()
  out = run_pipeline(changed, str(tmp_path))
  assert out["rows"][2]["status"] == "failed" and "different config" in out["failed"]["student"]
  # A teacher stage retrained with another config (its directory deleted): the stages that learnt from the
  # old one are refused, not skipped.
  shutil.rmtree(tmp_path / "teacher")
  retrained = [_stage("teacher", "cnn_small", **{"optim.lr": 0.1})] + stages[1:]
  out = run_pipeline(retrained, str(tmp_path))
  assert [r["status"] for r in out["rows"]] == ["done", "failed", "not started"]
  assert "learnt from 'teacher' as configured before" in out["failed"]["assistant"]


def test_error_overlap_counts_the_students_errors_that_the_others_share():
  student = np.array([1, 1, 1, 1, 0, 0], bool)
  others = np.array([[1, 1, 0, 0, 1, 0],
                     [1, 0, 1, 0, 0, 1]], bool)
  result = metrics.error_overlap(student, others)
  assert result["student_errors"] == 4
  assert result["per_model"] == [0.5, 0.5] and result["any"] == 0.75 and result["all"] == 0.25
  assert np.isnan(metrics.error_overlap(np.zeros(3, bool), np.ones((1, 3), bool))["any"])


def test_stages_that_learn_from_a_failed_stage_are_not_started_and_the_others_run(tmp_path):
  stages = [_stage("teacher", "cnn_tiny", **{"data.name": "no_such_data"}),
            _stage("assistant", "cnn_tiny", ["teacher"]),
            _stage("student", "mlp_tiny", ["assistant"]),
            _stage("baseline", "mlp_tiny")]
  out = run_pipeline(stages, str(tmp_path))
  assert [r["status"] for r in out["rows"]] == ["failed", "not started", "not started", "done"]
  assert "no_such_data" in out["failed"]["teacher"]
  assert out["failed"]["assistant"].startswith("not started: its teacher stage 'teacher' did not finish")
  assert out["failed"]["student"].startswith("not started: its teacher stage 'assistant' did not finish")
  assert not os.path.exists(tmp_path / "assistant")


PIPELINE = textwrap.dedent("""
    from kd_jax.config import base_config
    from kd_jax.train.pipeline import Stage

    def config(model, loss, epochs):
      c = base_config()
      c.student.model = model
      c.batch_size, c.eval_batch_size, c.epochs = 32, 256, epochs
      c.optim.schedule, c.progress_bar, c.log_every_steps = "constant", False, 10
      c.loss = loss
      return c

    def get_pipeline():
      return [Stage("teacher", config("cnn_tiny", {"ce": {"weight": 1.0}}, 1)),
              Stage("student", config("mlp_tiny", {"ce": {"weight": 0.5}, "kd": {"weight": 0.5}}, 30),
                    teachers=("teacher",))]
""")


def _pipeline(config, workdir):
  cmd = [sys.executable, "-m", "kd_jax", "pipeline", "--config", config, "--workdir", workdir]
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_stage_then_the_same_command_gives_the_uninterrupted_table_and_models(tmp_path):
  config = tmp_path / "pipeline.py"
  config.write_text(PIPELINE)
  killed, straight = str(tmp_path / "killed"), str(tmp_path / "straight")
  proc = _pipeline(str(config), killed)
  checkpoints = os.path.join(killed, "student", "checkpoints")
  deadline = time.time() + 300
  while proc.poll() is None and time.time() < deadline and not (
      os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints))):
    time.sleep(0.05)
  assert proc.poll() is None, proc.communicate()[0]  # the student stage is under way, past a checkpoint
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(killed, "results.md"))
  outputs = []
  for workdir in (killed, straight):
    proc = _pipeline(str(config), workdir)
    outputs.append(proc.communicate(timeout=600)[0])
    assert proc.returncode == 0, outputs[-1]
  assert "teacher finished earlier; skipped" in outputs[0] and "resuming" in outputs[0]
  assert open(os.path.join(killed, "results.md")).read() == open(os.path.join(straight, "results.md")).read()
  model = models.create_model("mlp_tiny", 10)
  image = kd_data.load_dataset("digits").train.get(np.arange(1))["image"]
  chex.assert_trees_all_equal(ckpt.load_exported_model(os.path.join(killed, "student"), model, image),
                              ckpt.load_exported_model(os.path.join(straight, "student"), model, image))


def test_the_cli_exits_2_and_names_the_failed_stage(tmp_path):
  config = tmp_path / "pipeline.py"
  config.write_text(PIPELINE.replace('config("cnn_tiny"', 'config("no_such_model"'))
  proc = subprocess.run([sys.executable, "-m", "kd_jax", "pipeline", "--config", str(config), "--workdir",
                         str(tmp_path / "run"), "--config.max_steps=2"], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert "stage 'teacher' failed" in proc.stderr and "no_such_model" in proc.stderr
  assert "stage 'student' not started: its teacher stage 'teacher' did not finish" in proc.stderr
  assert "| teacher | no_such_model | — | 1·ce | — | — | — | failed |" in proc.stdout
