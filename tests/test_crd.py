"""CRD: the NCE and softmax objectives, negative sampling, the memory banks, and the distiller on a mesh.

Expected values are hand calculations on tiny arrays (written out with `math`, never produced by the code
under test); the sharded train steps are compared with a one-device run.
"""

import functools
import json
import math
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import data as kd_data
from kd_jax import distillers, losses, models
from kd_jax.config import base_config
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.train import checkpoint as ckpt
from kd_jax.train import optim, sharding
from kd_jax.train.loop import train_and_evaluate
from kd_jax.train import create_train_state, train_step
from kd_jax.train.teachers import Teachers


def _prepared(labels, **hparams):
  crd = distillers.make_distiller("crd", **hparams)
  return crd.prepare(distillers.TrainingData(lambda: None, np.asarray(labels), int(np.max(labels)) + 1))


# ------------------------------------------------------------------------------------- the objectives


def test_nce_loss_hand_values():
  # Z = 1, N = 4, K = 2: K·P_n = 0.5. Row 0: P = (1.5, .5, .5) → h₀ = .75, 1 − h = .5, .5.
  # Row 1: P = (.5, 1.5, .5) → h₀ = .5, 1 − h = .5/2 = .25 and .5.
  p = np.array([[1.5, 0.5, 0.5], [0.5, 1.5, 0.5]])
  row0 = -(math.log(0.75) + 2 * math.log(0.5))
  row1 = -(math.log(0.5) + math.log(0.25) + math.log(0.5))
  expected = (row0 + row1) / 2
  np.testing.assert_allclose(losses.crd_nce_loss(jnp.log(p), 1.0, 4), expected, rtol=1e-6)
  # Z divides exp(s): scores of 2·P with Z = 2 give the same loss.
  np.testing.assert_allclose(losses.crd_nce_loss(jnp.log(2 * p), 2.0, 4), expected, rtol=1e-6)
  # Z estimated as in the reference: N · mean(exp(s)) over every entry, positives included.
  np.testing.assert_allclose(losses.crd_normalizer(jnp.log(p), 4), 4 * 5.0 / 6.0, rtol=1e-6)


def test_softmax_loss_hand_values():
  scores = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  expected = (math.log(1 + 2 * math.exp(-2)) + math.log(2 + math.e)) / 2
  np.testing.assert_allclose(losses.crd_softmax_loss(scores), expected, rtol=1e-6)


def _toy_banks():
  """2-D banks of N = 3 examples plus one padding row, one anchor per side, tau = 0.5."""
  student_memory = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])
  teacher_memory = jnp.array([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [0.0, 0.0]])
  v_s, v_t = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, -1.0]])
  return v_s, v_t, student_memory, teacher_memory, jnp.array([[0, 1, 2]])


def test_crd_pairs_each_anchor_with_the_other_sides_bank():
  v_s, v_t, s_mem, t_mem, idx = _toy_banks()
  # Student anchor vs teacher rows 0, 1, 2: dots (0, 1, 0)/0.5; teacher anchor vs student rows: (0, -1, 0)/0.5.
  s_scores, t_scores = losses.contrastive.crd_directions(v_s, v_t, s_mem, t_mem, idx, temperature=0.5)
  np.testing.assert_allclose(s_scores, [[0.0, 2.0, 0.0]])
  np.testing.assert_allclose(t_scores, [[0.0, -2.0, 0.0]])

  softmax = math.log(2 + math.exp(2)) + math.log(2 + math.exp(-2))
  np.testing.assert_allclose(losses.crd(v_s, v_t, s_mem, t_mem, idx, num_examples=3, temperature=0.5,
                                        mode="softmax"), softmax, rtol=1e-6)

  def nce(p, z, n=3):  # one direction, K = 2, the definition written out
    c = 2 / n
    p = [x / z for x in p]
    return -(math.log(p[0] / (p[0] + c)) + sum(math.log(c / (x + c)) for x in p[1:]))

  student_p, teacher_p = [1.0, math.exp(2), 1.0], [1.0, math.exp(-2), 1.0]
  given = nce(student_p, 2.0) + nce(teacher_p, 0.5)
  np.testing.assert_allclose(losses.crd(v_s, v_t, s_mem, t_mem, idx, num_examples=3, temperature=0.5,
                                        normalizers=(2.0, 0.5)), given, rtol=1e-5)
  # Unset (None, or ≤ 0) normalisers are estimated from these scores: Z = N · mean(exp(s)) per direction.
  estimated = nce(student_p, sum(student_p)) + nce(teacher_p, sum(teacher_p))
  for normalizers in (None, (-1.0, -1.0)):
    np.testing.assert_allclose(losses.crd(v_s, v_t, s_mem, t_mem, idx, num_examples=3, temperature=0.5,
                                          normalizers=normalizers), estimated, rtol=1e-5)


