"""PyTorch checkpoints in and out: teachers trained with torchvision, RepDistiller or mdistiller become kd_jax run
directories, and kd_jax networks become PyTorch state dicts.

    python -m kd_jax import-torch resnet32x4.pth --model resnet32x4 --workdir runs/t_resnet32x4 --dataset cifar100
    python -m kd_jax export-torch --workdir runs/student --output student.safetensors

`import_torch` writes what a finished kd_jax run exports (`model.json` and the orbax `model/` directory, see
`kd_jax.train.checkpoint.export_model`), so `config.teacher.workdir` and `kd_jax.load_model` take the result
like any other run. Many KD papers ship their teachers only as PyTorch files, and a teacher that has to be
retrained in JAX is a teacher whose numbers do not reproduce; converting the published weights does.

Every supported registered model (`TORCH_LAYOUTS`) computes what its PyTorch reference computes, parameter for
parameter, so a conversion is a renaming plus these layout changes:

  - conv weight OIHW (PyTorch) <-> kernel HWIO (Flax), grouped and depthwise convs included;
  - linear weight [out, in] <-> Dense kernel [in, out];
  - BatchNorm weight / bias / running_mean / running_var <-> scale / bias (params) and mean / var
    (batch_stats); PyTorch's `num_batches_tracked` has no counterpart (it only matters with momentum=None).

Numerical conventions the models already share with the references (checked to 1e-5 on every stage by
tests/test_import_torch.py): BatchNorm eps 1e-5; convolutions pad symmetrically by kernel_size // 2 (PyTorch's
`padding=1` for a 3x3 conv, not Flax's 'SAME', which pads only at the bottom/right for stride 2); max pools pad
with -inf, average pools count the zero padding. Inputs are NHWC here and NCHW in PyTorch. The importer does
not change any tensor's values: a name, a shape or a key set that does not fit is an error naming every
offending key with its shape, and nothing is written.

`.safetensors` files are read and written with `safetensors.numpy`, without PyTorch. Other files are PyTorch
pickles: reading or writing one imports torch (`pip install 'kd_jax[torch]'`), and reading uses
`torch.load(weights_only=True)`, so a file that holds anything but tensors and plain containers is refused
rather than executed.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from kd_jax.errors import KDJaxError

TorchKey = Callable[[Sequence[str]], str]
CIFAR_SHAPE = (32, 32, 3)
IMAGENET_SHAPE = (224, 224, 3)
SAFETENSORS_SUFFIX = ".safetensors"
BN_COUNTER = "num_batches_tracked"
# Keys a training script wraps the state dict under: RepDistiller and mdistiller save {'model': ...}, others
# 'state_dict' (Lightning and many research repos), 'model_state_dict' or 'net'.
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net")
DATA_PARALLEL_PREFIX = "module."


def _renaming(*rules: Tuple[str, Any]) -> TorchKey:
  """A key function: the Flax module path joined by '/', rewritten by `rules` ((regex, replacement) pairs
  applied in order with `re.sub`), '/' turned into '.', and PyTorch's leaf name appended."""
  from kd_jax.models.resnet_imagenet import torch_leaf_name
  compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]

  def key(path: Sequence[str]) -> str:
    collection, *modules, leaf = path
    name = "/".join(modules)
    for pattern, replacement in compiled:
      name = pattern.sub(replacement, name)
    return f"{name.replace('/', '.')}.{torch_leaf_name(collection, leaf)}"

  return key


def _torchvision_key(path: Sequence[str]) -> str:
  from kd_jax.models.resnet_imagenet import torchvision_key
  return torchvision_key(path)


def _mdistiller_mobilenetv1_key(path: Sequence[str]) -> str:
  from kd_jax.models.mobilenetv1 import mdistiller_key
  return mdistiller_key(path)


_STAGE_BLOCK = (r"\blayer(\d+)_(\d+)\b", r"layer\1.\2")
# RepDistiller's `models/resnetv2.py` (its CIFAR `ResNet50`) names the projection `shortcut`, the head `linear`.
_RESNETV2_KEY = _renaming(_STAGE_BLOCK, (r"\bdownsample_conv\b", "shortcut.0"), (r"\bdownsample_bn\b", "shortcut.1"),
                          (r"^fc$", "linear"))
