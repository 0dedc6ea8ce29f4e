"""The configs of the explicit-feedback recommender distillation experiments (METHODS.md item 15b), shared by the
`rec_*.py` experiment files and `rec_study.py` (experiment files import it from their folder; the library never
does).

Data: `synthetic_ratings` (kd_jax/data/ratings.py: 600 users × 400 items, rank-8 preferences, ratings 1–5,
missing not at random, ~5% observed; a fixed 10% test split, validation 10% of the rest from the seed).
Models: teacher `mf_large` (biased MF, 100 factors), student `mf_small` (10 factors). Every run: Adam at 0.03
with a cosine schedule, batch 256, 40 epochs (37 steps each), the squared error on the ratings (`supervised`)
plus the factors' per-rating L2 (`factor_l2`, λ = 0.1) instead of weight decay. These settings are ours, chosen
on the validation split of seed 0 to take seconds per run on 2 CPU cores [assume].

Methods (`METHODS`), each the student's loss plus one term (weights ours [assume]; the losses use 'mean'
reductions where the references sum over the batch, so that a weight does not depend on the batch size):
  * 'teacher': mf_large, supervised + factor_l2.
  * 'preference_teacher': DUET's first teacher, mf_large trained on "rated or not" (`interaction`, 4 sampled
    negatives per rating) + factor_l2 (λ = 0.01).
  * 'student': mf_small alone.
  * 'rd': + 0.5 · RD (the teacher's top-10 unrated items, λ = 1, squared error to its predicted ratings).
  * 'rd_hybrid': 'rd' with the reference's hybrid weight (μ = 0.1, the student's rank estimated from 100 unrated
    items, from epoch 12 on: the reference's `dynamic_start_epoch` = 10).
  * 'cd': + 0.5 · CD, teacher-guided (10 items drawn by the teacher's rank among its 100 best unrated, λ = 10).
  * 'cd_student': 'cd' student-guided: the ranks are the student's current ranking of the user's unrated items.
  * 'de_rrd': + 0.1 · DE (10 experts, the reference's 30 tripled the step time here; temperature annealed
    1 → 1e-10 over the run) + 0.01 · RRD (10 of the teacher's top 50 unrated, T = 10, 40 uniform uninteresting
    items).
  * 'td': + 1.0 · TD (full topology among the batch's users and items).
  * 'td_hier': + 1.0 · TD hierarchical (HTD: 10 preference groups per entity type, the reference's 30 scaled to
    a batch of 256 ratings; α = 0.5; the group-prototype-to-entity form the reference's guide runs; the Gumbel
    temperature annealed 1 → 1e-10 over the run).
  * 'bd': config.scheme='mutual': the student and an mf_large peer trained together from scratch, each with
    supervised + factor_l2 + 0.5 · BD (50 uniform unrated candidates; teacher → student 10 samples by tanh,
    ε = 10; student → teacher 10 samples by exp, ε = 2, BD's defaults). Runs under the mutual scheme are not
    prepared, so BD's candidates there include rated items (`kd_jax.distillers.recommender`).
  * 'duet': + 0.5 · DUET (teacher 0 = 'teacher' rates, teacher 1 = 'preference_teacher' picks each user's 10
    best unrated items).
"""

from __future__ import annotations

import ml_collections

from kd_jax.config import base_config

TEACHER, STUDENT = "mf_large", "mf_small"
EPOCHS = 40
L2 = 0.1
METHODS = ("teacher", "preference_teacher", "student", "rd", "rd_hybrid", "cd", "cd_student", "de_rrd", "td",
           "td_hier", "bd", "duet")
# The runs each method reads: its config's teacher.workdir (and extra_workdirs).
NEEDS = {"rd": ("teacher",), "rd_hybrid": ("teacher",), "cd": ("teacher",), "cd_student": ("teacher",),
         "de_rrd": ("teacher",), "td": ("teacher",), "td_hier": ("teacher",),
         "duet": ("teacher", "preference_teacher")}
