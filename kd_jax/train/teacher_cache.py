"""The teacher-output cache: the frozen teacher's outputs computed once per training example and reused.

A frozen teacher in eval mode is a fixed function of its input, so when the set of images it can be shown
is finite and small its outputs can be computed once, stored, and read back instead of recomputed every
step; a KD step then costs about one student step. That set is finite when there is no augmentation (one
view per example) or flip-only augmentation (two views: the original and its mirror, cached both; the step
picks the one `kd_jax.data.augment` chose, which `flip_decisions` reproduces). Random crops (81 offsets
x 2 flips at `crop_pad=4`) are not cached: the cache refuses them.

On disk an entry is `<dir>/<key>/` holding one `.npy` per cached array, `[N, V, ...]` (N examples in split
order, so row `i` belongs to `batch['index'] == i`; V views), and `meta.json`. `key` is a hash of everything
the outputs depend on: the teacher modules and the bytes of their variables, the compute dtype, the
split's images/labels/normalisation, the views and the cached fields. A changed checkpoint or dataset
gives a new key, so a stale entry is never read; under the default directory (`<workdir>/teacher_cache/`)
the stale entries are deleted once the new one is complete, while a shared `config.teacher.cache_dir`
keeps every entry, so runs of several students with one teacher build it once. What the key cannot see is
the code that computes the teacher (a kd_jax or jax upgrade, an edited model definition), so an entry is
checked before it is reused: its first evaluation batch is recomputed and every cached array compared
(`_REUSE_RTOL` of each array's largest magnitude: 1e-4 for float32, 3e-2 for 16-bit floats, well above
the float reassociation a compiler change brings and below what a changed computation does); an entry that
differs is replaced by a fresh build, with a message naming the array and the versions that wrote it.
An entry is built in a temporary directory and renamed into place when complete, so a crash never leaves a
half-written entry that looks finished. In a multi-process run every process computes its share of the pass and process 0
writes; the directory must be visible to all processes.

Logits are cached raw (before calibration): the step divides them by each teacher's temperature exactly
as `Teachers.__call__` does, and calibration can be fitted on them. Stage features are opt-in
(`config.teacher.cache_fields`) and sized before anything is computed, since 50 000 examples x stage
activations easily reach tens of GB.

What stays live: `Context.forward` (HE-DA's mixed images, R2KD's augmented copy) runs the teacher on images
that exist only inside the step; phases that run the teacher on batch statistics (AB's
`teacher_batch_statistics`) give batch-dependent outputs, so those phases run the teacher as usual.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import kd_jax
from kd_jax import backends
from kd_jax import data as kd_data
from kd_jax.distillers import Context, Distiller
from kd_jax.errors import KDJaxError
from kd_jax.models.outputs import ModelOutput
from kd_jax.train import sharding
from kd_jax.train.distributed import is_main_process
from kd_jax.train.teachers import TeacherOutput, Teachers

FIELDS = ("logits", "embedding", "stages", "preact_stages")


def _attribute(field: str) -> str:
  """The `ModelOutput` attribute a cache field holds: 'logits' is the classification prediction."""
  return "prediction" if field == "logits" else field
BATCH_PREFIX = "teacher_cache/"
_FORMAT = 1  # bump when the on-disk layout changes, so old entries are not read
# Largest |recomputed - stored| a reused entry may show, relative to the stored array's largest magnitude:
# for float32 (and wider) outputs, and for 16-bit ones (bfloat16, float16).
_REUSE_RTOL = {"float32": 1e-4, "16-bit": 3e-2}


class NotCachedError(KDJaxError):
  """A distiller read a teacher output the cache does not hold."""


class NotCached:
  """Stands in for a `ModelOutput` field the cache does not hold; any use of it raises `NotCachedError`.

  A pytree with no leaves, so distillers that map over teacher outputs still see one structure.
  """

  def __init__(self, field: str):
    self.field = field

  def _fail(self, *args, **kwargs):
    raise NotCachedError(
        f"A distiller reads the teacher's {self.field!r}, which the teacher-output cache does not hold: add "
        f"{self.field!r} to config.teacher.cache_fields, or set config.teacher.cache=False.")

  __getitem__ = __len__ = __iter__ = __array__ = __jax_array__ = _fail
  __add__ = __radd__ = __mul__ = __rmul__ = __sub__ = __rsub__ = __truediv__ = __matmul__ = _fail

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    self._fail()

  def __repr__(self) -> str:
    return f"NotCached({self.field!r})"


jax.tree_util.register_pytree_node(NotCached, lambda x: ((), x.field), lambda field, _: NotCached(field))


@dataclasses.dataclass(frozen=True)
class CacheLayout:
  """What the cache holds, static for the jitted step (hashable).

  Attributes:
    fields: cached `ModelOutput` fields ('logits' always).
    views: 1 (no augmentation) or 2 (view 0 original, view 1 mirrored left-right).
    num_stages: per teacher, how many entries its `stages` (and `preact_stages`) tuple has.
  """

  fields: Tuple[str, ...]
  views: int
  num_stages: Tuple[int, ...]

  def names(self) -> Tuple[Tuple[int, str, Optional[int]], ...]:
    """`(teacher, field, stage or None)` of every cached array, in a fixed order."""
    out = []
    for k, stages in enumerate(self.num_stages):
      for field in self.fields:
        if field in ("stages", "preact_stages"):
          out += [(k, field, i) for i in range(stages)]
        else:
          out.append((k, field, None))
    return tuple(out)

  @staticmethod
  def key(teacher: int, field: str, stage: Optional[int]) -> str:
    return f"{BATCH_PREFIX}{teacher}/{field}" + ("" if stage is None else f"/{stage}")

  def outputs(self, arrays: Mapping[str, jax.Array], temperatures: Sequence[float],
              mirror: Optional[jax.Array]) -> TeacherOutput:
    """The teacher output(s) of a batch from its gathered cache rows ([B, V, ...] each).

    `mirror` ([B] bool, from `flip_decisions`) picks view 1 where the augmentation mirrored the image;
    None means view 0. Logits are divided by the teachers' temperatures as `Teachers.__call__` does.
    """

    def view(x):
      if mirror is None:
        return x[:, 0]
      return jnp.where(mirror.reshape((-1,) + (1,) * (x.ndim - 2)), x[:, 1], x[:, 0])

    outs = []
    for k, (stages, temperature) in enumerate(zip(self.num_stages, temperatures)):
      values: Dict[str, Any] = {field: NotCached(field) for field in FIELDS}
      for field in self.fields:
        if field in ("stages", "preact_stages"):
          values[field] = tuple(view(arrays[self.key(k, field, i)]) for i in range(stages))
        else:
          values[field] = view(arrays[self.key(k, field, None)])
      out = ModelOutput(**{_attribute(f): v for f, v in values.items()})
      if temperature != 1.0:
        out = out.replace(prediction=out.prediction / temperature)
      outs.append(out)
    return outs[0] if len(outs) == 1 else tuple(outs)

  def mask(self, teacher_out: TeacherOutput) -> TeacherOutput:
    """`teacher_out` with the fields the cache lacks replaced by `NotCached` (for `check_reads`)."""
    missing = {_attribute(f): NotCached(f) for f in FIELDS if f not in self.fields}
    if isinstance(teacher_out, ModelOutput):
      return teacher_out.replace(**missing)
    return tuple(t.replace(**missing) for t in teacher_out)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses settings under which cached outputs would not be exact."""
  if config.data.crop_pad:
    raise KDJaxError(
        f"config.teacher.cache needs a fixed, small set of augmented views, but config.data.crop_pad="
        f"{config.data.crop_pad} draws random crops ({(2 * config.data.crop_pad + 1) ** 2} offsets per image): "
        "set config.data.crop_pad=0 (flip-only augmentation is cached exactly) or config.teacher.cache=False.")
  if config.teacher.pruned_copy_rate:
    raise KDJaxError(
        "config.teacher.cache cannot hold the pruned teacher copy of config.teacher.pruned_copy_rate: it runs on "
        "batch statistics, so its outputs depend on the whole batch. Set config.teacher.cache=False.")