# `models/wrn.py`: NetworkBlocks `block{s}` hold their blocks in a Sequential `layer`.
_WRN_KEY = _renaming((r"\bblock(\d+)_layer(\d+)\b", r"block\1.layer.\2"), (r"\bconv_shortcut\b", "convShortcut"))
# `models/vgg.py`: each block is one Sequential of conv, BN, ReLU, conv, BN (the last ReLU dropped), so conv i
# of a block sits at index 3i and its BN at 3i + 1; the head is `classifier`.
_VGG_KEY = _renaming((r"^block(\d+)_conv(\d+)$", lambda m: f"block{m[1]}.{3 * int(m[2])}"),
                     (r"^block(\d+)_bn(\d+)$", lambda m: f"block{m[1]}.{3 * int(m[2]) + 1}"),
                     (r"^fc$", "classifier"))
# `models/mobilenetv2.py`: stem and head are Sequentials (conv, BN, ReLU); block i of group g is
# `blocks.{g}.{i}` whose Sequential `conv` holds conv/BN k (k = 1..3) at 3(k - 1) and 3(k - 1) + 1.
_MOBILENETV2_KEY = _renaming(
    (r"^blocks(\d+)_(\d+)/(conv|bn)(\d)$",
     lambda m: f"blocks.{m[1]}.{m[2]}.conv.{3 * (int(m[4]) - 1) + (m[3] == 'bn')}"),
    (r"^conv1$", "conv1.0"), (r"^bn1$", "conv1.1"), (r"^conv2$", "conv2.0"), (r"^bn2$", "conv2.1"),
    (r"^fc$", "classifier.0"))
# `models/ShuffleNetv1.py`, `models/ShuffleNetv2.py`: stages `layer{s}` are Sequentials, the head is `linear`.
_SHUFFLENET_KEY = _renaming(_STAGE_BLOCK, (r"^fc$", "linear"))


@dataclasses.dataclass(frozen=True)
class TorchLayout:
  """How one registered kd_jax model is laid out in its PyTorch reference.

  Attributes:
    source: the PyTorch model whose `state_dict()` this is (for messages and the run's record).
    key: the PyTorch key of a Flax variable path `(collection, *modules, leaf)`.
    image_shape: the inputs the reference is trained on (HWC): the `image_shape` an import records when
      `--dataset` does not give one.
    note: what else to know when a file does not fit (variants kd_jax does not implement).
  """

  source: str
  key: TorchKey
  image_shape: Tuple[int, int, int] = CIFAR_SHAPE
  note: str = ""


_REPDISTILLER = "RepDistiller's / mdistiller's CIFAR models/"
_RESNET_NOTE = ("kd_jax's CIFAR ResNets are the BasicBlock ones of RepDistiller's models/resnet.py (its resnet8 ... "
                "resnet110, resnet8x4, resnet32x4); the Bottleneck variant (depth 9n+2) is not implemented.")
_WRN_NOTE = "kd_jax's WRNs have no dropout and the 3x3 kernels of RepDistiller's models/wrn.py."
_VGG_NOTE = ("kd_jax's VGGs are the BatchNorm variants (RepDistiller's vgg8_bn/vgg11_bn/vgg13_bn, which its "
             "model_dict calls vgg8/vgg11/vgg13); a VGG without BatchNorm, or torchvision's ImageNet VGG "
             "(features.N / classifier.N with three linear layers), is a different network.")
_SHUFFLE_NOTE = ("kd_jax's ShuffleNets are RepDistiller's CIFAR ShuffleV1 (groups 3, 240/480/960) and ShuffleV2 "
                 "(net_size 1: 116/232/464/1024); other widths or net sizes, and torchvision's ImageNet "
                 "ShuffleNetV2 (conv1.0, stage2.N.branch1...), are different networks that kd_jax does not "
                 "implement.")
_MOBILENETV2_NOTE = ("kd_jax's mobilenetv2 is RepDistiller's mobilenetv2_T_w(6, 1) and mobilenetv2_half its "
                     "mobile_half (mdistiller's MobileNetV2); torchvision's ImageNet MobileNetV2 (features.N...) "
                     "is a different network.")
_TORCHVISION_NOTE = ("kd_jax's imagenet_resnet* are torchvision's resnet18/34/50/101 (also mdistiller's ImageNet "
                     "ResNets); wide or ResNeXt variants are not implemented.")

