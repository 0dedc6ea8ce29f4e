"""Every SR experiment config trains end to end for a few steps on tiny data (the study's chain: a teacher,
then each method's student from it), and tools/sr_evaluate.py measures a finished run on a folder."""

import glob
import os

import numpy as np
import pytest

from kd_jax.config import load_config_file
from kd_jax.data import super_resolution as sr
from kd_jax.train.loop import train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "experiments", "sr_*.py"))
                        if not p.endswith(("sr_study.py", "sr_teacher.py")) and "div2k" not in p)


@pytest.fixture(scope="module")
def tiny_photos():
  rng = np.random.default_rng(0)
  images = [np.round(rng.random((48, 48, 3)) * 255).astype(np.uint8) for _ in range(4)]
  lr, hr = sr.make_pairs(images, 2)
  return sr.sr_dataset("tiny", lr[:3], hr[:3], lr[3:], hr[3:], scale=2, tile=12, val_fraction=0.2, seed=0)


def _shrunk(config):
  config.batch_size, config.eval_batch_size, config.max_steps, config.epochs = 8, 8, 2, 2
  config.data.tile_size, config.data.patch_size, config.progress_bar = 12, 8, False
  return config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_photos):
  workdir = str(tmp_path_factory.mktemp("sr_teacher"))
  train_and_evaluate(_shrunk(load_config_file(os.path.join(REPO, "experiments", "sr_teacher.py"))), workdir,
                     dataset=tiny_photos)
  return workdir


def test_every_method_has_a_config():
  names = {os.path.basename(p)[3:-3] for p in METHOD_CONFIGS}
  assert names == {"l1", "output", "fitnet", "at", "rkd", "rkd_output", "fakd", "lsfd", "adversarial"}


@pytest.mark.parametrize("path", METHOD_CONFIGS, ids=lambda p: os.path.basename(p))
def test_each_sr_method_trains_from_the_teacher(path, teacher, tiny_photos, tmp_path):
  config = _shrunk(load_config_file(path))
  if config.teacher.model:
    config.teacher.workdir = teacher
  results = train_and_evaluate(config, str(tmp_path / "run"), dataset=tiny_photos)
  assert results["steps"] == 2 and np.isfinite(results["test_psnr"])


def test_div2k_configs_load_and_name_their_data(capsys):
  for name in ("sr_div2k_teacher.py", "sr_div2k_lsfd.py"):
    config = load_config_file(os.path.join(REPO, "experiments", name))
    assert config.data.name == "sr_folders" and config.data.patch_size == 48


def test_sr_evaluate_measures_a_run_on_a_folder(teacher, tmp_path, capsys):
  from PIL import Image
  import sys
  sys.path.insert(0, os.path.join(REPO, "tools"))
  import sr_evaluate
  os.makedirs(tmp_path / "Set5" / "HR")
  rng = np.random.default_rng(1)
  Image.fromarray(np.round(rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(tmp_path / "Set5" / "HR" / "a.png")
  assert sr_evaluate.main(["--workdir", teacher, "--scale", "2", "--benchmarks", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "| Set5 | 1 |" in out
  assert sr_evaluate.main(["--workdir", teacher, "--scale", "2"]) == 2
