"""Distillers: losses bound to model outputs, their trainable parts, and the name registry.

Adding a distiller: write its class in the module of its family and add one line to `DISTILLERS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from kd_jax.distillers.augmented import HEDA
from kd_jax.distillers.contrastive import CRD, CRDEmbed
from kd_jax.distillers.base import (Context, Distiller, Forward, TrainingData, WeightedSum, class_rows, label_rows,
                                    require_fraction, require_positive, split_state)
from kd_jax.distillers.feed import FEED, FEEDTranslator, FEEDTranslators
from kd_jax.distillers.feature import (AB, AT, CC, FSP, FT, NST, PKT, SP, ABConnector, CorrelationEmbed, FitNet,
                                       Paraphraser, Regressor)
from kd_jax.distillers.logit import (DGKD, DIST, DKD, KD, CrossEntropy, EnergyKD, EnsembleKD, LogitStandardizedKD,
                                     Supervised)
from kd_jax.distillers.logit import NKD, TTM, WTTM
from kd_jax.distillers.logit import CTKD, MLKD, EnergyDKD
from kd_jax.distillers.recommender import (BD, CD, DE, DUET, RD, RRD, TD, DistillationExperts, FactorL2,
                                          Interaction)
from kd_jax.distillers.regression import PseudoLabel
from kd_jax.distillers.relation import RKD, VID, AreaRKD, VIDRegressor, VIDStage
from kd_jax.distillers.review import ABF, ReviewFusion, ReviewKD
from kd_jax.distillers.segmentation import CWD, PixelKD
from kd_jax.distillers.similarity import CSKD, R2KD
from kd_jax.distillers.super_resolution import FAKD, LSFD, LocalRegressor, OutputL1
from kd_jax.errors import KDJaxError

DISTILLERS: dict[str, type[Distiller]] = {
    "ce": CrossEntropy,
    "supervised": Supervised,
    "kd": KD,
    "fitnet": FitNet,
    "at": AT,
    "sp": SP,
    "cc": CC,
    "pkt": PKT,
    "nst": NST,
    "fsp": FSP,
    "dkd": DKD,
    "dist": DIST,
    "ls_kd": LogitStandardizedKD,
    "energy_kd": EnergyKD,
    "ensemble_kd": EnsembleKD,
    "dgkd": DGKD,
    "nkd": NKD,
    "ttm": TTM,
    "wttm": WTTM,
    "mlkd": MLKD,
    "ctkd": CTKD,
    "energy_dkd": EnergyDKD,
    "cskd": CSKD,
    "r2kd": R2KD,
    "he_da": HEDA,
    "rkd": RKD,
    "area_rkd": AreaRKD,
    "vid": VID,
    "ab": AB,
    "ft": FT,
    "crd": CRD,
    "review_kd": ReviewKD,
    "feed": FEED,
    "sr_output": OutputL1,
    "fakd": FAKD,
    "lsfd": LSFD,
    "pseudo_label": PseudoLabel,
    "rd": RD,
    "cd": CD,
    "de": DE,
    "rrd": RRD,
    "td": TD,
    "bd": BD,
    "duet": DUET,
    "interaction": Interaction,
    "factor_l2": FactorL2,
    "pixel_kd": PixelKD,
    "cwd": CWD,
}


def distiller_names() -> list[str]:
  return sorted(DISTILLERS)


def make_distiller(name: str, **kwargs: Any) -> Distiller:
  """Builds a registered distiller; unknown names or hyper-parameters raise `KDJaxError` listing valid ones."""
  if name not in DISTILLERS:
    raise KDJaxError(f"Unknown distiller {name!r}. Registered distillers: {', '.join(distiller_names())}.")
  cls = DISTILLERS[name]
  valid = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise KDJaxError(f"Distiller {name!r} has no hyper-parameter(s) {', '.join(unknown)}. "
                     f"Valid: {', '.join(valid) or '(none)'}.")
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as e:
    raise KDJaxError(f"Distiller {name!r}: {e}") from e


def describe(loss_config: Mapping[str, Mapping[str, Any]]) -> str:
  """A config's `loss` section as text for tables and logs: `0.1·ce + 0.9·kd(temperature=4.0)`."""
  parts = []
  for term, spec in loss_config.items():
    extra = ", ".join(f"{k}={v}" for k, v in spec.items() if k not in ("weight", "distiller"))
    parts.append(f"{spec['weight']:g}·{term}" + (f"({extra})" if extra else ""))
  return " + ".join(parts)