TORCH_LAYOUTS: Dict[str, TorchLayout] = {
    **{f"resnet{d}": TorchLayout(_REPDISTILLER + f"resnet.py `resnet{d}`", _torchvision_key, note=_RESNET_NOTE)
       for d in (8, 14, 20, 26, 32, 44, 56, 110)},
    "resnet8x4": TorchLayout(_REPDISTILLER + "resnet.py `resnet8x4`", _torchvision_key, note=_RESNET_NOTE),
    "resnet32x4": TorchLayout(_REPDISTILLER + "resnet.py `resnet32x4`", _torchvision_key, note=_RESNET_NOTE),
    "resnet50": TorchLayout(_REPDISTILLER + "resnetv2.py `ResNet50`", _RESNETV2_KEY),
    **{f"imagenet_resnet{d}": TorchLayout(f"torchvision.models.resnet{d}", _torchvision_key, IMAGENET_SHAPE,
                                          _TORCHVISION_NOTE) for d in (18, 34, 50, 101)},
    "imagenet_mobilenetv1": TorchLayout("mdistiller's mdistiller/models/imagenet/mobilenetv1.py `MobileNetV1`",
                                        _mdistiller_mobilenetv1_key, IMAGENET_SHAPE),
    **{f"wrn_{d}_{k}": TorchLayout(_REPDISTILLER + f"wrn.py `wrn_{d}_{k}`", _WRN_KEY, note=_WRN_NOTE)
       for d, k in ((16, 1), (16, 2), (40, 1), (40, 2), (40, 4))},
    **{f"vgg{d}": TorchLayout(_REPDISTILLER + f"vgg.py `vgg{d}_bn`", _VGG_KEY, note=_VGG_NOTE) for d in (8, 11, 13)},
    "mobilenetv2": TorchLayout(_REPDISTILLER + "mobilenetv2.py `mobilenetv2_T_w(6, 1)`", _MOBILENETV2_KEY,
                               note=_MOBILENETV2_NOTE),
    "mobilenetv2_half": TorchLayout(_REPDISTILLER + "mobilenetv2.py `mobile_half`", _MOBILENETV2_KEY,
                                    note=_MOBILENETV2_NOTE),
    "shufflenetv1": TorchLayout(_REPDISTILLER + "ShuffleNetv1.py `ShuffleV1`", _SHUFFLENET_KEY, note=_SHUFFLE_NOTE),
    "shufflenetv2": TorchLayout(_REPDISTILLER + "ShuffleNetv2.py `ShuffleV2`", _SHUFFLENET_KEY, note=_SHUFFLE_NOTE),
}


def torch_layout(model: str) -> TorchLayout:
  """The PyTorch layout of registered model `model`; a `KDJaxError` listing the supported names otherwise."""
  if model not in TORCH_LAYOUTS:
    from kd_jax import models as kd_models
    known = "" if model in kd_models.MODELS else " (and is not a registered model either)"
    raise KDJaxError(f"Model {model!r} has no PyTorch layout in kd_jax{known}. Supported: "
                     f"{', '.join(sorted(TORCH_LAYOUTS))}. The other registered models either have no PyTorch "
                     "reference (the Pacemaker kernels, Moonshine's cheap convolutions) or a different task.")
  return TORCH_LAYOUTS[model]


@dataclasses.dataclass(frozen=True)
class _Slot:
  """One variable: where it lives in Flax and its shape on both sides."""
  path: Tuple[str, ...]
  flax_shape: Tuple[int, ...]
  torch_shape: Tuple[int, ...]


# Axis orders between the layouts, by rank: conv kernels HWIO <-> OIHW, Dense [in, out] <-> Linear [out, in].
_TO_TORCH = {4: (3, 2, 0, 1), 2: (1, 0)}
_FROM_TORCH = {4: (2, 3, 1, 0), 2: (1, 0)}


def _torch_shape(shape: Tuple[int, ...]) -> Tuple[int, ...]:
  axes = _TO_TORCH.get(len(shape))
  return tuple(shape) if axes is None else tuple(shape[a] for a in axes)


def _permuted(value: np.ndarray, orders: Dict[int, Tuple[int, ...]]) -> np.ndarray:
  value = np.asarray(value)
  axes = orders.get(value.ndim)
  return np.ascontiguousarray(value if axes is None else value.transpose(axes))


def to_torch(value: np.ndarray) -> np.ndarray:
  """A Flax variable in PyTorch's layout: conv kernels HWIO -> OIHW, Dense kernels transposed, the rest as is."""
  return _permuted(value, _TO_TORCH)


