"""Shared by the method configs of experiments/cifar100/: the import path, the student recipe, the teacher paths.

The configs here build on experiments/cifar100_teacher.py, cifar100_kd.py and cifar100_pairs.py (one place for
the recipe and the pairs); `python -m kd_jax train --config experiments/cifar100/<method>.py:<pair>` puts only
this folder on the import path while a config runs, so this module adds experiments/ as well.
"""

import os
import sys

import ml_collections

EXPERIMENTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if EXPERIMENTS not in sys.path:
  sys.path.append(EXPERIMENTS)  # appended, so it never shadows an installed module

import cifar100_kd  # noqa: E402  pylint: disable=wrong-import-position
import cifar100_pairs  # noqa: E402  pylint: disable=wrong-import-position

DEFAULT_PAIR = "res32x4_res8x4"


def student_config(pair: str) -> ml_collections.ConfigDict:
  """RepDistiller's student recipe for `pair` (experiments/cifar100_kd.py: SGD 0.05, or 0.01 for
  MobileNetV2/ShuffleNet students, momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, × 0.1 at
  150/180/210) with its loss reset to CE alone."""
  c = cifar100_kd.get_config(pair)
  c.loss = {"ce": {"weight": 1.0}}
  return c


def repdistiller(pair: str, term: str, beta: float, **spec) -> ml_collections.ConfigDict:
  """RepDistiller's `train_student.py --distill X -r 1 -a 0 -b beta`: `1·CE + beta·term`, no KD term."""
  c = student_config(pair)
  c.loss = {"ce": {"weight": 1.0}, term: {"weight": beta, **spec}}
  return c
