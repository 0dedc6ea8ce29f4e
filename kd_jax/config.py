"""The base config (every valid key with its default), loading config files, and command-line overrides.

Configs are Python: an experiment file defines `get_config()` returning an `ml_collections.ConfigDict`,
normally `base_config()` with some values changed. Config files are executed as Python code, so only run
configs you trust. Overrides use dotted keys, `--config.optim.lr=0.05`.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import sys
from typing import Iterable, Optional

import ml_collections

from kd_jax.backends import CONV_BACKWARDS, CPU_CONV_KERNELS
from kd_jax.errors import KDJaxError, one_of


def base_config() -> ml_collections.ConfigDict:
  """Every key a training run reads, with defaults. Keys not listed here are rejected."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # What is learned (kd_jax.tasks): 'classification', 'rating', 'super_resolution' or 'regression'; the dataset
  # must hold that task's data.
  c.task = "classification"
  # What one step trains (kd_jax.train.schemes): 'distill' (frozen teachers, one student, config.loss),
  # 'mutual' (DML: the student and config.peers trained together, each with config.loss against every
  # other network) or 'adversarial' (AFD: networks and feature-map discriminators, config.discriminators).
  c.scheme = "distill"

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"          # 'digits' (embedded), 'cifar10', 'cifar100' (tfds in data_dir), 'imagenet2012'
  #                                 or 'tfds:<builder>' (tfds JPEG builds, streamed: kd_jax/data/streaming.py)
  c.data.data_dir = ""            # tfds data_dir holding array_record builds; '' = tfds default
  c.data.val_fraction = 0.1       # carved from training data; used for any selection, never the test split
  #                                 (streamed data: also a whole number of examples, e.g. 10000 for ImageNet)
  c.data.crop_pad = 0             # random-crop padding (4 for CIFAR); 0 = no crop
  c.data.flip = False             # random horizontal flip (True for CIFAR; super-resolution: flips and rotations)
  # Streamed datasets (imagenet2012, 'tfds:<builder>'): JPEGs decoded and augmented on the host (random-resized
  # crop, plus the random flip if data.flip, for training; resize + centre crop for evaluation); crop_pad = 0.
  c.data.image_size = 224         # side of the square crops fed to the network
  c.data.num_workers = 0          # grain worker processes decoding batches; 0 = a thread of the main process
  c.data.prefetch = 2             # batches decoded ahead of the step that consumes them
  # Super-resolution (config.task='super_resolution', kd_jax/data/super_resolution.py): data.name 'sr_photos'
  # (embedded), 'sr_folders' (the folders below) or 'div2k' (tfds in data_dir).
  c.data.scale = 2                # upscaling factor
  c.data.tile_size = 48           # LR size of the training tiles cut from every training image
  c.data.patch_size = 24          # LR patch cut at random from each tile per step (0 = the whole tile)
  c.data.y_channel = True         # PSNR/SSIM on the Y channel (as SR papers) rather than on RGB
  c.data.hr_dir = ""              # 'sr_folders': training HR images ...
  c.data.lr_dir = ""              # ... and their LR images ('' = bicubic downscaling of the HR images)
  c.data.test_hr_dir = ""         # 'sr_folders': test HR images (e.g. Set5) ...
  c.data.test_lr_dir = ""         # ... and their LR images
  # Regression (config.task='regression', kd_jax/data/regression.py): data.name 'diabetes' (embedded),
  # 'trajectories' (embedded, synthetic 8 -> 12 positions) or 'regression_files' (data_dir/train.npz and
  # optionally test.npz, arrays 'x' and 'y').
  c.data.labeled_fraction = 1.0   # in (0, 1]: share of the training split whose targets may be used
  c.data.regression_loss = "l2"   # the supervised loss: 'l2' (mean squared error) or 'l1', on labeled examples
  # Seed of the regression data's validation carve and labeled subset; -1 = config.seed. Teachers whose
  # predictions a student reads must share its split: give them the student's split seed and vary config.seed.
  c.data.split_seed = -1
  # Segmentation (config.task='segmentation', kd_jax/data/segmentation.py): data.name 'buildings' (embedded,
  # synthetic EO+SAR tiles; channels red, green, blue, SAR) or 'segmentation_folders' (data_dir/images, masks,
  # optional sar). The image channels each model sees (tuples of indices; () = all): the student's input is
  # image[..., student_channels], the frozen teachers' image[..., teacher_channels] (a privileged modality).
  c.data.student_channels = ()
  c.data.teacher_channels = ()
  # Ratings (config.task='rating', kd_jax/data/ratings.py): data.name 'synthetic_ratings' (embedded, 600 users x
  # 400 items, missing not at random) or 'movielens' (data_dir holding MovieLens 100K's u.data or ratings.csv).

  c.student = ml_collections.ConfigDict()
  c.student.model = "cnn_small"
  # Overrides of config.optim for this network under 'mutual' and 'adversarial' (e.g. {'lr': 0.1}); under
  # 'distill' config.optim and config.phases set the student's optimizer.
  c.student.optim = ml_collections.ConfigDict()
  # The other networks of 'mutual' and 'adversarial' (network 1 is config.student), each a model name or a
  # dict {'model': name, 'optim': {overrides of config.optim}}; they are named peer1, peer2, ...
  c.peers = ()
  # 'mutual': 'sequential' (the DML paper's and reference code's order: each network's update sees the
  # networks updated before it in the step) or 'simultaneous' (every update from one forward pass).
  c.mutual_update = "sequential"

  # The feature-map discriminators of scheme 'adversarial' (AFD, kd_jax/train/schemes/adversarial.py), one
  # per network and tap, and the optimizers of the adversarial game. With config.teacher.workdir and no
  # peers the student alone is trained, against the frozen teacher's maps.
  c.discriminators = ml_collections.ConfigDict()
  c.discriminators.stage = -1                 # which stage's feature map they read (-1: the last)
  c.discriminators.stages = ()                # several stages, one discriminator each (multi-scale); () = stage
  c.discriminators.teacher_stages = ()        # with a teacher: its stage for each of stages; () = the same
  c.discriminators.pools = (1,)               # each map also average-pooled by these factors, a discriminator each
  c.discriminators.weight = 1.0               # weight of the networks' adversarial (generator) loss
  c.discriminators.widths = (64, 128)         # conv blocks of each discriminator
  c.discriminators.transfer_channels = 0      # 1x1 transfer layers to this width; 0 = only if widths differ
  # Overrides of config.optim for the discriminators, and for the networks' adversarial updates.
  c.discriminators.optim = ml_collections.ConfigDict(
      {"name": "adamw", "lr": 2e-4, "weight_decay": 0.0, "schedule": "constant", "warmup_epochs": 0})
  c.discriminators.network_optim = ml_collections.ConfigDict(
      {"name": "adamw", "lr": 2e-4, "weight_decay": 0.0, "schedule": "constant", "warmup_epochs": 0})

  c.teacher = ml_collections.ConfigDict()
  c.teacher.model = ""            # '' = no teacher
  c.teacher.workdir = ""          # a finished kd_jax run whose exported model is the teacher
  c.teacher.extra_workdirs = ()   # more teachers (ensembles, teacher assistants); models from their runs
  c.teacher.calibrate = False     # divide each teacher's logits by a temperature fitted by NLL ...
  c.teacher.calibration_split = "val"  # ... on this split: 'val' (held out) or 'train'
  # A temperature fitted at the bound of its search range (T = 0.001 when the teacher gets the whole split
  # right, T = 1000 when its logits carry no information) is no calibration: 'error' stops the run and says
  # what to do; 'keep_one' keeps that teacher at T = 1 and records why in the results.
  c.teacher.calibration_at_bound = "error"
  c.teacher.pruned_copy_rate = 0.0  # > 0 adds a magnitude-pruned copy of the teacher (R2KD: 0.1)
  # Teacher-output cache (kd_jax.train.teacher_cache): the teachers' outputs on every training example are
  # computed once and read back each step instead of running the teachers. Exact only without augmentation
  # or with flip-only augmentation (crop_pad must be 0).
  c.teacher.cache = False
  c.teacher.cache_fields = ("logits",)  # ModelOutput fields to cache: logits, embedding, stages, preact_stages
  c.teacher.cache_max_gb = 4.0    # refuse a cache larger than this (stage features grow fast)
  c.teacher.cache_dir = ""        # '' = <workdir>/teacher_cache; entries are keyed by teacher and data
  # Self-distillation (scheme 'distill', kd_jax.train.teachers.SelfTeacher): the teacher is the student network
  # with other weights, kept in the train state. '' = off; 'ema': an exponential moving average of the student's
  # parameters and BatchNorm statistics, updated after every step; 'snapshot': a copy of them taken every
  # snapshot_every steps. Not with teacher.workdir, the teacher cache or calibration.
  c.teacher.self = ""
  c.teacher.ema_decay = 0.999     # 'ema': d in τ ← d·τ + (1 − d)·θ (a plain average for the first 1/(1 − d) steps)
  c.teacher.snapshot_every = 100  # 'snapshot': steps between copies (the first steps distil from the initial net)

  # Compressing the trained networks (the student; under 'mutual'/'adversarial' every network) while they
  # train (kd_jax/compression), with any distiller and scheme:
  # unstructured magnitude pruning (Zhu & Gupta's gradual schedule, or one-shot) and quantisation-aware
  # training (fake-quantised kernels per channel and Conv/Dense inputs per tensor, straight-through gradient).
  c.compression = ml_collections.ConfigDict()
  c.compression.sparsity = 0.0            # s_f: fraction of the prunable kernel weights that end at zero; 0 = off
  c.compression.initial_sparsity = 0.0    # s_i: sparsity of the first mask update
  c.compression.prune_structure = "unstructured"  # or 'filters': L1 filter pruning of CIFAR ResNet blocks' conv1
  c.compression.prune_scope = "layer"     # 'layer' (each kernel loses s) or 'global' (one magnitude threshold)
  c.compression.prune_exclude = ()        # regexes of '/'-joined kernel paths kept dense, e.g. ('^conv1/', '^fc/')
  c.compression.prune_begin_epoch = 0     # t_0, in epochs of the whole run (all phases)
  c.compression.prune_end_epoch = 0       # t_0 + nΔt; <= prune_begin_epoch: one-shot pruning at t_0
  c.compression.prune_every_steps = 100   # Δt, steps between mask updates
  c.compression.weight_bits = 0           # QAT: kernel bits (2-16); 0 = full precision (then activation_bits 0 too)
  c.compression.activation_bits = 0       # QAT: bits of every Conv/Dense input
  c.compression.weight_range = "minmax"   # 'minmax' (max|w| per channel) or 'lsq' (learned step sizes)
  c.compression.activation_range = "minmax"  # 'minmax' (moving min/max observers) or 'lsq'
  c.compression.observer_momentum = 0.9   # m in lo ← m·lo + (1 − m)·min(batch)
  c.compression.first_last_bits = 8       # the first layer and the classifier at this width; 0 = as the others
  c.compression.quant_begin_epoch = 0     # QAT in the phases that start at or after this epoch (a phase start)

  # Weighted sum of distillers: term -> {weight, distiller (defaults to the term's name), hyper-params}.
  c.loss = ml_collections.ConfigDict({"ce": {"weight": 1.0}})

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"            # 'sgd', 'adamw' or 'dot' (scheme 'distill' only; kd_jax.train.optim.dot)
  c.optim.lr = 0.05
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 5e-4     # coupled (added to the gradient) for sgd, as in PyTorch; decoupled for adamw
  c.optim.schedule = "multistep"  # 'multistep', 'cosine' or 'constant'
  c.optim.milestones = (150, 180, 210)  # epochs at which multistep multiplies the lr by gamma
  c.optim.gamma = 0.1
  c.optim.warmup_epochs = 0
  # DOT (optim.name='dot'): SGD with momentum (momentum - dot_delta) for the task terms' gradient (ce,
  # supervised) and (momentum + dot_delta) for the distillation terms'; 0.075 is the reference's default.
  c.optim.dot_delta = 0.075

  # Multi-phase training (kd_jax.train.phases): a tuple of dicts with keys name, epochs, loss, optim
  # (overrides), trainable, teacher_batch_statistics; keys a phase omits come from the top level. () = one
  # phase made of config.loss, config.optim, config.epochs.
  c.phases = ()

  # 'bfloat16': student and teachers compute in bf16 with float32 parameters (the master copy the optimizer
  # updates) and BatchNorm statistics; every loss casts logits/features to float32 before softmax or
  # normalisation. 'float32' (default) is exact.
  c.compute_dtype = "float32"
  # Backward pass of the models' convolutions (kd_jax.backends.cpu.conv): 'auto' (when lowered for CPU the
  # blocked backward, or with cpu_conv_kernels='ynnpack' the matmul one; XLA's convolutions on GPUs and
  # TPUs), 'xla' (always XLA's), 'matmul' or 'blocked' (always that form). Same values up to float32
  # reassociation; only speed differs.
  c.conv_backward = "auto"
  # Which kernels run convolutions on CPU (kd_jax.backends.cpu.conv.compiler_options): 'auto' (oneDNN's
  # where kd_jax's oneDNN handlers build and pass a self-check, else XLA's; the run's log says which and
  # why, and its workdir records the choice so a resume keeps it: kd_jax.train.workdir.pin_cpu_conv_kernels;
  # KD_JAX_ONEDNN=0 makes it XLA's), 'xla' (XLA's own, which use every core; YNNPACK keeps matrix products
  # and reductions), 'ynnpack' (XLA's default in jax 0.10) or 'onednn' (oneDNN's, called from the compiled
  # program through XLA's FFI, forward and both gradients; needs oneDNN, `pip install -e '.[cpu]'` or
  # `apt-get install libdnnl-dev`, and a C++ compiler, and builds once: kd_jax.backends.cpu.onednn). The
  # same sums in every case, in another order (float32 products and accumulation; bf16 operands under
  # compute_dtype='bfloat16'); 'xla' is faster than 'ynnpack', and 'onednn' faster still where oneDNN is
  # installed (docs/benchmarks.md). Ignored on GPUs and TPUs.
  c.cpu_conv_kernels = "auto"

  # How parameters live on the `data` mesh: 'replicated' (every device holds the whole model) or 'fsdp'
  # (parameters, optimizer state and frozen teachers split across devices, each array along one dimension;
  # arrays under fsdp_min_size elements stay replicated). Same values up to float reassociation.
  c.sharding = ml_collections.ConfigDict()
  c.sharding.params = "replicated"
  c.sharding.fsdp_min_size = 1024

  c.batch_size = 64
  c.eval_batch_size = 256
  c.epochs = 240
  c.max_steps = 0                 # > 0 stops early after this many steps (smoke tests)
  c.log_every_steps = 50
  # Train steps per compiled call (a lax.scan over that many stacked batches; calls never cross an epoch end,
  # and a SIGTERM stops the run at the end of the current call). Same results as 1; it saves dispatches where
  # a step is so short that they dominate (small models, above all on GPUs: docs/benchmarks.md).
  c.steps_per_call = 1
  c.checkpoint_every_epochs = 1
  c.keep_checkpoints = 3
  c.progress_bar = True

  # Multi-process runs (kd_jax/train/distributed.py, docs/scaling.md): one process per host or TPU-VM worker,
  # all with the same config and workdir. All unset = single process. Unset fields fall back to the
  # KD_JAX_COORDINATOR_ADDRESS / KD_JAX_NUM_PROCESSES / KD_JAX_PROCESS_ID environment variables.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""  # 'host:port' of process 0, the same on every process
  c.distributed.num_processes = 0         # 0 = not given
  c.distributed.process_id = -1           # this process, in [0, num_processes); -1 = not given
  c.distributed.local_device_ids = ()     # devices this process uses (one process per GPU); () = all local ones
  c.distributed.auto_detect = False       # True: JAX fills unset fields on TPU pods, SLURM, Open MPI
  c.distributed.initialization_timeout = 300  # seconds to wait for every process to connect
  return c


