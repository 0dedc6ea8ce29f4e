"""Stage builders shared by the teacher-assistant pipelines (TAKD, DGKD, Pacemaker KD); not a config itself.

`kd_chain` turns one chain of models, teacher first and student last, into the stages that compare, on the
same teacher and the same assistants' sizes:
  - `teacher`: the first model with cross-entropy;
  - `student_ce`, `student_kd`: the student alone and with plain KD from the teacher;
  - TAKD (Mirzadeh et al., AAAI 2020, arXiv:1902.03393): each model distils from the previous one only,
    `(1−λ)·CE + λ·T²·KL` (`kd`): `ta_<model>` from the teacher, `takd_<model>` from the stage before;
  - DGKD (Son et al., ICCV 2021, arXiv:2009.08825): each model distils from every larger model already
    trained, `(1−λ)·CE + λ·T²·Σ_k KL` (`dgkd`): `dgkd_<model>`, the first assistant being `ta_<model>`
    (with one teacher the two losses are the same, so TAKD and DGKD share it); `sdgkd_student` is the final
    student with stochastic teaching (`drop_num` terms dropped per step, DGKD's reference code form).
`pacemaker_chain` builds Pacemaker KD's stages (Son et al., arXiv:2003.03944).
λ, T and the KL reduction are arguments so that a chain's stages all use the same ones.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import ml_collections

from kd_jax.train.pipeline import Stage


def _with(base: ml_collections.ConfigDict, model: str, loss: Dict) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(base.to_dict())
  config.student.model = model
  config.loss = loss
  return config


def kd_loss(term: str, lam: float, temperature: float, reduction: str, **extra) -> Dict:
  """`(1−λ)·CE + λ·<term>` with the term's T and reduction (`kd` or `dgkd`)."""
  options = {"temperature": temperature, **({"reduction": reduction} if reduction != "batchmean" else {}), **extra}
  loss = {"ce": {"weight": round(1.0 - lam, 10)}, term: {"weight": lam, **options}}
  return loss if lam < 1.0 else {term: loss[term]}


def kd_chain(base: ml_collections.ConfigDict, models: Sequence[str], *, lam: float, temperature: float,
             reduction: str = "batchmean", drop_num: int = 1, methods: Sequence[str] = ("kd", "takd", "dgkd")
             ) -> List[Stage]:
  """The stages of plain KD, TAKD, DGKD and stochastic DGKD on the chain `models` (teacher ... student)."""
  if len(models) < 3:
    raise ValueError(f"a chain needs a teacher, at least one assistant and a student; got {list(models)}")
  teacher, assistants, student = models[0], list(models[1:-1]), models[-1]
  ce = {"ce": {"weight": 1.0}}
  stages = [Stage("teacher", _with(base, teacher, ce)), Stage("student_ce", _with(base, student, ce))]
  if "kd" in methods:
    stages.append(Stage("student_kd", _with(base, student, kd_loss("kd", lam, temperature, reduction)),
                        ("teacher",)))
  first = f"ta_{assistants[0]}"
  stages.append(Stage(first, _with(base, assistants[0], kd_loss("kd", lam, temperature, reduction)), ("teacher",)))
  if "takd" in methods:
    previous = first
    for model in assistants[1:] + [student]:
      name = "takd_student" if model == student else f"takd_{model}"
      stages.append(Stage(name, _with(base, model, kd_loss("kd", lam, temperature, reduction)), (previous,)))
      previous = name
  if "dgkd" in methods:
    guides = ["teacher", first]
    for model in assistants[1:]:
      name = f"dgkd_{model}"
      stages.append(Stage(name, _with(base, model, kd_loss("dgkd", lam, temperature, reduction)), tuple(guides)))
      guides.append(name)
    stages.append(Stage("dgkd_student", _with(base, student, kd_loss("dgkd", lam, temperature, reduction)),
                        tuple(guides)))
    stages.append(Stage("sdgkd_student", _with(base, student, kd_loss("dgkd", lam, temperature, reduction,
                                                                      drop_num=drop_num)), tuple(guides)))
  return stages


def pacemaker_chain(base: ml_collections.ConfigDict, teacher: str, pacemaker: str, student: str, *, lam: float,
                    temperature: float, joint: bool = True) -> List[Stage]:
  """Pacemaker KD: the teacher (N×N filters), the student (1×N) alone and with KD from the teacher, the
  pacemaker (intermediate kernels) with KD from the teacher, then the student learning "from the pacemaker
  and the original teacher step by step": half its epochs with KD from the pacemaker, half from the teacher
  (two phases, each with a fresh optimizer), and with `joint` also the summed form `CE + λ·T²·(KL_P + KL_T)`
  (DGKD's loss over both)."""
  ce = {"ce": {"weight": 1.0}}
  half = max(1, base.epochs // 2)
  from_pacemaker = kd_loss("kd", lam, temperature, "batchmean", teacher=1)
  sequential = _with(base, student, from_pacemaker)
  sequential.phases = (
      {"name": "from_pacemaker", "epochs": half, "loss": from_pacemaker},
      {"name": "from_teacher", "epochs": base.epochs - half,
       "loss": kd_loss("kd", lam, temperature, "batchmean", teacher=0)})
  stages = [Stage("teacher", _with(base, teacher, ce)),
            Stage("student_ce", _with(base, student, ce)),
            Stage("student_kd", _with(base, student, kd_loss("kd", lam, temperature, "batchmean")), ("teacher",)),
            Stage("pacemaker", _with(base, pacemaker, kd_loss("kd", lam, temperature, "batchmean")), ("teacher",)),
            Stage("student_pacemaker", sequential, ("teacher", "pacemaker"))]
  if joint:
    stages.append(Stage("student_pacemaker_joint",
                        _with(base, student, kd_loss("dgkd", lam, temperature, "batchmean")), ("teacher", "pacemaker")))
  return stages