def from_torch(value: np.ndarray) -> np.ndarray:
  """A PyTorch tensor (as numpy) in Flax's layout: the inverse of `to_torch`."""
  return _permuted(value, _FROM_TORCH)


def torch_slots(model: str, num_classes: int, image_shape: Sequence[int] = CIFAR_SHAPE) -> Dict[str, _Slot]:
  """PyTorch key -> Flax path and shapes, for every variable of registered model `model` built for
  `num_classes` classes on `image_shape` (HWC) inputs. Shapes only: nothing is computed."""
  import jax
  import jax.numpy as jnp
  from flax import traverse_util
  from kd_jax import models as kd_models

  layout = torch_layout(model)
  module = kd_models.create_model(model, num_classes)
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False))
  slots: Dict[str, _Slot] = {}
  for path, leaf in traverse_util.flatten_dict(dict(shapes)).items():
    path = tuple(str(p) for p in path)
    key = layout.key(path)
    if key in slots:  # a key function that maps two variables to one key would silently drop one
      raise AssertionError(f"{model}: {'/'.join(path)} and {'/'.join(slots[key].path)} both map to {key}")
    slots[key] = _Slot(path, tuple(leaf.shape), _torch_shape(tuple(leaf.shape)))
  return slots


# ---------------------------------------------------------------------------------------------------------
# Reading and writing state dicts.


def _import_torch_module(why: str):
  try:
    import torch
  except ImportError as e:
    raise KDJaxError(f"{why} needs PyTorch, which is not installed: pip install 'kd_jax[torch]' (or use a "
                     f"{SAFETENSORS_SUFFIX} file, which converts without PyTorch).") from e
  return torch


def _import_safetensors_numpy():
  try:
    import safetensors.numpy
  except ImportError as e:
    raise KDJaxError(f"{SAFETENSORS_SUFFIX} files need the safetensors package: pip install 'kd_jax[torch]' "
                     "(or pip install safetensors).") from e
  return safetensors.numpy


def _is_tensor(value: Any) -> bool:
  return hasattr(value, "shape") and hasattr(value, "dtype")


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
  """The state dict inside what a training script saved: the object itself when its values are tensors,
  else its first `WRAPPER_KEYS` entry that is a mapping."""
  if not isinstance(obj, Mapping):
    raise KDJaxError(f"{path} holds a {type(obj).__name__}, not a state dict. Save `model.state_dict()` "
                     "(torch.save or safetensors) and import that file.")
  if obj and all(_is_tensor(v) for v in obj.values()):
    return obj
  for key in WRAPPER_KEYS:
    if isinstance(obj.get(key), Mapping):
      return _unwrap(obj[key], path)
  raise KDJaxError(f"{path} holds a dict with keys {sorted(map(str, obj))[:10]} but no state dict: neither are "
                   f"all its values tensors nor is there one under {', '.join(repr(k) for k in WRAPPER_KEYS)}. "
                   "Save `model.state_dict()` and import that file.")


def _as_numpy(value: Any) -> np.ndarray:
  """A torch tensor or numpy array as numpy; floating tensors as float32 (half and bfloat16 included, which
  numpy cannot hold or kd_jax does not keep as parameters)."""
  if isinstance(value, np.ndarray):
    return value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
  value = value.detach().cpu()
  return (value.float() if value.is_floating_point() else value).numpy()


