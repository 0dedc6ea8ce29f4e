"""Multi-phase training and the two methods built on it, AB and FT.

Expected loss values are worked out by hand; the phase tests run real two-phase trainings and inspect what
each phase changed.
"""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from kd_jax import data as kd_data
from kd_jax import distillers, losses, models
from kd_jax.config import base_config, set_value, validate
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import phases as kd_phases
from kd_jax.train.loop import train_and_evaluate


def _output(key, batch=4, classes=10, channels=(8, 16), sizes=(8, 4), scale=1.0):
  keys = jax.random.split(key, len(channels) + 2)
  stages = tuple(scale * jax.random.normal(k, (batch, s, s, c)) for k, c, s in zip(keys, channels, sizes))
  return ModelOutput(prediction=jax.random.normal(keys[-1], (batch, classes)), stages=stages,
                     preact_stages=stages, embedding=jax.random.normal(keys[-2], (batch, channels[-1])))


# ---------------------------------------------------------------- pure losses


def test_activation_boundary_hand_value_and_zero_when_boundaries_agree_with_margin():
  r = jnp.array([[2.0, -0.5, 0.5, -2.0]])
  t = jnp.array([[1.0, -1.0, 1.0, -1.0]])
  # r=2,t>0: beyond +μ, 0; r=-0.5,t≤0: (r+1)²=0.25; r=0.5,t>0: (r−1)²=0.25; r=-2,t≤0: beyond −μ, 0.
  assert float(losses.activation_boundary(r, t)) == pytest.approx(0.5)
  assert float(losses.activation_boundary(jnp.concatenate([r, r]), jnp.concatenate([t, t]))) == pytest.approx(0.5)
  assert float(losses.activation_boundary(r, t, margin=0.25)) == pytest.approx(0.0)  # every |r| ≥ 0.5
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 5))
  assert float(losses.activation_boundary(3.0 * jnp.sign(x), x)) == 0.0
  assert float(losses.activation_mismatch(-x, x)) == 1.0 and float(losses.activation_mismatch(x, 2 * x)) == 0.0
  grad = jax.grad(losses.activation_boundary, argnums=1)(x, -x)
  assert float(jnp.abs(grad).sum()) == 0.0  # the teacher response is a constant
  with pytest.raises(ValueError, match="connector"):
    losses.activation_boundary(x, x[..., :2])