# Bumped when the library's behaviour for a method changes under an unchanged config, so that rec_study retrains
# its finished runs instead of reusing them (absent: 1). 'de_rrd' 2: RRD's uninteresting items are drawn without
# replacement among unrated items. 'bd' 2: per-direction sampling (exp for student → teacher). 'bd' 3 and
# 'preference_teacher' 2: runs without a frozen teacher prepare their terms, so their draws skip rated items.
REVISIONS = {"de_rrd": 2, "bd": 3, "preference_teacher": 2}

TERMS = {
    "rd": {"rd": {"weight": 0.5, "k": 10, "lam": 1.0}},
    "rd_hybrid": {"rd": {"weight": 0.5, "k": 10, "lam": 1.0, "mu": 0.1, "num_dynamic_samples": 100,
                         "dynamic_start_epoch": 10}},
    "cd": {"cd": {"weight": 0.5, "num_samples": 10, "lam": 10.0, "candidates": 100}},
    "cd_student": {"cd": {"weight": 0.5, "num_samples": 10, "lam": 10.0, "candidates": 100,
                          "mode": "student_guided"}},
    "de_rrd": {"de": {"weight": 0.1, "num_experts": 10, "anneal_epochs": EPOCHS, "reduction": "mean"},
               "rrd": {"weight": 0.01, "num_interesting": 10, "candidates": 50, "temperature": 10.0,
                       "num_uninteresting": 40, "reduction": "mean"}},
    "td": {"td": {"weight": 1.0, "reduction": "mean"}},
    "td_hier": {"td": {"weight": 1.0, "reduction": "mean", "form": "hierarchical", "num_groups": 10, "alpha": 0.5,
                       "anneal_epochs": EPOCHS}},
    "bd": {"bd": {"weight": 0.5, "num_candidates": 50, "num_samples": 10, "epsilon": 10.0}},
    "duet": {"duet": {"weight": 0.5, "k": 10, "teacher": (0, 1)}},
}


def rec_base_config(seed: int = 0) -> ml_collections.ConfigDict:
  """What every run shares: the data, the optimizer, the schedule, the student and its supervised loss."""
  c = base_config()
  c.seed = seed
  c.task = "rating"
  c.data.name = "synthetic_ratings"
  c.student.model = STUDENT
  c.loss = ml_collections.ConfigDict({"supervised": {"weight": 1.0}, "factor_l2": {"weight": L2}})
  c.optim.name = "adamw"
  c.optim.lr = 0.03
  c.optim.weight_decay = 0.0
  c.optim.schedule = "cosine"
  c.batch_size = 256
  c.eval_batch_size = 1024
  c.epochs = EPOCHS
  c.log_every_steps = 200
  c.checkpoint_every_epochs = EPOCHS // 4
  c.keep_checkpoints = 1
  return c


def rec_config(method: str = "student", seed: int = 0, teacher_workdir: str = "",
               preference_workdir: str = "") -> ml_collections.ConfigDict:
  """The config of `method` (see `METHODS`); `teacher_workdir` / `preference_workdir` are the finished
  'teacher' / 'preference_teacher' runs of the same seed (the methods of `NEEDS` read them)."""
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  c = rec_base_config(seed)
  if method == "teacher":
    c.student.model = TEACHER
  elif method == "preference_teacher":
    c.student.model = TEACHER
    c.loss = ml_collections.ConfigDict({"interaction": {"weight": 1.0, "num_negatives": 4},
                                        "factor_l2": {"weight": 0.01}})
  elif method == "bd":
    c.scheme = "mutual"
    c.peers = ({"model": TEACHER},)
    c.loss.update(TERMS["bd"])
  elif method != "student":
    c.loss.update(TERMS[method])
    c.teacher.workdir = teacher_workdir
    if method == "duet":
      c.teacher.extra_workdirs = (preference_workdir,) if preference_workdir else ()
  return c