def layout_for(config: ml_collections.ConfigDict, teachers: Teachers, variables: Sequence[Any],
               sample_images: np.ndarray, *, fields: Optional[Sequence[str]] = None,
               views: Optional[int] = None) -> Tuple[CacheLayout, Dict[str, jax.ShapeDtypeStruct]]:
  """The cache's layout and each array's per-example shape and dtype (abstract: no teacher pass).

  `fields` and `views` default to `config`'s: `config.teacher.cache_fields` plus 'logits', and two views
  under `config.data.flip`.
  """
  wanted = config.teacher.cache_fields if fields is None else fields
  fields = tuple(f for f in FIELDS if f == "logits" or f in wanted)
  if views is None:
    views = 2 if config.data.flip else 1
  shapes = jax.eval_shape(lambda v, x: tuple(m.apply(vi, x, train=False) for m, vi in zip(teachers.modules, v)),
                          variables, jax.ShapeDtypeStruct((1,) + tuple(sample_images.shape[1:]), jnp.float32))
  layout = CacheLayout(fields, views, tuple(len(s.stages) for s in shapes))
  per_example = {}
  for k, field, stage in layout.names():
    leaf = getattr(shapes[k], _attribute(field))
    leaf = leaf if stage is None else leaf[stage]
    per_example[layout.key(k, field, stage)] = jax.ShapeDtypeStruct((views,) + tuple(leaf.shape[1:]), leaf.dtype)
  return layout, per_example