def test_factor_transfer_hand_values_forms_and_scale_invariance():
  s = jnp.array([1.0, 0.0]).reshape(1, 1, 1, 2)
  t = jnp.array([0.0, 1.0]).reshape(1, 1, 1, 2)
  # paper (the default, the official code's form): flattened maps are orthogonal unit vectors,
  # |diff| = (1, 1), mean 1.
  assert float(losses.factor_transfer(s, t)) == pytest.approx(1.0)
  assert float(losses.factor_transfer(s, t, form="paper", p=2)) == pytest.approx(1.0)
  # reference (RepDistiller): the channel mean of squares is 0.5 at the one position for both, normalised
  # to 1: no loss.
  assert float(losses.factor_transfer(s, t, form="reference")) == pytest.approx(0.0)
  a, b = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 4, 4, 3))
  base = float(losses.factor_transfer(a, b, form="paper"))
  assert float(losses.factor_transfer(5 * a, 0.1 * b, form="paper")) == pytest.approx(base, rel=1e-5)
  # Two positions with mean squares (1, 0) vs (0, 1): normalised factors differ by 1 at each: mean 1.
  s2 = jnp.array([[1.0, 0.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
  t2 = jnp.array([[0.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
  assert float(losses.factor_transfer(s2, t2, form="reference")) == pytest.approx(1.0)
  # reference pools a larger map to the smaller one's size; paper refuses.
  big = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
  assert np.isfinite(float(losses.factor_transfer(big, b, form="reference")))
  with pytest.raises(ValueError, match="translator"):
    losses.factor_transfer(big, b)


# ---------------------------------------------------------------- AB and FT distillers


def test_ab_weights_stages_deepest_first_and_builds_connectors_only_where_shapes_differ():
  student = _output(jax.random.PRNGKey(0), channels=(8, 16))
  teacher = _output(jax.random.PRNGKey(1), channels=(8, 32))
  ab = distillers.make_distiller("ab")
  variables = ab.init(jax.random.PRNGKey(2), student, teacher, BATCH)
  assert set(variables["params"]) == {"stage1"}  # stage 0 shapes agree: no connector
  assert variables["params"]["stage1"]["Conv_0"]["kernel"].shape == (1, 1, 16, 32)
  loss, metrics, state = ab(variables, student, teacher, BATCH, train=True)
  expected = 3e-3 * (0.5 * float(losses.activation_boundary(student.preact_stages[0], teacher.preact_stages[0]))
                     + 1.0 * float(metrics["stage1"]))
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert "stage1" in state["batch_stats"] and 0.0 < float(metrics["mismatch"]) < 1.0


def test_ab_gradient_reaches_student_and_connector_not_teacher():
  student = _output(jax.random.PRNGKey(0), channels=(8, 16))
  teacher = _output(jax.random.PRNGKey(1), channels=(8, 32))
  ab = distillers.AB()
  variables = ab.init(jax.random.PRNGKey(2), student, teacher, BATCH)

  def f(params, s, t):
    return ab({**variables, "params": params}, s, t, BATCH, train=True)[0]

  g_params, g_student, g_teacher = jax.grad(f, argnums=(0, 1, 2))(variables["params"], student, teacher)
  assert float(jnp.abs(g_params["stage1"]["Conv_0"]["kernel"]).sum()) > 0
  assert float(jnp.abs(g_student.preact_stages[0]).sum()) > 0
  assert all(float(jnp.abs(x).sum()) == 0 for x in jax.tree.leaves(g_teacher))


def test_ft_modes_train_what_each_phase_should():
  student = _output(jax.random.PRNGKey(0), channels=(8, 16))
  teacher = _output(jax.random.PRNGKey(1), channels=(8, 32))
  para, transfer = distillers.FT(mode="paraphraser"), distillers.FT(mode="transfer")
  variables = para.init(jax.random.PRNGKey(2), student, teacher, BATCH)
  assert set(variables["params"]) == {"paraphraser", "translator"}
  enc = variables["params"]["paraphraser"]["encoder"]
  assert [enc[f"Conv_{i}"]["kernel"].shape[-1] for i in range(3)] == [32, 16, 16]  # C, kC, kC with k = 0.5
  assert variables["params"]["translator"]["Conv_2"]["kernel"].shape[-1] == 16

  def grads(distiller):
    return jax.grad(lambda p, s: distiller({"params": p}, s, teacher, BATCH)[0], argnums=(0, 1))(
        variables["params"], student)

  g, g_student = grads(para)
  assert float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(g["paraphraser"]))) > 0
  assert all(float(jnp.abs(x).sum()) == 0 for x in jax.tree.leaves((g["translator"], g_student)))
  g, g_student = grads(transfer)
  assert all(float(jnp.abs(x).sum()) == 0 for x in jax.tree.leaves(g["paraphraser"]))
  assert float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(g["translator"]))) > 0
  assert float(jnp.abs(g_student.stages[-1]).sum()) > 0
  with pytest.raises(KDJaxError, match="mode must be"):
    distillers.make_distiller("ft", mode="pretrain")


BATCH = {"label": jnp.array([0, 1, 2, 3])}


# ---------------------------------------------------------------- the phase mechanism


def test_phase_config_errors_say_what_to_fix():
  c = base_config()
  c.phases = ({"name": "warm", "epochs": 2, "lr": 0.1},)
  with pytest.raises(KDJaxError, match=r"unknown key\(s\) lr. Valid keys: name: .*optim"):
    validate(c)
  c.phases = ({"name": "a", "epochs": 1}, {"name": "a"})
  with pytest.raises(KDJaxError, match="'a' is used twice"):
    validate(c)
  c.phases = ({"name": "a", "optim": {"learning_rate": 0.1}},)
  with pytest.raises(KDJaxError, match="unknown optim key 'learning_rate'. Valid keys: .*lr"):
    validate(c)
  c.phases = ({"name": "a", "trainable": ("teacher",)},)
  with pytest.raises(KDJaxError, match="trainable group 'teacher'"):
    validate(c)
  c.phases = ({"name": "a", "epochs": 0},)
  with pytest.raises(KDJaxError, match="positive integer"):
    validate(c)


def test_phases_fill_defaults_from_the_top_level_and_count_steps():
  c = base_config()
  c.epochs = 7
  c.phases = ({"name": "init", "epochs": 2, "loss": {"ab": {"weight": 1.0}}, "optim": {"lr": 0.1},
               "trainable": "distiller"}, {"name": "main"})
  init, main = kd_phases.resolve_phases(c)
  assert (init.epochs, init.optim.lr, init.trainable, init.start_epoch) == (2, 0.1, ("distiller",), 0)
  assert (main.epochs, main.optim.lr, main.trainable, main.start_epoch) == (7, c.optim.lr, ("student", "distiller"), 2)
  assert main.loss.to_dict() == c.loss.to_dict()
  assert main.steps(10) == (20, 90)
  assert [kd_phases.phase_at((init, main), s, 10) for s in (0, 19, 20, 89, 500)] == [0, 0, 1, 1, 1]
  (only,) = kd_phases.resolve_phases(base_config())
  assert only.trainable == ("student", "distiller") and only.epochs == base_config().epochs


def test_masked_optimizer_leaves_frozen_groups_bit_identical_despite_weight_decay():
  tree = {"student": {"w": jnp.ones(3)}, "distiller": {"ft": {"paraphraser": {"k": jnp.ones(2)},
                                                             "translator": {"k": jnp.ones(2)}}}}
  tx = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.5, momentum=0.9))
  masked = kd_phases.masked_optimizer(tx, tree, ("distiller/ft/paraphraser",))
  grads = jax.tree.map(jnp.ones_like, tree)
  updates, _ = masked.update(grads, masked.init(tree), tree)
  new = optax.apply_updates(tree, updates)
  chex.assert_trees_all_equal(new["student"], tree["student"])
  chex.assert_trees_all_equal(new["distiller"]["ft"]["translator"], tree["distiller"]["ft"]["translator"])
  assert float(new["distiller"]["ft"]["paraphraser"]["k"][0]) == pytest.approx(1 - 0.5 * 1.1)
  assert kd_phases.masked_optimizer(tx, tree, ("student", "distiller")) is tx
  with pytest.raises(KDJaxError, match="matches no parameter. Groups that exist: .*distiller/ft/paraphraser"):
    kd_phases.masked_optimizer(tx, tree, ("distiller/ft/encoder",))