def test_scores_match_gathering_rows_as_the_reference():
  rng = np.random.default_rng(0)
  memory = rng.normal(size=(40, 8)).astype(np.float32)
  anchors = rng.normal(size=(5, 8)).astype(np.float32)
  idx = rng.integers(0, 37, size=(5, 7))
  expected = np.einsum("bkd,bd->bk", memory[idx], anchors) / 0.07  # index_select + bmm
  np.testing.assert_allclose(losses.crd_scores(jnp.asarray(memory), jnp.asarray(anchors), jnp.asarray(idx)),
                             expected, rtol=1e-5, atol=1e-4)


def test_memory_update_mixes_normalises_and_touches_only_the_batch_rows():
  memory = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, 0.0]])
  new = losses.crd_memory_update(memory, jnp.array([[0.0, 1.0], [1.0, 0.0]]), jnp.array([0, 2]))
  # Row 0: (.5, .5)/‖·‖; row 2: .5·(.6, .8) + .5·(1, 0) = (.8, .4), /√.8.
  expected = [[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0], [0.8 / math.sqrt(0.8), 0.4 / math.sqrt(0.8)],
              [0.0, 0.0]]
  np.testing.assert_allclose(new, expected, rtol=1e-6)
  # Momentum 0.75 weighs the old row three times the new embedding.
  new = losses.crd_memory_update(memory, jnp.array([[0.0, 1.0]]), jnp.array([0]), momentum=0.75)
  np.testing.assert_allclose(new[0], np.array([0.75, 0.25]) / math.hypot(0.75, 0.25), rtol=1e-6)
  np.testing.assert_array_equal(new[1:], memory[1:])


# ---------------------------------------------------------------------------------- negative sampling

LABELS = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])  # largest class 4: 6 negatives of other classes for all


def test_negatives_are_other_classes_distinct_and_positive_first():
  assert losses.crd_available_negatives(LABELS) == 6
  assert losses.crd_available_negatives(LABELS, exclude_same_class=False) == 9
  index = jnp.array([0, 3, 7, 9])
  idx = np.asarray(losses.crd_sample_indices(jax.random.PRNGKey(0), index, jnp.asarray(LABELS), 6))
  assert idx.shape == (4, 7)
  np.testing.assert_array_equal(idx[:, 0], index)
  for row in idx:
    negatives = row[1:]
    assert len(set(negatives)) == 6
    assert np.all(LABELS[negatives] != LABELS[row[0]])
  # The class-1 anchor (4 members) has exactly 6 other-class examples: it gets all of them.
  assert set(idx[1, 1:]) == set(np.flatnonzero(LABELS != 1))
  # The paper's sampling: anything but the anchor itself.
  idx = np.asarray(losses.crd_sample_indices(jax.random.PRNGKey(1), index, jnp.asarray(LABELS), 9,
                                             exclude_same_class=False))
  for row in idx:
    assert set(row[1:]) == set(range(10)) - {row[0]}


def test_negatives_are_uniform_over_the_allowed_examples():
  index = jnp.zeros((3000,), jnp.int32)  # class 0: 7 allowed negatives (3..9), draw K = 2
  idx = np.asarray(losses.crd_sample_indices(jax.random.PRNGKey(2), index, jnp.asarray(LABELS), 2))
  counts = np.bincount(idx[:, 1:].ravel(), minlength=10)
  assert counts[:3].sum() == 0
  np.testing.assert_allclose(counts[3:] / len(index), 2 / 7, atol=0.03)