def check_reads(distiller: Distiller, student, teachers: Teachers, variables: Sequence[Any],
                sample_batch: Mapping[str, np.ndarray], layout: CacheLayout) -> None:
  """Traces (abstractly, nothing runs) the distiller on cached teacher outputs; raises `NotCachedError`
  naming the field if it reads one the cache lacks, before any time is spent building the cache.

  Other tracing errors are left to the run's own initialisation, which reports them with more context.
  """

  def probe(batch, teacher_variables):
    rng = jax.random.PRNGKey(0)
    images = batch["image"]
    student_variables = student.init(rng, images, train=False)
    student_out = student.apply(student_variables, images, train=False)
    teacher_out = teachers(teacher_variables, images)
    distiller_variables = distiller.init(rng, student_out, teacher_out, batch)

    def forward(other, mask=None):
      del mask  # eval mode: no batch statistics
      return student.apply(student_variables, other, train=False), teachers(teacher_variables, other)

    distiller.loss(distiller_variables, student_out, layout.mask(teacher_out), batch,
                   Context(rng=rng, train=True, step=0, epoch=1, forward=forward))

  try:
    jax.eval_shape(probe, {k: jnp.asarray(v) for k, v in sample_batch.items()}, variables)
  except NotCachedError:
    raise
  except Exception:  # noqa: BLE001 - not a cache question; create_train_state reports it properly
    pass


def _hash_arrays(h, tree: Any) -> None:
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    leaf = np.asarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{leaf.dtype}|{leaf.shape}|".encode())
    h.update(np.ascontiguousarray(leaf).tobytes())


def fingerprint(teachers: Teachers, variables: Sequence[Any], split: kd_data.Split, layout: CacheLayout,
                compute_dtype: str) -> str:
  """A hash of everything the cached arrays depend on (see the module docstring)."""
  h = hashlib.blake2b(digest_size=16)
  h.update(json.dumps({"format": _FORMAT, "modules": [repr(m) for m in teachers.modules],
                       "compute_dtype": compute_dtype, "layout": dataclasses.asdict(layout)},
                      sort_keys=True).encode())
  _hash_arrays(h, list(variables))
  _hash_arrays(h, {"images": split.images, "labels": split.labels, "mean": split.mean, "std": split.std,
                   "scale": np.float64(split.scale)})
  return h.hexdigest()


def _storable(dtype: np.dtype) -> np.dtype:
  """The numpy dtype a `.npy` file holds for `dtype` (bfloat16 has no .npy descriptor: its raw bits)."""
  return np.dtype(np.uint16) if np.dtype(dtype).name == "bfloat16" else np.dtype(dtype)


def _array_file(name: str) -> str:
  return name[len(BATCH_PREFIX):].replace("/", "_") + ".npy"


