"""The CIFAR experiment configs carry their references' per-pair values, and `file.py:argument` selects one."""

import glob
import inspect
import os

import pytest

from kd_jax.config import load_config_file, load_python_file
from kd_jax.errors import KDJaxError

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(EXPERIMENTS, "*.py")) if "def get_config" in open(p).read())


def _config(name: str):
  return load_config_file(os.path.join(EXPERIMENTS, name))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_experiment_config_loads_and_validates_with_each_argument_it_names(path):
  load_config_file(path)
  get_config = load_python_file(path, "get_config")
  if inspect.signature(get_config).parameters:
    module_pairs = load_python_file(path, "REFERENCE_PAIRS") if "REFERENCE_PAIRS" in open(path).read() else ()
    for pair in module_pairs:
      load_config_file(f"{path}:{pair}")


def test_students_that_every_reference_trains_at_lr_0_01():
  for pair, student, lr in (("res32x4_shuv2", "shufflenetv2", 0.01), ("res32x4_shuv1", "shufflenetv1", 0.01),
                            ("vgg13_mv2", "mobilenetv2_half", 0.01), ("vgg13_vgg8", "vgg8", 0.05),
                            ("res32x4_res8x4", "resnet8x4", 0.05)):
    c = _config(f"cifar100_kd.py:{pair}")
    assert (c.student.model, c.optim.lr) == (student, lr)
  assert _config("cifar100_dot.py:res32x4_shuv2").optim.lr == 0.01


def test_energy_kd_and_he_da_per_pair_energy_rates():
  c = _config("cifar100_energy_kd.py")  # resnet56 -> resnet20: LOW_RATE = HIGH_RATE = 0.3
  assert (c.teacher.model, c.student.model, c.epochs) == ("resnet56", "resnet20", 360)
  assert (c.loss.energy_kd.low_fraction, c.loss.energy_kd.high_fraction) == (0.3, 0.3)
  assert (c.loss.energy_kd.low_energy_temperature, c.loss.energy_kd.high_energy_temperature) == (2.0, 6.0)
  other = _config("cifar100_energy_kd.py:vgg13_mv2")
  assert (other.loss.energy_kd.low_fraction, other.loss.energy_kd.high_fraction, other.optim.lr) == (0.2, 0.2, 0.01)
  he_da = _config("cifar100_he_da.py")
  assert (he_da.loss.he_da.high_fraction, he_da.loss.he_da.low_fraction, he_da.epochs) == (0.4, 0.0, 240)
  assert _config("cifar100_he_da.py:res32x4_res8x4").loss.he_da.high_fraction == 0.5
  assert _config("cifar100_energy_dkd.py").loss.energy_dkd.beta == 6.0


def test_ft_runs_six_paraphraser_and_164_student_epochs_and_ab_the_repdistiller_initialisation():
  ft = _config("cifar10_ft.py")
  paraphraser, main = ft.phases
  assert (paraphraser["epochs"], ft.epochs, tuple(ft.optim.milestones)) == (6, 164, (82, 123))
  assert (ft.data.name, ft.teacher.model, ft.student.model, ft.batch_size) == ("cifar10", "resnet56", "resnet20", 128)
  assert ft.loss.ft.weight == 500.0 and "form" not in ft.loss.ft  # the official form is the default
  teacher = _config("cifar10_ft.py:teacher")
  assert (teacher.student.model, teacher.loss.to_dict(), tuple(teacher.phases)) == ("resnet56", {"ce": {"weight": 1.0}}, ())
  ab = _config("cifar100_ab.py")
  init, main = ab.phases
  assert (init["epochs"], init["optim"]["lr"], init["optim"]["nesterov"], init["teacher_batch_statistics"]) == (
      30, 0.05, False, False)
  assert ab.loss.to_dict() == {"ce": {"weight": 1.0}} and main["trainable"] == ("student",)
  assert _config("cifar100_ab.py:vgg13_mv2").phases[0]["optim"]["lr"] == 0.01


def test_an_argument_selects_a_setting_and_a_wrong_one_is_refused():
  with pytest.raises(KDJaxError, match="choose one of"):
    _config("cifar100_kd.py:res32x4_res9x4")
  with pytest.raises(KDJaxError, match="takes none"):
    _config("digits_kd.py:res32x4_res8x4")