# ---------------------------------------------------------------- two-phase runs end to end


@pytest.fixture(scope="module")
def small_digits():
  digits = kd_data.load_dataset("digits")
  x = digits.train.get(np.arange(128))
  return kd_data.from_arrays(x["image"], x["label"], x_test=x["image"][:32], y_test=x["label"][:32],
                             num_classes=10, val_fraction=0.25)  # 96 train examples: 3 steps per epoch


def _config(**overrides):
  c = base_config()
  c.student.model = "cnn_tiny"
  c.batch_size, c.eval_batch_size, c.epochs = 32, 32, 1
  c.log_every_steps, c.progress_bar = 1, False
  c.optim.schedule = "constant"
  c.keep_checkpoints = 10
  for key, value in overrides.items():
    set_value(c, key, value)
  return c


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, small_digits):
  workdir = str(tmp_path_factory.mktemp("teacher"))
  train_and_evaluate(_config(epochs=2), workdir, dataset=small_digits)
  return workdir


FT_PHASES = ({"name": "paraphraser", "epochs": 2, "loss": {"ft": {"weight": 1.0, "mode": "paraphraser"}},
              "trainable": ("distiller/ft/paraphraser",), "optim": {"lr": 0.1}},
             {"name": "main", "epochs": 2, "trainable": ("student", "distiller/ft/translator")})