def load_python_file(path: str, function: str):
  """Executes a Python experiment file and returns its function `function` (e.g. `get_config`)."""
  if not os.path.isfile(path):
    raise KDJaxError(f"Config file {path!r} does not exist.")
  spec = importlib.util.spec_from_file_location("kd_jax_user_config", path)
  module = importlib.util.module_from_spec(spec)
  # The file's folder is importable while it runs, so experiment configs can build on each other.
  sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
  try:
    spec.loader.exec_module(module)  # configs are Python and are executed: only run configs you trust
  finally:
    sys.path.pop(0)
  if not hasattr(module, function):
    raise KDJaxError(f"Config file {path!r} defines no {function}().")
  return getattr(module, function)


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Executes a Python config file and returns its `get_config()`.

  `path` may end in `:<argument>` (ml_collections' convention), which is passed as `get_config(argument)`:
  one file then serves several settings, e.g. `experiments/cifar100_energy_kd.py:res56_res20` for a
  teacher/student pair with its own reference hyper-parameters.
  """
  argument = None
  if not os.path.isfile(path) and ":" in path:
    path, argument = path.rsplit(":", 1)
  get_config = load_python_file(path, "get_config")
  if argument is None:
    config = get_config()
  elif not inspect.signature(get_config).parameters:
    raise KDJaxError(f"Config file {path!r} was given the argument {argument!r} (after ':') but its "
                     f"get_config() takes none: drop ':{argument}'.")
  else:
    config = get_config(argument)
  validate(config)
  return config


def set_value(config: ml_collections.ConfigDict, key: str, value) -> None:
  """`config.<key> = value` for a dotted key (`'optim.lr'`), as ablation scripts set values in a loop.

  Unlike `apply_overrides` it takes Python values, not text, and does not validate: call `validate` after.
  """
  node = config
  *parents, leaf = key.split(".")
  for part in parents:
    node = node[part]
  node[leaf] = value


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare string such as resnet8x4


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies `key.sub=value` overrides in place; unknown keys and wrong types raise `KDJaxError`.

  Values are Python literals (strings may be bare). `config.loss` is open: `loss.NAME={'weight': ...}`
  adds a term, `loss.kd.reduction='mean'` sets a hyper-parameter the
  config did not list (the distiller validates it), and a whole section can be replaced with a dict (`loss={'ce': {'weight': 1.0}}`).
  """
  for item in overrides:
    if "=" not in item:
      raise KDJaxError(f"Override {item!r} must look like key.sub=value.")
    key, text = item.split("=", 1)
    *parents, leaf = key.split(".")
    node, path = config, "config"
    for part in parents:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise KDJaxError(f"Unknown config key {path}.{part}. Valid keys of {path}: "
                         f"{', '.join(sorted(node.keys()))}.")
      node, path = node[part], f"{path}.{part}"
    value = _parse_value(text)
    if leaf not in node:
      if path in _OPEN_SECTIONS or path.startswith("config.loss."):
        # config.loss is open: a new term joins the sum, a new hyper-parameter is checked by its distiller;
        # optimizer overrides take any key of config.optim (checked by validate below).
        node[leaf] = value
        continue
      raise KDJaxError(f"Unknown config key {path}.{leaf}. Valid keys of {path}: {', '.join(sorted(node.keys()))}.")
    old = node[leaf]
    if isinstance(old, ml_collections.ConfigDict):
      if not isinstance(value, dict):
        raise KDJaxError(f"config {key} is a section; give a dict, e.g. --config.{key}=\"{{...}}\".")
      node[leaf] = ml_collections.ConfigDict(value)
      continue
    if isinstance(old, bool) != isinstance(value, bool) and old is not None:
      raise KDJaxError(f"config {key} expects {type(old).__name__}, got {text!r}.")
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      node[leaf] = value
    except TypeError as e:
      raise KDJaxError(f"config {key} expects {type(old).__name__}, got {text!r}.") from e
  validate(config)
  return config


# The string-valued settings and the values each accepts (the first is the default); validate() checks them
# and the modules that read them reuse these tuples. The CPU kernel settings are the backends' own.
CHOICES = {
    "task": ("classification", "rating", "super_resolution", "regression", "segmentation"),
    "data.regression_loss": ("l2", "l1"),
    "scheme": ("distill", "mutual", "adversarial"),
    "mutual_update": ("sequential", "simultaneous"),
    "optim.schedule": ("multistep", "cosine", "constant"),
    "optim.name": ("sgd", "adamw", "dot"),
    "compute_dtype": ("float32", "bfloat16"),
    "conv_backward": CONV_BACKWARDS,
    "cpu_conv_kernels": CPU_CONV_KERNELS,
    "sharding.params": ("replicated", "fsdp"),
    "teacher.calibration_split": ("val", "train"),
    "teacher.calibration_at_bound": ("error", "keep_one"),
    "teacher.self": ("", "ema", "snapshot"),
}


# Sections whose keys are overrides of config.optim (validated against its keys, any subset).
OPTIM_OVERRIDES = ("config.student.optim", "config.discriminators.optim", "config.discriminators.network_optim")
# Sections open to new keys: the loss terms (checked by their distillers) and the optimizer overrides.
_OPEN_SECTIONS = ("config.loss",) + OPTIM_OVERRIDES


def _check_keys(given: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, path: str) -> None:
  if path in OPTIM_OVERRIDES:
    schema = base_config().optim
  for key in given.keys():
    if key not in schema:
      raise KDJaxError(f"Unknown config key {path}.{key}. Valid keys of {path}: {', '.join(sorted(schema.keys()))}.")
    if isinstance(schema[key], ml_collections.ConfigDict) and path + "." + key != "config.loss":
      if not isinstance(given[key], ml_collections.ConfigDict):
        raise KDJaxError(f"{path}.{key} must be a section with keys {', '.join(sorted(schema[key].keys()))}.")
      _check_keys(given[key], schema[key], f"{path}.{key}")


def validate(config: ml_collections.ConfigDict, schema: Optional[ml_collections.ConfigDict] = None) -> None:
  """Rejects keys absent from `base_config()` (listing the valid ones) and out-of-range values."""
  _check_keys(config, schema or base_config(), "config")
  problems = []
  if config.get("batch_size", 1) <= 0:
    problems.append(f"batch_size must be > 0, got {config.batch_size}")
  if not isinstance(config.get("steps_per_call", 1), int) or config.get("steps_per_call", 1) < 1:
    problems.append(f"steps_per_call must be an integer >= 1, got {config.steps_per_call!r}")
  if config.get("epochs", 1) <= 0:
    problems.append(f"epochs must be > 0, got {config.epochs}")
  optim = config.get("optim", {})
  if optim.get("lr", 1.0) <= 0:
    problems.append(f"optim.lr must be > 0, got {optim.lr}")
  for key, allowed in CHOICES.items():
    section, _, name = key.rpartition(".")
    node = config.get(section, {}) if section else config
    if name in node and node[name] not in allowed:
      problems.append(f"{key} must be {one_of(allowed)}, got {node[name]!r}")
  if config.get("sharding", {}).get("fsdp_min_size", 0) < 0:
    problems.append(f"sharding.fsdp_min_size must be >= 0, got {config.sharding.fsdp_min_size}")
  dist = config.get("distributed", {})
  if dist.get("num_processes", 0) < 0:
    problems.append(f"distributed.num_processes must be >= 0 (0 = not given), got {dist.num_processes}")
  if dist.get("initialization_timeout", 1) <= 0:
    problems.append(f"distributed.initialization_timeout must be > 0, got {dist.initialization_timeout}")
  fields = config.get("teacher", {}).get("cache_fields", ("logits",))
  cacheable = ("logits", "embedding", "stages", "preact_stages")
  if isinstance(fields, str) or not all(f in cacheable for f in fields):
    problems.append(f"teacher.cache_fields must be a tuple of {', '.join(cacheable)}, got {fields!r}")
  if not config.get("teacher", {}).get("cache_max_gb", 1.0) > 0:
    problems.append(f"teacher.cache_max_gb must be > 0, got {config.teacher.cache_max_gb}")
  rate = config.get("teacher", {}).get("pruned_copy_rate", 0.0)
  if not 0.0 <= rate < 1.0:
    problems.append(f"teacher.pruned_copy_rate must be in [0, 1), got {rate}")
  val = config.get("data", {}).get("val_fraction", 0.0)
  if not (0.0 <= val < 1.0 or (val >= 1.0 and val == int(val))):
    problems.append(f"data.val_fraction must be in [0, 1) (or, for streamed data, a whole number of examples), "
                    f"got {val}")
  for key, low in (("image_size", 1), ("num_workers", 0), ("prefetch", 0)):
    value = config.get("data", {}).get(key, low)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      problems.append(f"data.{key} must be an integer >= {low}, got {value!r}")
  labeled = config.get("data", {}).get("labeled_fraction", 1.0)
  if not 0.0 < labeled <= 1.0:
    problems.append(f"data.labeled_fraction must be in (0, 1], got {labeled}")
  problems += _scheme_problems(config)
  problems += _self_teacher_problems(config)
  problems += _compression_problems(config)
  if problems:
    raise KDJaxError("Invalid config: " + "; ".join(problems) + ".")
  if config.get("phases"):
    from kd_jax.train.phases import resolve_phases  # late: kd_jax.train imports this module
    resolve_phases(config)
  problems = _dot_problems(config)
  if problems:
    raise KDJaxError("Invalid config: " + "; ".join(problems) + ".")


def compression_enabled(config: ml_collections.ConfigDict) -> bool:
  compression = config.get("compression", {})
  return bool(compression.get("sparsity", 0.0) or compression.get("weight_bits", 0))


def _compression_problems(config: ml_collections.ConfigDict) -> list:
  c = config.get("compression")
  if c is None or not compression_enabled(config):
    return []
  problems = []
  if config.teacher.get("self"):
    problems.append("config.compression cannot be combined with a self-teacher (teacher.self): the teacher would "
                    "average the pruning masks")
  if not 0.0 <= c.initial_sparsity <= c.sparsity < 1.0:
    problems.append(f"compression needs 0 <= initial_sparsity <= sparsity < 1, got initial_sparsity="
                    f"{c.initial_sparsity}, sparsity={c.sparsity}")
  if c.prune_structure not in ("unstructured", "filters"):
    problems.append(f"compression.prune_structure must be 'unstructured' or 'filters', got {c.prune_structure!r}")
  elif c.prune_structure == "filters" and c.weight_bits and c.weight_range == "lsq":
    problems.append("compression.prune_structure='filters' with weight_range='lsq' is not supported (the learned "
                    "per-channel step sizes would have to shrink with the filters): use weight_range='minmax'")
  if c.prune_every_steps < 1:
    problems.append(f"compression.prune_every_steps must be >= 1, got {c.prune_every_steps}")
  if c.prune_begin_epoch < 0:
    problems.append(f"compression.prune_begin_epoch must be >= 0, got {c.prune_begin_epoch}")
  if bool(c.weight_bits) != bool(c.activation_bits):
    problems.append(f"compression.weight_bits and activation_bits are both set (QAT) or both 0 (full precision); "
                    f"got {c.weight_bits} and {c.activation_bits}")
  return problems


def peer_specs(config: ml_collections.ConfigDict) -> list:
  """`config.peers` as `[(name, model, optim overrides)]`: 'peer1', 'peer2', ... in order."""
  specs = []
  for i, peer in enumerate(config.get("peers", ())):
    spec = {"model": peer} if isinstance(peer, str) else dict(peer)
    unknown = sorted(set(spec) - {"model", "optim"})
    if unknown or not isinstance(spec.get("model"), str):
      raise KDJaxError(f"config.peers[{i}] must be a model name or a dict {{'model': name, 'optim': {{...}}}}; "
                       f"got {peer!r}.")
    optim = dict(spec.get("optim", {}))
    bad = sorted(set(optim) - set(base_config().optim.keys()))
    if bad:
      raise KDJaxError(f"config.peers[{i}].optim has unknown key(s) {', '.join(bad)}. Valid keys: "
                       f"{', '.join(sorted(base_config().optim.keys()))}.")
    specs.append((f"peer{i + 1}", spec["model"], optim))
  return specs


def _scheme_problems(config: ml_collections.ConfigDict) -> list:
  scheme = config.get("scheme", "distill")
  peers = config.get("peers", ())
  if scheme == "distill":
    return [] if not peers else [f"config.peers is for the schemes 'mutual' and 'adversarial'; with scheme "
                                 f"'distill' set config.peers=() or choose a scheme"]
  problems = []
  teacher = config.get("teacher", {})
  has_teacher = bool(teacher.get("workdir") or teacher.get("extra_workdirs"))
  if scheme == "adversarial" and has_teacher:
    if peers:
      problems.append("scheme 'adversarial' trains either a ring of networks (config.peers) or one student "
                      "against a frozen teacher (config.teacher.workdir), not both: set config.peers=() or "
                      "config.teacher.workdir=''")
  elif not peers:
    problems.append(f"scheme {scheme!r} trains several networks: list the others in config.peers (at least one "
                    "model name, e.g. config.peers=('cnn_small',))"
                    + (" or give a frozen teacher in config.teacher.workdir" if scheme == "adversarial" else ""))
  else:
    peer_specs(config)
  if peers and has_teacher and scheme == "mutual":
    problems.append(f"scheme {scheme!r} trains its networks from scratch, without frozen teachers: set "
                    "config.teacher.workdir='' (or use scheme 'distill')")
  if config.get("phases"):
    problems.append(f"config.phases is for the scheme 'distill'; scheme {scheme!r} runs one phase")
  return problems


TASK_DISTILLERS = ("ce", "supervised")  # DOT's task loss; every other term of config.loss is distillation


def _optim_settings(config: ml_collections.ConfigDict) -> list:
  """`(where, optimizer settings, phase or None)` for every optimizer the config builds (overrides applied)."""
  from kd_jax.train.optim import with_overrides  # late: kd_jax.train imports this module
  from kd_jax.train.phases import resolve_phases
  if config.get("scheme", "distill") == "distill":
    return [(f"config.phases[{i}] ({p.name})" if config.get("phases") else "config.optim", p.optim, p)
            for i, p in enumerate(resolve_phases(config))]
  extra = [("config.student.optim", config.student.get("optim"))]
  extra += [(f"config.peers[{i}].optim", optim) for i, (_, _, optim) in enumerate(peer_specs(config))]
  extra += [(f"config.discriminators.{k}", config.discriminators.get(k)) for k in ("optim", "network_optim")]
  return [("config.optim", config.optim, None)] + [(where, with_overrides(config.optim, o), None) for where, o in extra]


def _dot_problems(config: ml_collections.ConfigDict) -> list:
  """DOT (optim.name='dot') splits one distillation step's gradient into its task and distillation parts:
  only under scheme 'distill', with both kinds of terms, every parameter group trained, plain momentum."""
  if "optim" not in config or "scheme" not in config:
    return []
  problems = []
  for where, optim, phase in _optim_settings(config):
    if optim.get("name") != "dot":
      continue
    if config.scheme != "distill":
      problems.append(f"{where}: optim.name='dot' (DOT) separates the task and distillation gradients of one "
                      f"student's step, which scheme {config.scheme!r} does not have: use config.scheme='distill' "
                      "for DOT, or optim.name='sgd' with this scheme")
      continue
    beta, delta = optim.momentum, optim.dot_delta
    if not (0.0 <= beta - delta < 1.0 and 0.0 <= beta + delta < 1.0):
      problems.append(f"{where}: DOT's momenta optim.momentum ∓ optim.dot_delta = {beta - delta:g}, {beta + delta:g} "
                      "must both lie in [0, 1) (the reference: momentum 0.9, dot_delta 0.075)")
    if optim.nesterov:
      problems.append(f"{where}: DOT uses plain momentum, as its reference code: set optim.nesterov=False")
    kinds = {spec.get("distiller", name) in TASK_DISTILLERS for name, spec in phase.loss.items()}
    if kinds != {True, False}:
      problems.append(f"{where}: DOT gives the task terms ({', '.join(TASK_DISTILLERS)}) and the distillation terms "
                      f"(every other one) separate momenta, and this loss ({', '.join(phase.loss.keys())}) has "
                      + ("no distillation term" if True in kinds else "no task term")
                      + ": add one, or use optim.name='sgd'")
    if not set(phase.trainable) >= {"student", "distiller"}:
      problems.append(f"{where}: DOT updates every parameter group; a phase that freezes some (trainable="
                      f"{tuple(phase.trainable)}) needs optim.name='sgd'")
  return problems


def _self_teacher_problems(config: ml_collections.ConfigDict) -> list:
  """A self teacher (teacher.self) replaces frozen teachers: it excludes their workdirs, cache and calibration."""
  teacher = config.get("teacher", {})
  kind = teacher.get("self", "")
  problems = []
  if not 0.0 <= teacher.get("ema_decay", 0.0) < 1.0:
    problems.append(f"teacher.ema_decay must be in [0, 1), got {teacher.ema_decay}")
  every = teacher.get("snapshot_every", 1)
  if isinstance(every, bool) or not isinstance(every, int) or every < 1:
    problems.append(f"teacher.snapshot_every must be an integer >= 1 (steps), got {every!r}")
  if not kind:
    return problems
  where = f"teacher.self={kind!r} makes the student its own teacher"
  if config.get("scheme", "distill") != "distill":
    problems.append(f"{where}, under scheme 'distill' only (scheme {config.scheme!r} has its own partners): set "
                    "config.scheme='distill' or config.teacher.self=''")
  clashes = [
      (teacher.get("workdir") or teacher.get("extra_workdirs"), "teacher.workdir='' and teacher.extra_workdirs=()"),
      (teacher.get("cache"), "teacher.cache=False (the self teacher changes every step)"),
      (teacher.get("calibrate"), "teacher.calibrate=False"),
      (teacher.get("pruned_copy_rate"), "teacher.pruned_copy_rate=0.0"),
      (config.get("data", {}).get("teacher_channels"), "data.teacher_channels=() (it sees the student's inputs)")]
  for clash, fix in clashes:
    if clash:
      problems.append(f"{where}; it replaces frozen teachers: set {fix}")
  return problems