class TeacherCache:
  """An open cache entry: memory-mapped arrays, gathered by example index on the host."""

  def __init__(self, directory: str, layout: CacheLayout, meta: dict, built: bool):
    self.directory = directory
    self.layout = layout
    self.meta = meta
    self.built = built  # True if this process computed the entry, False if it was read back
    self._arrays = {}
    for name, info in meta["arrays"].items():
      array = np.load(os.path.join(directory, _array_file(name)), mmap_mode="r")
      self._arrays[name] = (array, np.dtype(jnp.dtype(info["dtype"])))

  def __len__(self) -> int:
    return int(self.meta["examples"])

  def gather(self, indices: np.ndarray) -> Dict[str, np.ndarray]:
    """The cached rows of examples `indices` (a batch's 'index'), as extra batch fields."""
    idx = np.asarray(indices, np.int64)
    return {name: np.asarray(array[idx]).view(dtype) for name, (array, dtype) in self._arrays.items()}

  def logits(self, view: int = 0) -> np.ndarray:
    """Every teacher's raw (uncalibrated) logits of view `view` over the split: [K, N, C]."""
    return np.stack([np.asarray(self._arrays[self.layout.key(k, "logits", None)][0][:, view])
                     .view(self._arrays[self.layout.key(k, "logits", None)][1])
                     for k in range(len(self.layout.num_stages))])

  def report(self) -> dict:
    return {"key": os.path.basename(self.directory), "directory": self.directory, "built": self.built,
            "fields": list(self.layout.fields), "views": self.layout.views, "examples": len(self),
            "bytes": int(self.meta["bytes"]), "build_s": self.meta["build_s"]}


def _log(message: str) -> None:
  print(f"[kd_jax] teacher cache: {message}", flush=True)


def open_cache(config: ml_collections.ConfigDict, teachers: Teachers, variables: Sequence[Any],
               split: kd_data.Split, directory: str, mesh, *, fields: Optional[Sequence[str]] = None,
               views: Optional[int] = None, remove_stale: bool = True) -> TeacherCache:
  """The cache entry for `split` under `directory`, built (one eval-mode teacher pass) if absent, or if the
  entry there does not match a fresh pass over its first evaluation batch (`_recomputed_differs`).

  `fields`/`views` default to `config`'s (see `layout_for`); entries of `directory` with another key are stale (the
  teacher or the data changed) and are deleted after the new one is complete when `remove_stale`.
  Raises `KDJaxError` before computing anything if the entry would exceed `config.teacher.cache_max_gb`.
  """
  sample = split.get(np.arange(1))["image"]
  layout, per_example = layout_for(config, teachers, variables, sample, fields=fields, views=views)
  n = len(split)
  total = sum(n * int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in per_example.values())
  limit = config.teacher.cache_max_gb * 2**30
  if total > limit:
    raise KDJaxError(
        f"The teacher-output cache for fields {', '.join(layout.fields)} over {n} examples x {layout.views} "
        f"view(s) would take {total / 2**30:.1f} GiB, over config.teacher.cache_max_gb="
        f"{config.teacher.cache_max_gb}. Cache fewer fields (config.teacher.cache_fields=('logits',)), raise "
        "the limit, or set config.teacher.cache=False.")
  key = fingerprint(teachers, variables, split, layout, config.get("compute_dtype", "float32"))
  entry = os.path.join(directory, key)
  forward = _forward_fn(teachers, layout, mesh, backends.compiler_options_for(config))
  placed = sharding.replicate(tuple(variables), mesh)
  built = False
  exists = os.path.isfile(os.path.join(entry, "meta.json"))
  if exists:
    differs = _recomputed_differs(entry, forward, placed, split, config.eval_batch_size, mesh)
    if differs:
      _log(f"{key} does not hold what this code computes for the same teacher and data: {differs}. "
           "Rebuilding it.")
      _sync(f"kd_jax teacher cache check {key}")  # every process has read the entry before it goes
      if is_main_process():
        retired = f"{entry}.stale-{os.getpid()}"
        try:
          os.rename(entry, retired)
        except FileNotFoundError:  # another run sharing the directory retired it first
          pass
        shutil.rmtree(retired, ignore_errors=True)
      exists = False
  if not exists:
    os.makedirs(directory, exist_ok=True)
    stale = sorted(d for d in os.listdir(directory) if os.path.isfile(os.path.join(directory, d, "meta.json")))
    _log(f"computing {key} ({n} examples, {layout.views} view(s), fields {', '.join(layout.fields)}, "
         f"{total / 2**20:.1f} MiB)" + (f"; the teacher or data changed since {', '.join(stale)}" if stale else ""))
    _build(entry, forward, placed, teachers, split, layout, per_example, config.eval_batch_size, mesh)
    built = True
    if remove_stale and is_main_process():
      # Older entries, and temporary directories of builds that crashed.
      for old in os.listdir(directory):
        if old != key:
          shutil.rmtree(os.path.join(directory, old), ignore_errors=True)
  with open(os.path.join(entry, "meta.json")) as f:
    meta = json.load(f)
  if not built:
    _log(f"reusing {key} ({n} examples, {layout.views} view(s), fields {', '.join(layout.fields)})")
  return TeacherCache(entry, layout, meta, built)