FT_LOSS = {"ce": {"weight": 1.0}, "ft": {"weight": 500.0, "mode": "transfer"}}


def _state(workdir, step):
  return ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def test_ft_two_phase_run_trains_only_what_each_phase_should_and_resumes_in_the_right_phase(
    tmp_path, small_digits, tiny_teacher):
  common = {"teacher.workdir": tiny_teacher, "phases": FT_PHASES, "loss": FT_LOSS}
  straight = str(tmp_path / "straight")
  result = train_and_evaluate(_config(**common), straight, dataset=small_digits)
  assert result["steps"] == 12 and [p["name"] for p in result["phases"]] == ["paraphraser", "main"]
  early, first, second = _state(straight, 3), _state(straight, 6), _state(straight, 12)
  init_student = models.create_model("cnn_tiny", 10).init(
      jax.random.split(jax.random.PRNGKey(0), 3)[0], jnp.zeros((1, 8, 8, 1)), train=False)
  # Phase 1 moved only the paraphraser: the student (params and BatchNorm statistics) stays as initialised
  # (up to the last bit of the jitted vs eager initialiser) and bit-identical across the phase.
  chex.assert_trees_all_close(first["params"], jax.device_get(init_student["params"]), atol=1e-6)
  chex.assert_trees_all_equal(first["batch_stats"], jax.device_get(init_student["batch_stats"]))
  chex.assert_trees_all_equal((early["params"], early["distiller_params"]["ft"]["translator"]),
                              (first["params"], first["distiller_params"]["ft"]["translator"]))
  assert not np.array_equal(jax.tree.leaves(early["distiller_params"]["ft"]["paraphraser"])[0],
                            jax.tree.leaves(first["distiller_params"]["ft"]["paraphraser"])[0])
  # Phase 2 moved the student and the translator, not the paraphraser.
  chex.assert_trees_all_equal(second["distiller_params"]["ft"]["paraphraser"],
                              first["distiller_params"]["ft"]["paraphraser"])
  for part in (lambda s: s["params"], lambda s: s["distiller_params"]["ft"]["translator"]):
    assert not np.array_equal(jax.tree.leaves(part(first))[0], jax.tree.leaves(part(second))[0])
  lines = [l for l in open(os.path.join(straight, "metrics.jsonl"))]
  assert '"phase": 0' in lines[0] and '"phase": 1' in lines[-1]

  # Stopped at the phase boundary, resumed there and stopped again in the middle of phase 2, resumed to the
  # end: the same final model (one run directory, so each resume starts from the previous stop).
  model, image = models.create_model("cnn_tiny", 10), small_digits.train.get(np.arange(1))["image"]
  expected = ckpt.load_exported_model(straight, model, image)
  resumed = str(tmp_path / "resumed")
  for stop in (6, 8):  # the boundary, then inside phase 2
    assert train_and_evaluate(_config(max_steps=stop, **common), resumed, dataset=small_digits)["steps"] == stop
    assert _state(resumed, stop)["step"] == stop
  train_and_evaluate(_config(**common), resumed, dataset=small_digits)
  chex.assert_trees_all_equal(ckpt.load_exported_model(resumed, model, image), expected)


def test_phase_sharing_a_term_name_with_another_distiller_is_an_error(tmp_path, small_digits, tiny_teacher):
  phases = ({"name": "a", "loss": {"ft": {"weight": 1.0, "distiller": "fitnet"}}},
            {"name": "b", "loss": {"ft": {"weight": 1.0, "mode": "transfer"}}})
  with pytest.raises(KDJaxError, match="term 'ft' is a FitNet in one phase and a FT in another"):
    train_and_evaluate(_config(**{"teacher.workdir": tiny_teacher, "phases": phases}), str(tmp_path / "x"),
                       dataset=small_digits)