@pytest.mark.parametrize("exclude_same_class", [True, False])
def test_negatives_are_the_draws_of_a_stable_argsort_of_the_keys(exclude_same_class):
  # The sampler takes the K smallest keys with top_k; the draws must be those of the full stable argsort it
  # replaced (same examples, same order), including where float32 keys tie: with 2^23 key values and N = 4096
  # about one tie per row, so 16 rows are sure to hold some.
  n, k = 4096, 1500
  labels = jnp.asarray(np.arange(n) % 7, jnp.int32)
  index = jnp.asarray(np.random.default_rng(0).permutation(n)[:16], jnp.int32)
  rng = jax.random.PRNGKey(3)
  got = np.asarray(losses.crd_sample_indices(rng, index, labels, k, exclude_same_class=exclude_same_class))
  keys = np.asarray(jax.random.uniform(rng, (index.shape[0], n)))
  assert any(len(np.unique(row)) < n for row in keys)  # ties exist
  if exclude_same_class:
    disallowed = np.asarray(labels)[None, :] == np.asarray(labels)[np.asarray(index)][:, None]
  else:
    disallowed = np.arange(n)[None, :] == np.asarray(index)[:, None]
  expected = np.argsort(np.where(disallowed, np.inf, keys), axis=1, kind="stable")[:, :k]
  np.testing.assert_array_equal(got[:, 0], index)
  np.testing.assert_array_equal(got[:, 1:], expected)


def test_too_many_negatives_are_rejected_with_the_limit():
  with pytest.raises(KDJaxError, match=r"nce_k=7 .* only 6 .*nce_k ≤ 6"):
    _prepared(LABELS, nce_k=7)
  crd = _prepared(LABELS, nce_k=6)
  assert crd.num_examples == 10 and crd.bank_rows == 16  # padded to a multiple of the 8 devices
  assert _prepared(LABELS, nce_k=9, exclude_same_class=False).nce_k == 9
  with pytest.raises(KDJaxError, match="labels are not set"):
    distillers.make_distiller("crd", nce_k=6).init(jax.random.PRNGKey(0), None, None, {})


# ------------------------------------------------------------------------------------ the distiller


def _outputs(seed, b=6, ds=5, dt=7):
  rng = np.random.default_rng(seed)
  out = lambda d: ModelOutput(prediction=jnp.zeros((b, 3)), stages=(), preact_stages=(),
                              embedding=jnp.asarray(rng.normal(size=(b, d)), jnp.float32))
  return out(ds), out(dt)


def test_gradients_reach_heads_and_student_not_teacher_and_state_updates():
  crd = _prepared(LABELS, nce_k=4, feat_dim=8)
  student, teacher = _outputs(0)
  index = jnp.array([0, 2, 3, 5, 7, 8])
  variables = jax.jit(crd.init)(jax.random.PRNGKey(1), student, teacher, {"index": index})
  assert variables["memory"]["student"].shape == (16, 8)  # 10 rows padded to 16
  np.testing.assert_array_equal(variables["memory"]["teacher"][10:], 0.0)

  @jax.jit  # one compilation for both steps below
  def step(variables, s_emb, t_emb, index, rng):
    def loss(params, s_emb, t_emb):
      value, metrics, state = crd(dict(variables, params=params), student.replace(embedding=s_emb),
                                  teacher.replace(embedding=t_emb), {"index": index}, rng=rng, train=True)
      return value, (metrics, state)
    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(variables["params"], s_emb, t_emb)

  (value, (metrics, state)), (g_params, g_s, g_t) = step(variables, student.embedding, teacher.embedding,
                                                         index, jax.random.PRNGKey(2))
  assert float(jnp.abs(g_s).sum()) > 0
  np.testing.assert_array_equal(g_t, 0.0)  # the teacher's features are constants
  for head in ("student_embed", "teacher_embed"):
    assert float(jnp.abs(g_params[head]["kernel"]).sum()) > 0  # both heads train
  np.testing.assert_allclose(value, metrics["student_anchor"] + metrics["teacher_anchor"], rtol=1e-6)
  changed = np.flatnonzero(np.any(state["memory"]["student"] != variables["memory"]["student"], axis=1))
  np.testing.assert_array_equal(changed, index)
  np.testing.assert_allclose(np.linalg.norm(state["memory"]["teacher"][index], axis=1), 1.0, rtol=1e-6)
  # Z is set by the first step and then kept: the next step reports and stores the same values.
  z = state["normalizer"]
  assert float(z["student_anchor"]) > 0 and float(z["teacher_anchor"]) > 0
  (_, (metrics2, state2)), _ = step(dict(variables, **state), student.embedding, teacher.embedding,
                                    jnp.array([1, 4, 6, 9, 0, 2]), jax.random.PRNGKey(3))
  chex.assert_trees_all_equal(state2["normalizer"], z)
  np.testing.assert_allclose(metrics2["z_student_anchor"], z["student_anchor"])
  # Outside training the state is left alone (traced only, nothing to run).
  assert jax.eval_shape(lambda v: crd(v, student, teacher, {"index": index}, rng=jax.random.PRNGKey(2)),
                        variables)[2] == {}


