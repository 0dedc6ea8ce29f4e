"""DOT (separate task/distillation momenta) and self-distillation (EMA or snapshot of the student as teacher):
the update rules against float64 numpy, the split of the loss's gradient, end-to-end runs with exact resume,
and the configs they refuse."""

import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from kd_jax import cli, distillers, models
from kd_jax import data as kd_data
from kd_jax.config import base_config
from kd_jax.models.outputs import ModelOutput
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import optim
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train.schemes import distill
from kd_jax.train.teachers import SelfTeacher, self_teachers

from helpers import small_config

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments")
BETA, DELTA, WD = 0.9, 0.075, 0.01


def _optim(**kw):
  c = base_config().optim
  for k, v in kw.items():
    c[k] = v
  return c


def _toy_grads(w, r):
  """Task ½‖A·w − b‖² and distillation ½‖w − c‖² + ½‖r − w[:2]‖² gradients in float64; r is reached by the
  distillation loss only, like a distiller's regressor."""
  a = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
  b, c = np.array([1.0, -2.0]), np.array([0.5, 0.5, -1.0])
  g_task = {"w": a.T @ (a @ w - b), "r": np.zeros_like(r)}
  pull = r - w[:2]
  g_dist = {"w": (w - c) - np.concatenate([pull, [0.0]]), "r": pull}
  return g_task, g_dist


def _tree(w, r, dtype=np.float32):
  return {"student": {"w": np.asarray(w, dtype)}, "distiller": {"r": np.asarray(r, dtype)}}


def test_dot_follows_the_two_momentum_rule_with_weight_decay():
  """Shared θ: b_t = (β−Δ)b_t + g_t + λθ, b_d = (β+Δ)b_d + g_d, θ −= η(b_t + b_d). Distillation-only θ:
  b_d = β·b_d + g_d + λθ (no λθ at the first update, as the reference), θ −= η·b_d. η follows the count."""
  schedule = lambda count: 0.1 / (1.0 + count)
  tx = optim.make_optimizer(_optim(name="dot", momentum=BETA, dot_delta=DELTA, weight_decay=WD), schedule,
                            {"student": False, "distiller": True})
  assert optim.takes_two_gradients(tx) and not optim.takes_two_gradients(optim.make_optimizer(_optim(), schedule))
  w, r = np.array([1.0, -2.0, 0.5]), np.array([0.3, -0.7])
  params, state = _tree(w, r), tx.init(_tree(w, r))
  bt, bd, bd_r = np.zeros(3), np.zeros(3), np.zeros(2)
  for k in range(3):
    g_task, g_dist = _toy_grads(np.asarray(params["student"]["w"], np.float64),
                                np.asarray(params["distiller"]["r"], np.float64))
    grads = optim.DotGradients(_tree(g_task["w"], g_task["r"]), _tree(g_dist["w"], g_dist["r"]))
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    # The reference in float64, from its own parameters.
    g_task, g_dist = _toy_grads(w, r)
    lr = 0.1 / (1.0 + k)
    bt = (BETA - DELTA) * bt + g_task["w"] + WD * w
    bd = (BETA + DELTA) * bd + g_dist["w"]
    w = w - lr * bt - lr * bd
    bd_r = BETA * bd_r + g_dist["r"] + (WD * r if k > 0 else 0.0)
    r = r - lr * bd_r
    np.testing.assert_allclose(params["student"]["w"], w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(params["distiller"]["r"], r, rtol=1e-6, atol=1e-7)
  assert int(state.count) == 3


def test_dot_with_zero_delta_is_sgd_with_momentum_on_the_summed_gradient():
  schedule = optax.constant_schedule(0.1)
  dot = optim.make_optimizer(_optim(name="dot", momentum=BETA, dot_delta=0.0, weight_decay=WD), schedule)
  sgd = optim.make_optimizer(_optim(name="sgd", momentum=BETA, weight_decay=WD), schedule)
  w, r = np.array([1.0, -2.0, 0.5]), np.array([0.3, -0.7])
  p_dot = p_sgd = _tree(w, r)
  s_dot, s_sgd = dot.init(p_dot), sgd.init(p_sgd)
  for _ in range(3):
    g_task, g_dist = _toy_grads(np.asarray(p_dot["student"]["w"], np.float64),
                                np.asarray(p_dot["distiller"]["r"], np.float64))
    u, s_dot = dot.update(optim.DotGradients(_tree(g_task["w"], g_task["r"]), _tree(g_dist["w"], g_dist["r"])),
                          s_dot, p_dot)
    p_dot = optax.apply_updates(p_dot, u)
    g_task, g_dist = _toy_grads(np.asarray(p_sgd["student"]["w"], np.float64),
                                np.asarray(p_sgd["distiller"]["r"], np.float64))
    u, s_sgd = sgd.update(_tree(g_task["w"] + g_dist["w"], g_task["r"] + g_dist["r"]), s_sgd, p_sgd)
    p_sgd = optax.apply_updates(p_sgd, u)
  chex.assert_trees_all_close(p_dot, p_sgd, rtol=1e-6, atol=1e-7)
  assert not np.allclose(p_dot["student"]["w"], w)  # it moved


def test_the_step_splits_the_loss_into_task_and_distillation_gradients():
  """0.3·CE + 0.7·KD(T=4) on a linear student z = x·W: the task gradient is xᵀ·0.3(softmax(z) − y)/B, the
  distillation one xᵀ·0.7·T(softmax(z/T) − softmax(z_t/T))/B."""
  rng = np.random.default_rng(0)
  x, w, z_t = rng.normal(size=(6, 5)), rng.normal(size=(5, 4)) * 0.5, rng.normal(size=(6, 4))
  labels = np.array([0, 1, 2, 3, 0, 1])
  distiller = distillers.from_config({"ce": {"weight": 0.3}, "kd": {"weight": 0.7, "temperature": 4.0}})
  out = lambda z, e: ModelOutput(prediction=z, stages=(), preact_stages=(), embedding=e)
  xj, batch = jnp.asarray(x, jnp.float32), {"label": jnp.asarray(labels)}

  def loss_fn(trainable):
    loss, metrics, _ = distiller({"params": {}}, out(xj @ trainable["student"]["W"], xj),
                                 out(jnp.asarray(z_t, jnp.float32), xj), batch)
    return loss, (metrics,)

  trainable = {"student": {"W": jnp.asarray(w, jnp.float32)}, "distiller": {}}
  loss, (metrics,), grads = jax.jit(functools.partial(
      distill.task_and_distillation_gradients, distiller=distiller), static_argnums=0)(loss_fn, trainable)

  def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)

  z = x @ w
  task = x.T @ (0.3 * (softmax(z) - np.eye(4)[labels]) / 6)
  dist = x.T @ (0.7 * 4.0 * (softmax(z / 4.0) - softmax(z_t / 4.0)) / 6)
  np.testing.assert_allclose(grads.task["student"]["W"], task, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grads.distillation["student"]["W"], dist, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(metrics["dot/task_loss"]) + float(metrics["dot/distillation_loss"]),
                             float(loss), rtol=1e-6)


