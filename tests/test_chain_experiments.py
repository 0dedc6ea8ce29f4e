"""The teacher-assistant experiment files (TAKD, DGKD, Pacemaker KD): every pipeline file loads and checks, the
digits chain's stage graph is the one TAKD and DGKD describe, the CIFAR files carry their reference recipes, and
a shrunk digits chain runs end to end. No CIFAR data is loaded and no CIFAR model is trained (shapes only)."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from kd_jax import models
from kd_jax.config import load_python_file
from kd_jax.distillers import from_config
from kd_jax.train.phases import resolve_phases
from kd_jax.train.pipeline import load_pipeline_file, run_pipeline

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
PIPELINE_FILES = sorted(p for p in glob.glob(os.path.join(EXPERIMENTS, "*.py")) if "def get_pipeline" in open(p).read())
CIFAR_FILES = ("takd_cifar100", "dgkd_cifar100_plain", "dgkd_cifar100_resnet", "pacemaker_cifar100")


def path_of(name):
  return os.path.join(EXPERIMENTS, name + ".py")


def stages_of(name):
  return {s.name: s for s in load_pipeline_file(path_of(name))}


def value(config, key):
  for part in key.split("."):
    config = config[part]
  return config


def test_the_chain_experiments_are_pipeline_files():
  found = {os.path.basename(p)[:-3] for p in PIPELINE_FILES}
  assert found >= {"digits_chain", "digits_pacemaker", *CIFAR_FILES}


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=os.path.basename)
def test_every_pipeline_file_loads_with_unique_ordered_stages_and_buildable_losses(path):
  stages = load_pipeline_file(path)  # checks names, teacher order and every config (validate)
  names = [s.name for s in stages]
  assert len(set(names)) == len(names)
  for i, stage in enumerate(stages):
    assert set(stage.teachers) <= set(names[:i]), stage.name
    for phase in resolve_phases(stage.config):
      loss = from_config(phase.loss)  # every term is a registered distiller with valid hyper-parameters
      assert any(d.needs_teacher for _, _, d in loss.terms) == bool(stage.teachers), stage.name
      for _, pick in loss.teacher_picks:
        assert max(pick if isinstance(pick, tuple) else (pick,)) < len(stage.teachers), stage.name


def n_params(name, num_classes=10):
  model = models.create_model(name, num_classes=num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False))
  return models.param_count(shapes["params"])


def test_the_digits_chain_is_takd_and_dgkd_on_models_of_decreasing_size():
  chain = load_python_file(path_of("digits_chain"), "CHAIN")
  stages = stages_of("digits_chain")
  model = {n: s.config.student.model for n, s in stages.items()}
  assert model["teacher"] == chain[0] and stages["teacher"].teachers == ()
  assert model["student_kd"] == chain[-1] and stages["student_kd"].teachers == ("teacher",)
  # TAKD: every model learns from the previous model of the chain only.
  takd = ["teacher"] + [n for n in stages if n.startswith(("ta_", "takd_"))]
  assert [model[n] for n in takd] == list(chain)
  for previous, name in zip(takd, takd[1:]):
    assert stages[name].teachers == (previous,) and list(stages[name].config.loss) in (["kd"], ["ce", "kd"])
  # DGKD: every model learns from the teacher and every earlier (larger) assistant, largest first.
  dgkd = ["teacher", f"ta_{chain[1]}"] + [n for n in stages if n.startswith("dgkd_")]
  assert [model[n] for n in dgkd] == list(chain)
  for i, name in enumerate(dgkd[2:], start=2):
    assert stages[name].teachers == tuple(dgkd[:i]) and "dgkd" in stages[name].config.loss
  assert "drop_num" not in stages["dgkd_student"].config.loss.dgkd
  assert stages["sdgkd_student"].teachers == stages["dgkd_student"].teachers
  assert stages["sdgkd_student"].config.loss.dgkd.drop_num == 1
  counts = [n_params(m) for m in chain]
  assert counts == sorted(counts, reverse=True) and len(set(counts)) == len(counts), counts


COMMON = {"data.name": "cifar100", "optim.name": "sgd", "optim.momentum": 0.9, "optim.weight_decay": 1e-4,
          "batch_size": 128, "epochs": 160, "data.crop_pad": 0, "data.flip": False}
RESNET = {"optim.lr": 0.1, "optim.schedule": "multistep", "optim.milestones": (80, 120), "optim.gamma": 0.1}
RECIPES = {  # file: (chain, recipe, KD weight λ, T)
    "takd_cifar100": (("resnet110", "resnet20", "resnet8"), {**COMMON, **RESNET}, 0.5, 5.0),
    "dgkd_cifar100_plain": (("plane10", "plane8", "plane6", "plane4", "plane2"),
                            {**COMMON, "optim.lr": 0.01, "optim.schedule": "constant"}, 1.0, 5.0),
    "dgkd_cifar100_resnet": (("resnet26", "resnet20", "resnet14", "resnet8"), {**COMMON, **RESNET}, 1.0, 5.0),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_cifar_chains_carry_the_reference_recipes(name):
  chain, recipe, lam, temperature = RECIPES[name]
  stages = stages_of(name)
  assert [s.config.student.model for s in stages.values() if s.name in ("teacher", "takd_student")] == \
      [chain[0], chain[-1]]
  assert {s.config.student.model for s in stages.values()} == set(chain)
  for stage in stages.values():
    assert {k: value(stage.config, k) for k in recipe} == recipe, stage.name
    if not stage.teachers:
      assert stage.config.loss.to_dict() == {"ce": {"weight": 1.0}}
      continue
    term = "dgkd" if "dgkd" in stage.config.loss else "kd"
    expected = {term: {"weight": lam, "temperature": temperature, "reduction": "mean",
                       **({"drop_num": 1} if stage.name == "sdgkd_student" else {})}}
    if lam < 1:  # λ = 1 is DGKD's KD-only loss: no CE term at all
      expected["ce"] = {"weight": round(1 - lam, 10)}
    assert stage.config.loss.to_dict() == expected, stage.name
  assert ("sdgkd_student" in stages) == name.startswith("dgkd")


def test_the_pacemaker_student_learns_from_the_pacemaker_then_the_teacher():
  stages = stages_of("pacemaker_cifar100")
  assert [stages[n].config.student.model for n in ("teacher", "pacemaker", "student_pacemaker")] == \
      ["wrn_40_4", "wrn_40_4_2x3", "wrn_40_4_1x3"]
  student = stages["student_pacemaker"]
  assert student.teachers == ("teacher", "pacemaker")
  phases = resolve_phases(student.config)
  assert len(phases) == 2 and [p.loss.kd.teacher for p in phases] == [1, 0]
  assert [p.loss.kd.temperature for p in phases] == [4.0, 4.0]
  assert sum(p.epochs for p in phases) == student.config.epochs == 240
  for phase in phases:  # each phase's fresh optimizer decays within the phase
    assert phase.optim.schedule == "multistep" and max(phase.optim.milestones) < phase.epochs


def test_a_shrunk_digits_chain_runs_end_to_end(tmp_path):
  kd_chain = load_python_file(os.path.join(EXPERIMENTS, "chains.py"), "kd_chain")
  base = load_python_file(path_of("digits_chain"), "study_configs")()["teacher"]
  base.epochs, base.max_steps, base.batch_size, base.log_every_steps, base.progress_bar = 1, 2, 32, 1, False
  stages = [s for s in kd_chain(base, ("cnn_small", "cnn_tiny", "mlp_tiny"), lam=0.9, temperature=5.0,
                                methods=("takd", "dgkd")) if s.name != "student_ce"]  # kept short: 5 stages
  out = run_pipeline(stages, str(tmp_path))
  assert not out["failed"] and [r["status"] for r in out["rows"]] == ["done"] * len(stages)
  assert [r["stage"] for r in out["rows"]] == ["teacher", "ta_cnn_tiny", "takd_student",
                                               "dgkd_student", "sdgkd_student"]
  assert out["rows"][-1]["teachers"] == ["teacher", "ta_cnn_tiny"]


def test_the_chain_study_table_reports_mean_std_and_gains_over_kd():
  import importlib.util
  spec = importlib.util.spec_from_file_location("chain_study", os.path.join(EXPERIMENTS, "chain_study.py"))
  study = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(study)
  stages = study.STUDIES["chain"][1]
  runs = [{s: {"test": {"accuracy": 0.90 + 0.01 * i + (0.02 if s == "dgkd_student" else 0.0)}} for s in stages}
          for i in range(2)]
  overlap = [{s: 0.5 + 0.1 * i for s in study.OVERLAP_STAGES} for i in range(2)]
  lines = study.table("chain", runs, overlap).splitlines()
  assert lines[0].startswith("| run | test acc (%) | vs KD from the teacher (points) | errors shared")
  dgkd = next(line for line in lines if line.startswith("| DGKD |"))
  assert dgkd == "| DGKD | 92.50 ± 0.71 | 2.00 ± 0.00 | 55.0 ± 7.1% |"


def test_study_tables_replace_only_their_marked_block(tmp_path):
  from kd_jax.study import write_marked_block
  doc = tmp_path / "methods.md"
  doc.write_text("intro\n<!-- a:begin -->\nold\n<!-- a:end -->\nafter\n")
  write_marked_block(str(doc), "a", "| new |")
  assert doc.read_text() == "intro\n<!-- a:begin -->\n| new |\n<!-- a:end -->\nafter\n"
  write_marked_block(str(doc), "b", "table b")
  assert doc.read_text().endswith("after\n\n<!-- b:begin -->\ntable b\n<!-- b:end -->\n")