def _forward_fn(teachers: Teachers, layout: CacheLayout, mesh, compiler_options: Optional[Dict[str, str]] = None):
  """The jitted eval-mode pass over a batch of images: every cached array of `layout`, [B, V, ...] each."""
  names = layout.names()

  def forward(v, images):
    views = [images, images[:, :, ::-1, :]][:layout.views]  # the mirror exactly as `augment` makes it
    arrays = {}
    for k, (module, vk) in enumerate(zip(teachers.modules, v)):
      outs = [module.apply(vk, x, train=False) for x in views]
      for kk, field, stage in names:
        if kk == k:
          leaves = [getattr(o, _attribute(field)) if stage is None else getattr(o, _attribute(field))[stage]
                    for o in outs]
          arrays[layout.key(k, field, stage)] = jnp.stack(leaves, axis=1)
    return arrays

  return jax.jit(forward, out_shardings=sharding.replicated(mesh), compiler_options=compiler_options)


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _recomputed_differs(entry: str, forward, placed, split: kd_data.Split, batch_size: int, mesh) -> Optional[str]:
  """None if the entry's rows of the first evaluation batch match `forward` recomputed on it (within
  `_REUSE_RTOL`), else what differs. Every process computes (the pass is collective) and decides alike."""
  with open(os.path.join(entry, "meta.json")) as f:
    meta = json.load(f)
  batch = next(kd_data.eval_batches(split, batch_size), None)
  if batch is None:
    return None
  real = int(batch["mask"].sum())
  fresh = jax.device_get(forward(placed, sharding.shard_batch({"image": batch["image"]}, mesh)["image"]))
  wrote = meta.get("versions", {})
  by = (f"kd_jax {wrote.get('kd_jax', '?')} and jax {wrote.get('jax', '?')} wrote it, this is kd_jax "
        f"{kd_jax.__version__} and jax {jax.__version__}")
  if sorted(fresh) != sorted(meta["arrays"]):
    return f"it holds arrays {sorted(meta['arrays'])}, this teacher gives {sorted(fresh)} ({by})"
  for name, info in meta["arrays"].items():
    dtype = np.dtype(jnp.dtype(info["dtype"]))
    stored = np.load(os.path.join(entry, _array_file(name)), mmap_mode="r")[:real]
    stored = np.asarray(stored).view(dtype).astype(np.float32)
    now = np.asarray(fresh[name][:real]).astype(np.float32)
    if stored.shape != now.shape:
      return f"{name} has rows of shape {stored.shape[1:]} there, {now.shape[1:]} now ({by})"
    rtol = _REUSE_RTOL["16-bit" if dtype.itemsize < 4 else "float32"]
    finite = np.isfinite(stored)
    if not np.array_equal(finite, np.isfinite(now)):
      return f"{name} is finite at other positions than the stored values ({by})"
    scale = float(np.max(np.abs(stored[finite]), initial=0.0))
    error = float(np.max(np.abs(now[finite] - stored[finite]), initial=0.0))
    relative = error / max(scale, np.finfo(np.float32).tiny)
    if relative > rtol:
      return (f"{name} of the first {real} examples is up to {error:.3g} away from the stored values, "
              f"{relative:.2g} of their largest magnitude {scale:.3g}, over the tolerance {rtol:g} ({by})")
  return None