def _ema_states(digits, teacher: SelfTeacher, steps: int):
  """The initial state and the states after each of `steps` self-distillation steps of cnn_tiny (CE + area
  RKD)."""
  student = models.create_model("cnn_tiny", 10)
  distiller = distillers.from_config({"ce": {"weight": 1.0}, "area_rkd": {"weight": 1.0}})
  schedule = optax.constant_schedule(0.1)
  tx = optim.make_optimizer(_optim(), schedule)
  sample = {k: jnp.asarray(v) for k, v in kd_data.train_batch(digits.train, 32, seed=0, step=0).items()}
  state = distill.create_train_state(jax.random.PRNGKey(0), student, distiller, tx, sample, self_teachers(student),
                                     self_teacher=teacher)
  step = jax.jit(functools.partial(distill.train_step, student=student, teachers=self_teachers(student),
                                   distiller=distiller, tx=tx, schedule=schedule, steps_per_epoch=10,
                                   self_teacher=teacher))
  states = [jax.device_get(state)]
  for i in range(steps):
    batch = {k: jnp.asarray(v) for k, v in kd_data.train_batch(digits.train, 32, seed=0, step=i).items()}
    state, _ = step(state, batch, ())
    states.append(jax.device_get(state))
  return states


def _student(state):
  return {"params": state.params, "batch_stats": state.batch_stats}