def test_softmax_mode_keeps_no_normalizer():
  crd = _prepared(LABELS, nce_k=4, feat_dim=8, mode="softmax")
  student, teacher = _outputs(0)
  batch = {"index": jnp.arange(6)}
  variables = jax.jit(crd.init)(jax.random.PRNGKey(1), student, teacher, batch)
  assert set(variables) == {"params", "memory"}

  @jax.jit
  def run(variables):
    # The distiller is `losses.crd` on its heads' outputs, the rows drawn with its key, and its banks.
    v_s, v_t = distillers.CRDEmbed(8).apply({"params": variables["params"]}, student.embedding,
                                            teacher.embedding)
    idx = losses.crd_sample_indices(jax.random.PRNGKey(2), batch["index"], jnp.asarray(LABELS), 4)
    expected = losses.crd(v_s, v_t, variables["memory"]["student"], variables["memory"]["teacher"], idx,
                          num_examples=10, mode="softmax")
    return crd(variables, student, teacher, batch, rng=jax.random.PRNGKey(2), train=True), expected

  (value, metrics, state), expected = run(variables)
  assert set(state) == {"memory"} and set(metrics) == {"student_anchor", "teacher_anchor"}
  np.testing.assert_allclose(value, expected, rtol=1e-6)


# ------------------------------------------------------------------------ train steps on a device mesh


@pytest.fixture(scope="module")
def setup(digits):
  """CE + CRD on mlp_tiny with a random mlp_tiny teacher, and the initial train state (built once: the
  jitted initialisers cost more than a train step's compilation)."""
  config = base_config()
  config.optim.schedule = "constant"
  student, teacher = models.create_model("mlp_tiny", 10), models.create_model("mlp_tiny", 10)
  sample = {k: jnp.asarray(v) for k, v in kd_data.train_batch(digits.train, 32, seed=0, step=0).items()}
  teacher_vars = (jax.jit(teacher.init)(jax.random.PRNGKey(7), sample["image"][:1]),)
  teachers = Teachers((teacher,), (1.0,))
  distiller = distillers.from_config({"ce": {"weight": 1.0}, "crd": {"weight": 0.8, "nce_k": 64}}).prepare(
      distillers.TrainingData(lambda: None, np.asarray(digits.train.labels), 10))
  schedule = optim.learning_rate_schedule(config.optim, 10, 100)
  tx = optim.make_optimizer(config.optim, schedule)
  state = jax.device_get(create_train_state(jax.random.PRNGKey(0), student, distiller, tx, sample, teachers,
                                            teacher_vars))
  return dict(student=student, teachers=teachers, teacher_vars=jax.device_get(teacher_vars),
              distiller=distiller, tx=tx, schedule=schedule, state=state)