def read_state_dict(path: str, prefix: Optional[str] = None) -> Dict[str, np.ndarray]:
  """The tensors of a PyTorch checkpoint as numpy arrays, keyed as the model's `state_dict()`.

  `.safetensors` files are read with `safetensors.numpy` (no PyTorch); anything else with
  `torch.load(weights_only=True)`. A state dict saved inside a dict (RepDistiller's and mdistiller's
  `{'model': state_dict, ...}`, or under 'state_dict', 'model_state_dict', 'net') is taken out of it;
  `module.` prefixes (from `nn.DataParallel`) are stripped when every key has one. With `prefix` (e.g.
  'student.' for a whole mdistiller distiller), only the keys starting with it are kept, without it.
  `num_batches_tracked` buffers are dropped.

  Raises:
    KDJaxError: the file is missing or unreadable, holds no state dict, or `prefix` matches no key.
  """
  if not os.path.isfile(path):
    raise KDJaxError(f"{path!r} is not a file: pass a PyTorch checkpoint (.pth, .pt, .safetensors, ...).")
  if path.endswith(SAFETENSORS_SUFFIX):
    try:
      raw: Mapping[str, Any] = _import_safetensors_numpy().load_file(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own errors for damaged files and bfloat16
      raise KDJaxError(f"Could not read {path} as safetensors ({e}). If it holds bfloat16 tensors, which numpy "
                       "cannot represent, save them as float32.") from e
  else:
    torch = _import_torch_module(f"Reading {path} (not {SAFETENSORS_SUFFIX})")
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle, zip and weights-only refusals all mean "cannot import"
      raise KDJaxError(f"Could not load {path} with torch.load(weights_only=True): {' '.join(str(e).split())[:400]}. "
                       "kd_jax reads only files of tensors and plain containers (it never unpickles arbitrary "
                       "objects); in PyTorch, load the model yourself and save `model.state_dict()`.") from e
    raw = _unwrap(obj, path)
  state = {str(k): v for k, v in raw.items()}
  non_tensors = [k for k, v in state.items() if not _is_tensor(v)]
  if non_tensors:
    raise KDJaxError(f"{path}: the state dict has entries that are not tensors: {non_tensors[:5]}.")
  if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
    state = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
  if prefix:
    selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not selected:
      heads = sorted({k.split(".", 1)[0] + "." for k in state})
      raise KDJaxError(f"No key of {path} starts with --prefix {prefix!r}; the keys start with {heads[:10]}.")
    state = selected
  return {k: _as_numpy(v) for k, v in state.items() if k.rsplit(".", 1)[-1] != BN_COUNTER}


def _shape(shape: Sequence[int]) -> str:
  return "[" + ", ".join(str(d) for d in shape) + "]"


def _classes_in(state: Mapping[str, np.ndarray], slots: Mapping[str, _Slot]) -> Optional[int]:
  """The class count the file's classifier weight has (its first dimension), or None if it has none."""
  fc = [k for k, s in slots.items() if s.path == ("params", "fc", "kernel")]
  if fc and fc[0] in state and state[fc[0]].ndim == 2:
    return int(state[fc[0]].shape[0])
  return None


def _with_classes(slots: Mapping[str, _Slot], classes: int) -> Dict[str, _Slot]:
  """`slots` of a model built for one class, for `classes` classes: only the classifier's output width
  depends on the class count (one trace of the model instead of two)."""
  out = {}
  for key, s in slots.items():
    if s.path[:2] == ("params", "fc"):
      flax_shape = s.flax_shape[:-1] + (classes,)
      s = _Slot(s.path, flax_shape, _torch_shape(flax_shape))
    out[key] = s
  return out


def _mismatches(state: Mapping[str, np.ndarray], slots: Mapping[str, _Slot]) -> List[str]:
  """Every key that does not fit, as text: keys only one side has first (they say most about a wrong layout),
  then keys with another shape."""
  problems = [f"{k} {_shape(state[k].shape)}: in the file but not in the model" for k in sorted(state)
              if k not in slots]
  problems += [f"{k} {_shape(slots[k].torch_shape)}: missing from the file" for k in sorted(slots) if k not in state]
  problems += [f"{k}: the file has {_shape(state[k].shape)}, the model expects {_shape(slots[k].torch_shape)}"
               for k in sorted(slots) if k in state and tuple(state[k].shape) != slots[k].torch_shape]
  return problems


def _describe(problems: Sequence[str], limit: int = 12) -> str:
  shown = "; ".join(problems[:limit])
  return shown + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


def convert_state_dict(state: Mapping[str, np.ndarray], model: str, *,
                       image_shape: Optional[Sequence[int]] = None, num_classes: Optional[int] = None,
                       what: str = "the state dict") -> Tuple[Dict[str, Any], int]:
  """Flax variables (`{'params': ..., 'batch_stats': ...}`, numpy float32) of registered model `model` from
  a PyTorch state dict in its reference's layout, and the class count.

  The class count is read from the file's classifier weight; `num_classes`, when given, must agree with it.
  Every key of the model must be in `state` with its shape, and every key of `state` in the model
  (`num_batches_tracked` excepted).

  Raises:
    KDJaxError: `model` has no PyTorch layout, or the keys or shapes do not fit; the message names each
      offending key with its shape (up to 12) and what kd_jax's model does not implement.
  """
  from flax import traverse_util

  layout = torch_layout(model)
  image_shape = tuple(layout.image_shape if image_shape is None else image_shape)
  slots = torch_slots(model, 1, image_shape)
  classes = _classes_in(state, slots)
  if classes is None:
    classes = num_classes
  elif num_classes is not None and classes != num_classes:
    raise KDJaxError(f"{what}'s classifier has {classes} classes but the dataset has {num_classes}.")
  if classes is None:
    fc = [k for k, s in slots.items() if s.path[:2] == ("params", "fc")]
    raise KDJaxError(f"{what} has no classifier weight ({', '.join(sorted(fc))}), so it is not a {layout.source} "
                     f"state dict: {_describe(_mismatches(state, slots))}. {layout.note}".strip())
  slots = _with_classes(slots, classes)
  problems = _mismatches(state, slots)
  if problems:
    raise KDJaxError(f"{what} does not fit kd_jax's {model!r} ({layout.source}, {classes} classes): "
                     f"{_describe(problems)}. {layout.note}".strip())
  flat = {s.path: from_torch(state[k]).astype(np.float32) for k, s in slots.items()}
  return traverse_util.unflatten_dict(flat), classes


def _umask() -> int:
  """The process's umask (reading it means setting it; it is put back at once)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def import_torch(checkpoint: str, model: str, workdir: str, *, dataset: str = "", prefix: Optional[str] = None
                 ) -> Dict[str, Any]:
  """Converts a PyTorch checkpoint into a kd_jax run directory that `config.teacher.workdir` and
  `kd_jax.load_model` accept; returns the `model.json` record it wrote.

  The run directory holds what a finished run exports (`model/` with the variables, `model.json` with the
  registered name, the class count, the input shape, the task) plus, in `model.json`'s `source`, the file's
  path, SHA-256 and PyTorch layout. It is written to a temporary directory beside `workdir` and renamed
  into place when complete, so a failed import leaves nothing that looks like a run.

  Args:
    checkpoint: a `.pth`/`.pt` (PyTorch pickle, read without executing code) or `.safetensors` file holding
      the state dict of the PyTorch model `TORCH_LAYOUTS[model].source`, possibly wrapped (see
      `read_state_dict`).
    model: a registered model name with a PyTorch layout (`TORCH_LAYOUTS`).
    workdir: the run directory to create; it must not exist, or be empty.
    dataset: the data the teacher was trained on, recorded in `model.json`. A name `kd_jax.data.DATASETS`
      knows ('cifar100', ...) also fixes the input shape and must have the classifier's class count; a name
      close to one of those ('cifar-100') is refused as a likely typo; any other name is recorded as given, with the input shape of the reference (32x32x3 for the CIFAR
      models, 224x224x3 for the ImageNet ones; only the channel count matters to the variables).
    prefix: keep only the keys that start with it, without it (e.g. 'student.').

  Raises:
    KDJaxError: unsupported model, unreadable file, keys or shapes that do not fit (each named with its
      shape), a class count that differs from the dataset's, or a `workdir` that holds something.
  """
  from kd_jax.data import DATASETS
  from kd_jax.train import checkpoint as ckpt

  layout = torch_layout(model)
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
    raise KDJaxError(f"{workdir} already exists and is not an empty directory; choose a new --workdir (an import "
                     "never overwrites a run).")
  spec = DATASETS.get(dataset) if dataset else None
  near = difflib.get_close_matches(dataset.lower(), list(DATASETS), n=1, cutoff=0.8) if dataset and spec is None else []
  if near:
    raise KDJaxError(f"--dataset {dataset!r} is not a dataset kd_jax knows, but close to {near[0]!r}; pass "
                     f"--dataset {near[0]} (known: {', '.join(sorted(DATASETS))}), or a name of your own that "
                     "is not so close to one of these.")
  image_shape = tuple(spec.image_shape) if spec is not None else layout.image_shape
  state = read_state_dict(checkpoint, prefix)
  variables, classes = convert_state_dict(state, model, image_shape=image_shape,
                                          num_classes=None if spec is None else spec.num_classes, what=checkpoint)
  info = {"model": model, "dataset": dataset, "task": "classification", "image_shape": list(image_shape),
          "step": 0, "network": "imported", "num_classes": classes,
          "source": {"format": "pytorch", "file": os.path.abspath(checkpoint), "sha256": _sha256(checkpoint),
                     "layout": layout.source, **({"prefix": prefix} if prefix else {})}}
  parent = os.path.dirname(workdir)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(workdir)}.import-", dir=parent)
  try:
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the teacher from other users
    ckpt.export_model(staging, variables, info)
    if os.path.isdir(workdir):
      os.rmdir(workdir)  # empty (checked above); rename needs the name free
    os.rename(staging, workdir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return info


def torch_state_dict(model: str, variables: Mapping[str, Any], *, step: int = 0) -> Dict[str, np.ndarray]:
  """The PyTorch state dict (numpy arrays, float32) of registered model `model`'s Flax `variables`, keyed and
  laid out as its reference's `state_dict()`, `num_batches_tracked` included (set to `step`, the run's
  update count, so `load_state_dict(strict=True)` accepts it)."""
  from flax import traverse_util

  layout = torch_layout(model)
  state: Dict[str, np.ndarray] = {}
  for path, value in traverse_util.flatten_dict(dict(variables)).items():
    key = layout.key(tuple(str(p) for p in path))
    state[key] = to_torch(np.asarray(value, np.float32))
    if key.endswith(".running_var"):
      state[key[:-len("running_var")] + BN_COUNTER] = np.asarray(step, np.int64)
  return state


def save_state_dict(state: Mapping[str, np.ndarray], output: str) -> None:
  """Writes `state` to `output`: safetensors for a `.safetensors` name (no PyTorch needed), else `torch.save`
  of a plain dict of tensors. Written to a temporary file beside `output`, then renamed over it."""
  if output.endswith(SAFETENSORS_SUFFIX):
    save_file = _import_safetensors_numpy().save_file
    write = lambda path: save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path)
  else:
    torch = _import_torch_module(f"Writing {output} (not {SAFETENSORS_SUFFIX})")
    write = lambda path: torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)
  directory = os.path.dirname(os.path.abspath(output))
  os.makedirs(directory, exist_ok=True)
  fd, staging = tempfile.mkstemp(prefix=f".{os.path.basename(output)}.", dir=directory)
  os.close(fd)
  try:
    write(staging)
    os.chmod(staging, 0o666 & ~_umask())  # mkstemp's 0600 would make the export private to its writer
    os.replace(staging, output)
  except BaseException:
    if os.path.exists(staging):
      os.remove(staging)
    raise


def export_torch(workdir: str, output: str) -> Dict[str, Any]:
  """Writes the network a finished kd_jax run exported (`workdir`, or `<workdir>/networks/<name>`) as a
  PyTorch state dict to `output` (`.safetensors`, or a `torch.save` file for any other name); returns the
  run's `model.json` record.

  The state dict loads with `load_state_dict(strict=True)` into the model's PyTorch reference
  (`TORCH_LAYOUTS[model].source`) and computes the same function (inputs NCHW, normalised as the run's
  data pipeline normalised them).

  Raises:
    KDJaxError: `workdir` is not a finished run, its model has no PyTorch layout, or it was pruned or
      quantised (the reference has no masks, fake quantisation or narrower blocks).
  """
  from kd_jax.train import checkpoint as ckpt

  _, variables, info = ckpt.load_model(workdir, with_info=True)
  name = info["model"]
  torch_layout(name)
  if info.get("compression") or ckpt.architecture_kwargs(info):
    raise KDJaxError(f"The run in {workdir!r} compressed its {name!r} (pruning masks, quantisation or pruned "
                     "filters), which the PyTorch reference cannot represent; export-torch writes uncompressed "
                     "networks only.")
  save_state_dict(torch_state_dict(name, variables, step=int(info.get("step", 0))), output)
  return info


def describe_import(info: Mapping[str, Any], workdir: str) -> str:
  """The CLI's summary of an import: what was converted, where it went, and how to use it."""
  dataset = f", dataset {info['dataset']!r}" if info.get("dataset") else ""
  return (f"Imported {info['source']['file']} ({info['source']['layout']}) as {info['model']!r}: "
          f"{info['num_classes']} classes, inputs {'x'.join(map(str, info['image_shape']))}{dataset}.\n"
          f"Run directory: {workdir}. Use it as a teacher with --config.teacher.workdir={workdir}, or load it with "
          f"kd_jax.load_model({workdir!r}).")
