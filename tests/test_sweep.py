"""Sweeps: every combination of grid values over seeds, shards that together make the whole sweep, finished runs
skipped, a table of mean ± std per cell whose best cell is chosen on validation only, and one PNG per key."""

import json
import os

import numpy as np
import pytest

from kd_jax import cli
from kd_jax.config import base_config, load_config_file
from kd_jax.train import sweep

CONFIG = """
from kd_jax.config import base_config

def get_config():
  c = base_config()
  c.data.name = "digits"
  c.student.model = "mlp_tiny"
  c.batch_size = 32
  c.eval_batch_size = 512
  c.epochs = 1
  c.max_steps = 2
  c.log_every_steps = 2
  c.progress_bar = False
  c.optim.schedule = "constant"
  return c
"""
GRID = ["optim.lr=0.02,0.4", "optim.momentum=0.0,0.9"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _config_file(directory):
  path = os.path.join(str(directory), "sweep_config.py")
  with open(path, "w") as f:
    f.write(CONFIG)
  return path


def _finished_runs(workdir):
  return sorted(os.path.relpath(root, workdir) for root, _, files in os.walk(workdir) if "results.json" in files
                and root != workdir)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """The 2 × 2 grid × 2 seeds made by two shards, one after the other, in one workdir."""
  root = tmp_path_factory.mktemp("sweep")
  config_path, workdir = _config_file(root), str(root / "sweep")
  base = load_config_file(config_path)
  shards = [sweep.run_sweep(base, workdir, GRID, seeds=[0, 1], shard=(i, 2), progress_bar=False) for i in (0, 1)]
  planned = sweep.plan_runs(base, sweep.parse_grid(GRID), [0, 1])
  return {"workdir": workdir, "config": config_path, "shards": shards, "planned": planned}


def _recorded(workdir, cell_path, seeds=(0, 1)):
  out = []
  for seed in seeds:
    with open(os.path.join(workdir, cell_path, f"seed={seed}", "results.json")) as f:
      out.append(json.load(f))
  return out


def test_shards_together_make_every_run_of_the_sweep_once_and_a_rerun_skips_them(swept, capsys):
  planned, (first, second) = swept["planned"], swept["shards"]
  assert [r.path for r in planned][:2] == [os.path.join("optim.lr=0.02", "optim.momentum=0.0", "seed=0"),
                                            os.path.join("optim.lr=0.02", "optim.momentum=0.0", "seed=1")]
  assert first["ran"] == [r.path for r in planned if r.index % 2 == 0]
  assert second["ran"] == [r.path for r in planned if r.index % 2 == 1]
  assert not first["failed"] and not second["failed"] and not first["skipped"] and not second["skipped"]
  assert _finished_runs(swept["workdir"]) == sorted(r.path for r in planned)
  # The first shard's table already counted what had finished then: one seed of every cell.
  assert first["table"].count("| 1/2 |") == 4 and "none is selected" in first["table"]

  stamps = {p: os.path.getmtime(os.path.join(swept["workdir"], p, "results.json"))
            for p in _finished_runs(swept["workdir"])}
  code = cli.main(["sweep", "--config", swept["config"], "--workdir", swept["workdir"], "--seeds", "0,1",
                   "--no-progress"] + [a for g in GRID for a in ("--grid", g)])
  out = capsys.readouterr().out
  assert code == 0
  assert out.count("finished earlier; skipped") == 8
  assert {p: os.path.getmtime(os.path.join(swept["workdir"], p, "results.json")) for p in stamps} == stamps


def test_table_holds_mean_and_std_over_seeds_of_each_cells_runs(swept):
  workdir = swept["workdir"]
  with open(os.path.join(workdir, "results.json")) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, "results.md")) as f:
    table = f.read()
  assert summary["headline"] == "accuracy" and summary["grid"] == {"optim.lr": ["0.02", "0.4"],
                                                                   "optim.momentum": ["0.0", "0.9"]}
  assert len(summary["cells"]) == 4
  for cell in summary["cells"]:
    runs = _recorded(workdir, cell["path"])
    assert cell["n"] == 2 and cell["seeds"] == [0, 1]
    for split in ("val", "test"):
      values = np.array([r[f"{split}_accuracy"] for r in runs])
      assert cell[split]["values"] == pytest.approx(values.tolist())
      assert cell[split]["mean"] == pytest.approx(values.mean())
      assert cell[split]["std"] == pytest.approx(values.std(ddof=1))
      assert f"{100 * values.mean():.2f} ± {100 * values.std(ddof=1):.2f}" in table
  assert table.count("| 2/2 |") == 4
  assert all(status["status"] == "done" for status in summary["runs"])


