"""Shared test helpers (the tests folder is on sys.path under pytest's default import mode)."""

from kd_jax.config import base_config, set_value


def small_config(**overrides):
  """A few steps of cnn_tiny on digits; `overrides` are dotted keys, e.g. `**{"teacher.workdir": d}`."""
  c = base_config()
  c.data.name = "digits"
  c.student.model = "cnn_tiny"
  c.batch_size = 32
  c.eval_batch_size = 64
  c.epochs = 2
  c.max_steps = 4
  c.log_every_steps = 2
  c.progress_bar = False
  c.optim.schedule = "constant"
  for key, value in overrides.items():
    set_value(c, key, value)
  return c


def segmentation_config(**overrides):
  """A short segmentation run on buildings tiles: unet_tiny on EO (channels 0-2), the teacher on EO+SAR."""
  import ml_collections
  c = base_config()
  c.task = "segmentation"
  c.data.name = "buildings"
  c.data.student_channels = (0, 1, 2)
  c.data.teacher_channels = (0, 1, 2, 3)
  c.data.flip, c.data.crop_pad = True, 2
  c.student.model = "unet_tiny"
  c.loss = ml_collections.ConfigDict({"supervised": {"weight": 1.0}})
  c.optim.name, c.optim.lr, c.optim.schedule = "adamw", 3e-3, "constant"
  c.optim.weight_decay = 0.0
  c.batch_size, c.eval_batch_size, c.epochs = 8, 16, 2
  c.log_every_steps, c.progress_bar = 2, False
  for key, value in overrides.items():
    set_value(c, key, value)
  return c


def export_random_mlp_teacher(workdir, seed=7):
  """An untrained mlp_tiny exported to `workdir` as a digits teacher run: a fast teacher for short runs."""
  return export_random_teacher(workdir, "mlp_tiny", seed)


def export_random_teacher(workdir, model, seed=7):
  """An untrained `model` exported to `workdir` as a digits teacher run (no training: a fast teacher)."""
  import os
  import jax
  import jax.numpy as jnp
  from kd_jax import models
  from kd_jax.train import checkpoint as ckpt
  os.makedirs(workdir)
  teacher = models.create_model(model, 10)
  variables = jax.jit(teacher.init)(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 1)))
  ckpt.export_model(workdir, variables, {"model": model, "num_classes": 10, "dataset": "digits",
                                         "image_shape": [8, 8, 1], "step": 0})
  return workdir


def train_teacher(tmp_path_factory, dataset, **overrides):
  """A cnn_small teacher trained for a few steps (`small_config` plus `overrides`); returns its workdir."""
  from kd_jax.train.loop import train_and_evaluate
  workdir = str(tmp_path_factory.mktemp("teacher"))
  train_and_evaluate(small_config(**{"student.model": "cnn_small", **overrides}), workdir, dataset=dataset)
  return workdir


def model_grads(name, mode, image_size, dtype="float32"):
  """A model's initial variables, the (loss, gradient) of its mean cross-entropy in train mode on 8 random
  images, and the compiled program's HLO text, with the convolution mode `mode` (kd_jax.backends.Kernels)."""
  import jax
  import jax.numpy as jnp
  from kd_jax import models
  from kd_jax.backends import Kernels
  model = models.create_model(name, 10, dtype=dtype, kernels=Kernels(mode))
  x = jax.random.normal(jax.random.PRNGKey(0), (8, image_size, image_size, 3))
  labels = jnp.arange(8) % 10
  variables = model.init(jax.random.PRNGKey(1), x[:1], train=False)

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    logp = jax.nn.log_softmax(out.logits.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1))

  fn = jax.jit(jax.value_and_grad(loss))
  return variables, fn(variables["params"]), fn.lower(variables["params"]).compile().as_text()


def numpy_variables(abstract_variables, seed: int = 0):
  """Concrete variables for an abstract variable tree (`jax.eval_shape` of `model.init`), drawn with numpy:
  BN scale and running var near 1, He-scaled kernels, small biases and means. No RNG kernel is compiled (an
  eager `model.init` compiles one per parameter shape, seconds each on a 2-core CPU), and checks can stay in
  numpy."""
  import jax
  import numpy as np
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    kind, shape = path[-1].key, leaf.shape
    if kind == "kernel":
      value = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
    elif kind in ("scale", "var"):
      value = 1.0 + 0.2 * rng.random(shape)
    else:  # bias, mean
      value = 0.1 * rng.normal(size=shape)
    return np.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract_variables)


def scheme_steps_on(devices, config, digits, count=3):
  """`count` steps of `config`'s run on a mesh of `devices` (digits batches of 32): the losses and the state."""
  import jax
  import numpy as np
  from kd_jax import data as kd_data
  from kd_jax.train import run as kd_run
  from kd_jax.train import sharding
  mesh = sharding.make_mesh(devices)
  run = kd_run.build_run(config, digits, mesh=mesh)
  state, losses_ = kd_run.init_state(run), []
  step = kd_run.make_step(run, state, 0)
  for i in range(count):
    batch = sharding.shard_batch(kd_data.train_batch(digits.train, 32, seed=0, step=i), mesh)
    state, metrics = step(state, batch, ())
    losses_.append(float(metrics["loss"]))
  return np.array(losses_), jax.device_get(state)