def test_the_ema_teacher_is_the_moving_average_of_the_recorded_student(digits):
  """τ_0 = v_0, τ_k = d_k·τ_{k−1} + (1 − d_k)·v_k with d_k = min(d, 1 − 1/(k+1)), parameters and BN statistics."""
  decay = 0.6  # d_1 = 0.5 (the plain average), then 0.6
  states = _ema_states(digits, SelfTeacher("ema", ema_decay=decay), 3)
  expected = jax.tree.map(lambda v: np.asarray(v, np.float64), _student(states[0]))
  for k, state in enumerate(states[1:], start=1):
    d = min(decay, 1.0 - 1.0 / (k + 1))
    expected = jax.tree.map(lambda t, v: d * t + (1 - d) * np.asarray(v, np.float64), expected, _student(state))
    chex.assert_trees_all_close(state.distiller_state[distill.SELF_TEACHER], expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(jax.tree.leaves(states[3].params)[-1], jax.tree.leaves(states[0].params)[-1])


def test_the_snapshot_teacher_copies_the_student_at_multiples_of_snapshot_every():
  teacher, snapshot = {"w": np.zeros(2, np.float32)}, SelfTeacher("snapshot", snapshot_every=2)
  seen = []
  for k in range(1, 6):
    teacher = snapshot.update(teacher, {"w": np.full(2, k, np.float32)}, jnp.asarray(k, jnp.int32))
    seen.append(float(teacher["w"][0]))
  assert seen == [0.0, 2.0, 2.0, 4.0, 4.0]


def _stored_state(workdir):
  manager = ckpt.checkpoint_manager(workdir, 3)
  return manager.restore(manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def _straight_and_resumed(tmp_path, digits, name, **overrides):
  """The final checkpointed state of a 3-step run, and of the same run stopped after 2 steps and resumed."""
  straight, resumed = str(tmp_path / f"{name}_straight"), str(tmp_path / f"{name}_resumed")
  assert train_and_evaluate(small_config(max_steps=3, **overrides), straight, dataset=digits)["steps"] == 3
  train_and_evaluate(small_config(max_steps=2, **overrides), resumed, dataset=digits)
  assert train_and_evaluate(small_config(max_steps=3, **overrides), resumed, dataset=digits)["steps"] == 3
  return _stored_state(straight), _stored_state(resumed)


def test_a_dot_run_with_a_self_teacher_trains_and_resumes_bit_identically(tmp_path, digits):
  """One run for both features (each run compiles for seconds): DOT with CE, area-wise RKD and FitNet (whose
  regressor gets distillation gradients only) against a snapshot of the student refreshed every 2 steps. The
  resumed step 3 reads the restored teacher (the student of step 2) and DOT's restored buffers."""
  a, b = _straight_and_resumed(tmp_path, digits, "dot_self", **{
      "optim.name": "dot", "teacher.self": "snapshot", "teacher.snapshot_every": 2, "data.flip": True,
      "loss": {"ce": {"weight": 1.0}, "area_rkd": {"weight": 1.0, "area_weight": 25.0},
               "fitnet": {"weight": 1.0, "stage": 0}}})
  chex.assert_trees_all_equal(a, b)  # student, DOT's two buffers, the self teacher: bit for bit
  task_buffers, distillation_buffers = a["opt_state"]["task_momentum"], a["opt_state"]["distillation_momentum"]
  assert not any(np.any(v) for v in jax.tree.leaves(task_buffers["distiller"]))  # the regressor: no task buffer
  assert all(np.any(v) for v in jax.tree.leaves(distillation_buffers["distiller"]))
  assert all(np.any(v) for v in jax.tree.leaves(task_buffers["student"]))
  teacher = a["distiller_state"][distill.SELF_TEACHER]  # the student after step 2, not step 3
  chex.assert_trees_all_equal_shapes(teacher, {"params": a["params"], "batch_stats": a["batch_stats"]})
  assert not np.array_equal(jax.tree.leaves(teacher["params"])[0], jax.tree.leaves(a["params"])[0])


@pytest.mark.parametrize("config, overrides, message", [
    ("digits_dot.py", ["--config.scheme=mutual", "--config.peers=('cnn_small',)"],
     "use config.scheme='distill' for DOT"),
    ("digits_dot.py", ["--config.optim.dot_delta=0.2"], "must both lie in [0, 1)"),
    ("digits_dot.py", ["--config.optim.nesterov=True"], "set optim.nesterov=False"),
    ("digits_dot.py", ["--config.loss={'ce': {'weight': 1.0}}"], "no distillation term"),
    ("digits_dot.py", ["--config.loss={'kd': {'weight': 1.0}}"], "no task term"),
    ("digits_dot.py", ["--config.phases=({'name': 'head', 'trainable': 'distiller'},)"], "needs optim.name='sgd'"),
    ("digits_area_rkd_self.py", ["--config.teacher.workdir=runs/x"], "set teacher.workdir=''"),
    ("digits_area_rkd_self.py", ["--config.teacher.cache=True"], "set teacher.cache=False"),
    ("digits_area_rkd_self.py", ["--config.teacher.snapshot_every=0"], "snapshot_every must be an integer >= 1"),
    ("digits_area_rkd_self.py", ["--config.teacher.self=average"], "teacher.self must be"),
    ("digits_area_rkd_self.py", ["--config.scheme=adversarial", "--config.peers=('cnn_small',)"],
     "under scheme 'distill' only"),
    ("digits_area_rkd_self.py", ["--config.loss={'ce': {'weight': 1.0}}"], "no term of config.loss reads a teacher"),
])
def test_bad_configs_exit_2_and_say_what_to_change(tmp_path, capsys, config, overrides, message):
  argv = ["train", "--config", os.path.join(EXPERIMENTS, config), "--workdir", str(tmp_path / "run"),
          "--config.max_steps=1", *overrides]
  assert cli.main(argv) == 2
  err = " ".join(capsys.readouterr().err.split())
  assert message in err, err