def test_best_cell_is_the_best_mean_validation_value_never_the_test_value(swept):
  workdir = swept["workdir"]
  with open(os.path.join(workdir, "results.json")) as f:
    summary = json.load(f)
  val = {c["path"]: np.mean([r["val_accuracy"] for r in _recorded(workdir, c["path"])]) for c in summary["cells"]}
  test = {c["path"]: np.mean([r["test_accuracy"] for r in _recorded(workdir, c["path"])]) for c in summary["cells"]}
  by_val = max(val, key=val.get)
  chosen = [c for c in summary["cells"] if c["best"]]
  assert len(chosen) == 1 and chosen[0]["path"] == by_val
  assert summary["best"] == chosen[0]["cell"]
  if max(test, key=test.get) != by_val:  # the recorded numbers disagree: the test winner must not be marked
    assert not next(c for c in summary["cells"] if c["path"] == max(test, key=test.get))["best"]
  with open(os.path.join(workdir, "results.md")) as f:
    starred = [line for line in f if line.rstrip().endswith("★ |")]
  assert len(starred) == 1 and starred[0].startswith("| " + " | ".join(chosen[0]["cell"].values()) + " |")


def _row(val, test, n=2, total=2):
  stats = lambda values: {"mean": float(np.mean(values)) if values else None, "values": values}
  return {"val": stats(val), "test": stats(test), "n": n, "total": total}


def test_selection_reads_validation_only_and_skips_incomplete_cells_and_cells_without_validation():
  rows = [_row([0.5, 0.7], [0.9, 0.9]), _row([0.8, 0.8], [0.1, 0.2]), _row([0.99], [0.99], n=1)]
  assert sweep.select_best(rows, higher_is_better=True) == 1
  assert sweep.select_best(rows, higher_is_better=False) == 0
  assert sweep.select_best([_row([], [0.9, 0.9]), _row([], [0.5, 0.5])], higher_is_better=True) is None


def test_runs_without_a_validation_split_select_nothing_and_a_failed_run_exits_2(tmp_path, capsys):
  workdir = str(tmp_path / "sweep")
  code = cli.main(["sweep", "--config", _config_file(tmp_path), "--workdir", workdir, "--no-progress",
                   "--grid", "data.name=cifar10,digits", "--config.data.val_fraction=0.0",
                   f"--config.data.data_dir={tmp_path / 'no_tfds'}"])
  captured = capsys.readouterr()
  assert code == 2
  assert f"run {os.path.join('data.name=cifar10', 'seed=0')} failed" in captured.err and "not prepared" in captured.err
  with open(os.path.join(workdir, "results.json")) as f:
    summary = json.load(f)
  assert [r["status"] for r in summary["runs"]] == ["failed", "done"]
  assert summary["best"] is None and not any(c["best"] for c in summary["cells"])
  digits = _recorded(workdir, "data.name=digits", (0,))[0]
  assert digits["val_accuracy"] is None
  assert summary["cells"][1]["test"]["mean"] == pytest.approx(digits["test_accuracy"])
  with open(os.path.join(workdir, "results.md")) as f:
    table = f.read()
  assert "no validation split" in table and "★" not in table


def test_one_png_per_swept_key(swept):
  for key in ("optim.lr", "optim.momentum"):
    path = os.path.join(swept["workdir"], f"sweep_{key}.png")
    with open(path, "rb") as f:
      assert f.read(8) == PNG_SIGNATURE
    from PIL import Image
    with Image.open(path) as image:
      image.verify()
      assert image.format == "PNG" and min(image.size) > 100


@pytest.mark.parametrize("args, message", [
    (["--grid", "optim.lrr=0.1,0.2"], "optim.lrr"),
    (["--grid", "optim.schedule=cosine,bogus"], "'bogus'"),
    (["--grid", "data.data_dir=/a/b,/c"], "'/a/b'"),
    (["--grid", "optim.lr=0.1,0.1"], "twice"),
    (["--grid", "optim.lr"], "KEY=V1,V2"),
    (["--grid", "seed=0,1"], "--seeds"),
    (["--grid", "optim.lr=0.1", "--config.optim.lr=0.2"], "both swept"),
    (["--seeds", "0,x"], "--seeds"),
    (["--shard", "2/2"], "--shard"),
])
def test_bad_grid_seeds_or_shard_exit_2_naming_the_problem_before_anything_runs(tmp_path, capsys, args, message):
  workdir = tmp_path / "sweep"
  assert cli.main(["sweep", "--config", _config_file(tmp_path), "--workdir", str(workdir)] + args) == 2
  assert message in capsys.readouterr().err
  assert not workdir.exists()


def test_grid_values_split_outside_brackets_and_name_directories_readably():
  assert sweep.split_values("1, 2,(3, 4),'a,b'") == ["1", "2", "(3, 4)", "'a,b'"]
  grid = sweep.parse_grid(["data.student_channels=(0, 1),(2,)", "student.model='mlp_tiny',cnn_tiny"])
  assert grid == [("data.student_channels", [("(0, 1)", "(0,1)"), ("(2,)", "(2,)")]),
                  ("student.model", [("'mlp_tiny'", "mlp_tiny"), ("cnn_tiny", "cnn_tiny")])]
  runs = sweep.plan_runs(base_config(), grid, [3])
  assert [r.path for r in runs][1] == os.path.join("data.student_channels=(0,1)", "student.model=cnn_tiny", "seed=3")
  assert runs[1].config.data.student_channels == (0, 1) and runs[1].config.seed == 3
  assert [r.index for r in sweep.shard_runs(runs, 1, 3)] == [1]