def _build(entry: str, forward, placed, teachers: Teachers, split: kd_data.Split, layout: CacheLayout,
           per_example: Mapping[str, jax.ShapeDtypeStruct], batch_size: int, mesh) -> None:
  """One eval-mode pass (`forward`, on the replicated variables `placed`) over `split`, batches sharded like
  evaluation, streamed into `.npy` files."""
  start = time.time()
  # Every process computes (outputs are replicated to all); only process 0 writes, into a private temporary
  # directory renamed into place at the end.
  write = is_main_process()
  tmp = f"{entry}.tmp-{os.getpid()}"
  files = {}
  if write:
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, spec in per_example.items():
      files[name] = np.lib.format.open_memmap(os.path.join(tmp, _array_file(name)), mode="w+",
                                              dtype=_storable(spec.dtype), shape=(len(split),) + spec.shape)
  row = 0
  for batch in kd_data.eval_batches(split, batch_size):
    real = int(batch["mask"].sum())
    out = jax.device_get(forward(placed, sharding.shard_batch({"image": batch["image"]}, mesh)["image"]))
    for name, f in files.items():
      f[row:row + real] = np.asarray(out[name][:real]).view(f.dtype)
    row += real
  if write:
    total = 0
    for f in files.values():
      f.flush()
      total += f.nbytes
    del files
    meta = {"format": _FORMAT, "examples": len(split), "views": layout.views, "fields": list(layout.fields),
            "num_stages": list(layout.num_stages), "bytes": total, "build_s": round(time.time() - start, 3),
            "teachers": [repr(m) for m in teachers.modules],
            "versions": {"kd_jax": kd_jax.__version__, "jax": jax.__version__},
            "arrays": {name: {"shape": list(spec.shape), "dtype": jnp.dtype(spec.dtype).name}
                       for name, spec in per_example.items()}}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
      json.dump(meta, f, indent=2)
    try:
      os.rename(tmp, entry)
    except OSError:  # another run finished the same entry first; its content is the same
      shutil.rmtree(tmp, ignore_errors=True)
  _sync(f"kd_jax teacher cache {os.path.basename(entry)}")  # the others read what process 0 just renamed


def phase_uses_cache(phase, distiller: Distiller) -> bool:
  """Whether a phase's step reads the cache: it needs a teacher and does not run it on batch statistics."""
  return distiller.needs_teacher and not phase.teacher_batch_statistics


def _directory(config: ml_collections.ConfigDict, workdir: str, split_name: str) -> str:
  return os.path.join(config.teacher.cache_dir or os.path.join(workdir, "teacher_cache"), split_name)


def open_for_run(config: ml_collections.ConfigDict, teachers: Teachers, variables: Sequence[Any], dataset,
                 phases: Sequence[Any], distillers: Sequence[Distiller], student, sample_batch: Mapping[str, Any],
                 workdir: str, mesh) -> Optional[TeacherCache]:
  """The training split's cache for a run with `config.teacher.cache`, after checking it can be exact.

  Refuses crops and the pruned copy (`check_config`) and distillers reading uncached fields
  (`check_reads`) before computing anything. Phases on teacher batch statistics run their teachers live
  (said in the log); if no phase reads the cache, none is built.
  """
  check_config(config)
  users = [i for i, (p, d) in enumerate(zip(phases, distillers)) if phase_uses_cache(p, d)]
  for p, d in zip(phases, distillers):
    if d.needs_teacher and p.teacher_batch_statistics:
      _log(f"phase {p.name!r} runs its teachers on batch statistics (teacher_batch_statistics), so their outputs "
           "depend on the batch; that phase runs the teachers live.")
  if not users:
    return None
  layout, _ = layout_for(config, teachers, variables, dataset.train.get(np.arange(1))["image"])
  for i in users:
    check_reads(distillers[i], student, teachers, variables, sample_batch, layout)
  return open_cache(config, teachers, variables, dataset.train, _directory(config, workdir, "train"), mesh,
                    remove_stale=not config.teacher.cache_dir)


def calibration_logits(cache: TeacherCache, config: ml_collections.ConfigDict, teachers: Teachers,
                       variables: Sequence[Any], dataset, workdir: str, mesh) -> Optional[np.ndarray]:
  """Raw logits [K, N, C] of `config.teacher.calibration_split` for `calibrate_teachers`: the training
  cache's original view, or a logits-only entry of the validation split (built once, reused on resume).
  None for an empty validation split, which `calibrate_teachers` refuses with its own message."""
  if config.teacher.calibration_split == "train":
    return cache.logits(view=0)
  if len(dataset.val) == 0:
    return None
  val = open_cache(config, teachers, variables, dataset.val, _directory(config, workdir, "val"), mesh,
                   fields=("logits",), views=1, remove_stale=not config.teacher.cache_dir)
  return val.logits(view=0)
