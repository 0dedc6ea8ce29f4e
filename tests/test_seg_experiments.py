"""The segmentation experiment configs: teacher on EO+SAR, students on EO with the teacher on every channel,
and the study's table on made-up results (the runs themselves are tested in tests/test_segmentation.py)."""

import importlib.util
import os

from kd_jax.config import load_config_file
from kd_jax.distillers import from_config

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


def _config(name):
  return load_config_file(os.path.join(EXPERIMENTS, f"seg_{name}.py"))


def test_the_teacher_sees_every_channel_and_the_students_only_eo():
  teacher = _config("teacher")
  assert teacher.task == "segmentation" and teacher.data.student_channels == ()
  for name, term in (("student", None), ("pixel_kd", "pixel_kd"), ("cwd", "cwd")):
    c = _config(name)
    assert c.data.student_channels == (0, 1, 2) and c.data.teacher_channels == ()
    assert c.student.model == "unet_tiny" and teacher.student.model == "unet_small"
    names = {n for n, _, _ in from_config(c.loss.to_dict()).terms}
    assert names == ({"supervised"} if term is None else {"supervised", term})


def test_the_study_table_reports_mean_std_and_gains():
  spec = importlib.util.spec_from_file_location("seg_study", os.path.join(EXPERIMENTS, "seg_study.py"))
  study = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(study)
  row = lambda miou: {"model": "m", "loss": {"supervised": {"weight": 1.0}}, "test_miou": miou, "test_iou_1": 0.5,
                      "test_pixel_accuracy": 0.9}
  values = lambda i: {"teacher": 0.8, "student": 0.6 + 0.01 * i, "pixel_kd": 0.65 + 0.01 * i,
                      "deeplab_student": 0.7, "deeplab_pixel_kd": 0.69 - 0.02 * i}
  runs = [{name: row(values(i).get(name, 0.6)) for name in study.RUNS} for i in range(2)]
  lines = study.table(runs).splitlines()
  assert lines[3] == "| student, EO only, CE | m | 1·supervised | 60.50 ± 0.71 | 50.00 ± 0.00 | 90.00 ± 0.00 |  |"
  assert lines[4].endswith("| 5.00 ± 0.00 |")
  # The DeepLabv3+ student with KD is compared with the DeepLabv3+ student, not the U-Net one.
  assert lines[-1].endswith("| -2.00 ± 1.41 |")