def _mesh_steps(devices, num_steps, digits, setup):
  """`num_steps` train steps on a mesh over `devices`, the state placed by `sharding.state_shardings`;
  returns (losses, final state, the compiled per-device program's text)."""
  mesh = sharding.make_mesh(devices)
  shardings = sharding.state_shardings(setup["state"], mesh)
  state = jax.device_put(setup["state"], shardings)
  teacher_vars = sharding.replicate(setup["teacher_vars"], mesh)
  step = jax.jit(functools.partial(train_step, student=setup["student"], teachers=setup["teachers"],
                                   distiller=setup["distiller"], tx=setup["tx"], schedule=setup["schedule"],
                                   steps_per_epoch=10),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  batches = [sharding.shard_batch(kd_data.train_batch(digits.train, 32, seed=0, step=i), mesh)
             for i in range(num_steps)]
  compiled = step.lower(state, batches[0], teacher_vars).compile()
  step_losses = []
  for batch in batches:
    state, metrics = compiled(state, batch, teacher_vars)
    step_losses.append(float(metrics["loss"]))
  return np.array(step_losses), state, compiled.as_text()


def test_eight_devices_match_one_device_and_banks_stay_split(digits, setup):
  assert jax.device_count() == 8, "conftest.py forces 8 CPU devices"
  losses_1, state_1, _ = _mesh_steps(jax.devices()[:1], 3, digits, setup)
  losses_8, state_8, hlo = _mesh_steps(jax.devices(), 3, digits, setup)
  crd = setup["distiller"].terms[1][2]
  rows = crd.bank_rows
  assert rows % 8 == 0 and rows >= crd.num_examples == len(digits.train)
  for name in ("student", "teacher"):
    bank = state_8.distiller_state["memory"]["crd"][name]
    assert bank.shape == (rows, 128) and bank.sharding.spec == jax.sharding.PartitionSpec("data")
    assert {s.data.shape for s in bank.addressable_shards} == {(rows // 8, 128)}
    assert len(bank.addressable_shards) == 8
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-5)
  state_1, state_8 = jax.device_get(state_1), jax.device_get(state_8)
  chex.assert_trees_all_close(state_8.params, state_1.params, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.distiller_params, state_1.distiller_params, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(state_8.distiller_state, state_1.distiller_state, rtol=1e-5, atol=1e-5)
  assert losses_1[-1] != losses_1[0]
  # The partitioned program never materialises a whole bank on a device: no array with the bank's row count
  # (each device holds rows/8), and no collective whose result has a dimension that large.
  assert not re.search(rf"\[{rows},", hlo), "a bank-sized array appears in the per-device program"
  for line in hlo.splitlines():
    if re.search(r"\b(all-gather|all-to-all|collective-permute|all-reduce)(-start)?\(", line):
      dims = [int(d) for shape in re.findall(r"\[([\d,]+)\]", line.split("(", 1)[0]) for d in shape.split(",")]
      assert not dims or max(dims) < rows // 2, line[:200]


def test_train_and_evaluate_with_crd(tmp_path, digits, setup):
  teacher_dir = str(tmp_path / "teacher")  # the random mlp_tiny teacher exported as a finished run
  os.makedirs(teacher_dir)
  ckpt.export_model(teacher_dir, setup["teacher_vars"][0], {"model": "mlp_tiny", "num_classes": 10,
                                                           "dataset": "digits", "image_shape": [8, 8, 1],
                                                           "step": 0})
  c = base_config()
  c.data.name, c.student.model, c.teacher.workdir = "digits", "mlp_tiny", teacher_dir
  c.batch_size, c.eval_batch_size, c.epochs, c.max_steps, c.progress_bar = 32, 256, 1, 3, False
  c.loss = {"ce": {"weight": 1.0}, "crd": {"weight": 0.8, "nce_k": 100, "mode": "softmax"}}
  workdir = str(tmp_path / "crd")
  results = train_and_evaluate(c, workdir, dataset=digits)
  assert results["steps"] == 3 and 0.0 <= results["test_accuracy"] <= 1.0
  prepared = json.load(open(os.path.join(workdir, "prepared.json")))["fields"]["crd"]
  assert prepared["row_multiple"] == 8 and len(prepared["labels"]) == len(digits.train)
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert math.isfinite(lines[-1]["train/crd/loss"]) and "train/crd/teacher_anchor" in lines[-1]
