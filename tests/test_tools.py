"""The scripts in tools/ that produce the documented tables: their summaries, on made-up runs."""

import importlib.util
import os

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_study_seeds_summary_mean_and_sample_std():
  tool = _load("study_seeds")
  row = lambda run, acc: {"run": run, "model": "m", "test_accuracy": acc, "val_accuracy": acc, "wall_time_s": 1.0}
  table = tool.summarize({0: [row("kd", 0.97)], 1: [row("kd", 0.98)], 2: [row("kd", 0.99)]})
  assert "| kd | m | 98.00 ± 1.00 |" in table  # sample std (ddof=1) of 97, 98, 99
  assert "97.00, 98.00, 99.00" in table


def test_logit_methods_summary_reports_divergence_and_calibration():
  tool = _load("logit_methods")
  cal = {k: 0.5 for k in ("temperature", "ece_before", "ece_after", "ece_over_before", "ece_under_before",
                          "ace_before", "ace_after", "nll_before", "nll_after")}
  per_seed = {}
  for seed, acc in ((0, 0.9), (1, 0.8)):
    runs = {name: {"model": "t", "test_accuracy": 0.99} for name in ("teacher", "teacher_b")}
    for method in tool.METHODS:
      runs[method] = {"test_accuracy": acc, "loss_text": "1·ce"}
    runs["KD, calibrated teacher"]["teacher_calibration"] = [cal]
    runs["R2KD"] = {"test_accuracy": None if seed == 1 else 0.5, "loss_text": "x"}
    per_seed[seed] = runs
  table = tool.summarize(per_seed)
  assert "| KD | 1·ce | 85.00 ± 7.07 | +0.00 |" in table
  assert "| R2KD | x | diverged (non-finite loss) on seed(s) 1 |" in table
  assert "| 0.500 | 0.5000 | 0.5000 |" in table


def test_feature_methods_summary_compares_each_method_with_ce_of_its_own_student(monkeypatch):
  monkeypatch.syspath_prepend(TOOLS)  # the tool imports its sibling logit_methods
  tool = _load("feature_methods")
  per_seed = {}
  for seed, acc in ((0, 0.90), (1, 0.92)):
    runs = {name: {"model": model, "test_accuracy": 0.99} for name, (model, _) in tool.TEACHERS.items()}
    for method in tool.METHODS:
      student = "mlp_small" if "mlp_small" in method or "RKD" in method else "cnn_small"
      runs[method] = {"test_accuracy": acc, "loss_text": "1·ce", "student": student}
    runs["CE (mlp_small)"]["test_accuracy"] = 0.80
    runs["CRD"]["test_accuracy"] = None if seed == 1 else 0.5
    per_seed[seed] = runs
  table = tool.summarize(per_seed)
  assert "| AT | cnn_small | 1·ce | 91.00 ± 1.41 | +0.00 |" in table
  assert "| RKD | mlp_small | 1·ce | 91.00 ± 1.41 | +11.00 |" in table  # against CE of mlp_small (80.00)
  assert "| CRD | cnn_small | 1·ce | diverged (non-finite loss) on seed(s) 1 |" in table
  assert "| teacher_resnet20 | resnet20 | ce | 99.00 ± 0.00 |" in table
