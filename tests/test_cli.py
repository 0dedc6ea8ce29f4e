"""The command line: the default study end to end (shrunk), and bad inputs with their messages."""

import os
import subprocess
import sys

import pytest

from kd_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_study_quick_runs_and_writes_table(tmp_path):
  workdir = tmp_path / "study"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  proc = subprocess.run([sys.executable, "-m", "kd_jax", "--quick", "--no-progress", "--workdir", str(workdir)],
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = (workdir / "results.md").read_text()
  assert table in proc.stdout
  rows = [l for l in table.splitlines() if l.startswith("| teacher") or l.startswith("| student")]
  assert [r.split("|")[1].strip() for r in rows] == ["teacher", "student_ce", "student_kd"]
  for run in ("teacher", "student_ce", "student_kd"):
    assert (workdir / run / "checkpoints").is_dir()
    assert (workdir / run / "metrics.jsonl").is_file()
    assert (workdir / run / "model.json").is_file()
  assert f"Run directory: {workdir}" in proc.stdout


def test_sr_study_quick_runs_and_writes_table_and_picture(tmp_path):
  """`python -m kd_jax sr`, shrunk: three runs on the embedded photos, the table with bicubic's row, the picture."""
  workdir = tmp_path / "sr"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run([sys.executable, "-m", "kd_jax", "sr", "--quick", "--no-progress", "--workdir", str(workdir)],
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = (workdir / "results.md").read_text()
  assert table in proc.stdout and "test PSNR (×2)" in table
  assert [l.split("|")[1].strip() for l in table.splitlines()[2:]] == ["bicubic", "teacher", "student_l1", "student_lsfd"]
  from PIL import Image
  with Image.open(workdir / "comparison.png") as picture:
    assert picture.size[0] > 4 * picture.size[1]  # five panels side by side
  assert "bicubic, student_l1, student_lsfd, teacher, ground truth" in (workdir / "comparison.txt").read_text()
  for run in ("teacher", "student_l1", "student_lsfd"):
    assert (workdir / run / "model.json").is_file()


def test_help_lists_commands(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for word in ("study", "sr", "train", "list", "--config.KEY=VALUE"):
    assert word in out


def test_list(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert "resnet8x4" in out and "fitnet" in out and "digits" in out


def _train(tmp_path, *overrides, config="experiments/digits_teacher.py"):
  return cli.main(["train", "--config", os.path.join(REPO, config), "--workdir", str(tmp_path / "run"),
                   *overrides])


@pytest.mark.parametrize("overrides,message", [
    (["--config.optim.lrr=0.1"], "Unknown config key config.optim.lrr. Valid keys of config.optim: dot_delta, gamma, lr"),
    (["--config.nope=1"], "Valid keys of config: batch_size"),
    (["--config.optim.lr=fast"], "optim.lr expects float"),
    (["--config.optim.lr=-1.0"], "optim.lr must be > 0"),
    (["--config.student.model=resnet9"], "Unknown model 'resnet9'"),
    (["--config.loss.extra={'weight': 1.0, 'distiller': 'kdd'}"],
     "Unknown distiller 'kdd'. Registered distillers: "),
    (["--config.loss.ce.temperature=2.0"], "Distiller 'ce' has no hyper-parameter(s) temperature. Valid: "),
    (["--config.batch_size=30"], "not divisible by the 8 devices"),
    (["--config.data.name=cifar100", "--config.data.data_dir=/nonexistent"], "tfds build cifar100"),
    (["--config.data.name=mnist3"], "Unknown dataset"),
])
def test_bad_inputs_exit_nonzero_with_message(tmp_path, capsys, overrides, message):
  assert _train(tmp_path, *overrides) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "run" / "checkpoints").exists() or not os.listdir(tmp_path / "run" / "checkpoints")


def test_kd_without_teacher_and_missing_teacher_export(tmp_path, capsys):
  assert _train(tmp_path, config="experiments/digits_kd.py") == 2
  assert "teacher.workdir is empty" in capsys.readouterr().err
  assert _train(tmp_path, f"--config.teacher.workdir={tmp_path}", config="experiments/digits_kd.py") == 2
  assert "holds no exported model" in capsys.readouterr().err


def test_unwritable_workdir(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  assert cli.main(["train", "--config", os.path.join(REPO, "experiments/digits_teacher.py"),
                   "--workdir", str(blocker / "run")]) == 2
  assert "Cannot create workdir" in capsys.readouterr().err
  assert blocker.read_text() == "not a directory"


def test_missing_config_file(tmp_path, capsys):
  assert cli.main(["train", "--config", str(tmp_path / "none.py"), "--workdir", str(tmp_path)]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_bad_inputs_leave_an_existing_run_untouched(tmp_path, capsys):
  assert _train(tmp_path, "--config.max_steps=2", "--config.progress_bar=False") == 0
  run = tmp_path / "run"

  def snapshot():
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*") if p.is_file()}

  before = snapshot()
  bad = [["--config.optim.lrr=0.1"], ["--config.optim.lr=-1.0"], ["--config.batch_size=30"],
         ["--config.loss.extra={'weight': 1.0, 'distiller': 'kdd'}"],
         ["--config.loss={'kd': {'weight': 1.0, 'temperature': -4.0}}"],
         ["--config.phases=({'name': 'a', 'lr': 0.1},)"], ["--config.steps_per_call=0"]]
  messages = ["Unknown config key", "optim.lr must be > 0", "not divisible", "Unknown distiller",
              "temperature must be > 0", "unknown key(s) lr", "steps_per_call must be an integer >= 1"]
  for overrides, message in zip(bad, messages):
    assert _train(tmp_path, *overrides) == 2, overrides
    assert message in capsys.readouterr().err, overrides
  assert snapshot() == before