def from_config(loss_config: Mapping[str, Mapping[str, Any]]) -> WeightedSum:
  """Builds the weighted sum described by a config's `loss` section.

  Each entry is `term_name: {weight: w, distiller: registry name (defaults to term_name), teacher: which
  teacher(s) it reads (optional: an index, or a tuple of indices, into config.teacher.workdir followed by
  config.teacher.extra_workdirs; default all), **hparams}`, e.g.
  `{'ce': {'weight': 0.1}, 'kd': {'weight': 0.9, 'temperature': 4.0}}`.
  """
  if not loss_config:
    raise KDJaxError("config.loss is empty: give at least one term, e.g. "
                     "config.loss = {'ce': {'weight': 1.0}}. Registered distillers: "
                     f"{', '.join(distiller_names())}.")
  terms, picks = [], []
  for term, spec in loss_config.items():
    spec = dict(spec)
    if "weight" not in spec:
      raise KDJaxError(f"config.loss.{term} needs a 'weight'.")
    weight = float(spec.pop("weight"))
    name = spec.pop("distiller", term)
    if "teacher" in spec:
      picks.append((term, _teacher_pick(term, spec.pop("teacher"))))
    terms.append((term, weight, make_distiller(name, **spec)))
  return WeightedSum(tuple(terms), tuple(picks))


def _teacher_pick(term: str, pick: Any):
  """A term's `teacher` value checked: an index >= 0 or a non-empty tuple of distinct ones."""
  index = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
  if index(pick):
    return int(pick)
  if isinstance(pick, (list, tuple)) and pick and all(index(v) for v in pick) and len(set(pick)) == len(pick):
    return tuple(int(v) for v in pick)
  raise KDJaxError(f"config.loss.{term}.teacher must be a teacher index (0 = config.teacher.workdir, 1, 2, ... = "
                   f"config.teacher.extra_workdirs in order) or a tuple of distinct indices; got {pick!r}.")


__all__ = ["AB", "ABConnector", "FT", "Paraphraser", "AT", "CC", "CSKD", "DGKD", "DIST", "DISTILLERS", "DKD", "KD", "R2KD", "Context", "CrossEntropy", "Distiller",
           "EnergyKD", "CorrelationEmbed", "EnsembleKD", "FSP", "FitNet", "HEDA", "Forward", "LogitStandardizedKD",
           "NST", "PKT", "Regressor", "SP", "TrainingData", "WeightedSum", "describe", "distiller_names", "from_config", "make_distiller",
           "require_fraction", "require_positive", "split_state", "class_rows", "label_rows", "Supervised", "AreaRKD", "RKD", "VID", "VIDRegressor", "VIDStage",
           "ABF", "FEED", "FEEDTranslator", "FEEDTranslators", "ReviewFusion", "ReviewKD", "CRD", "CRDEmbed",
           "FAKD", "LSFD", "LocalRegressor", "OutputL1", "PseudoLabel"]
__all__ += ["NKD", "TTM", "WTTM"]
__all__ += ["BD", "CD", "DE", "DUET", "DistillationExperts", "FactorL2", "Interaction", "RD", "RRD", "TD"]
__all__ += ["CWD", "PixelKD"]
__all__ += ["CTKD", "MLKD", "EnergyDKD"]
