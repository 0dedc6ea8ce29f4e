"""TAKD's plain CNNs ("plane" models): stacks of conv3x3-BN-ReLU and 2x2 max pools, then fully connected layers.

Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh, "Improved Knowledge Distillation via Teacher
Assistant", AAAI 2020, arXiv:1902.03393; reference `imirzadeh/Teacher-Assistant-Knowledge-Distillation`,
`plain_cnn_cifar.py` (`ConvNetMaker` and its `plane_cifar10_book` / `plane_cifar100_book`). DGKD (Son, Kang,
Choi, Han, "Densely Guided Knowledge Distillation using Multiple Teacher Assistants", ICCV 2021, code
`wonchulSon/DGKD`) uses the same networks. A network is a list of layer strings:

  - 'ConvN': 3x3 conv to N channels, padding 1, with a bias (PyTorch's default), then BN, then ReLU;
  - 'MaxPool': 2x2 max pool, stride 2;
  - 'FCN': a linear layer to N units; every FC but the last is followed by a ReLU, and the conv output is
    flattened before the first one. The last FC is the classifier (`fc`) and always has `num_classes`
    outputs.

Differences from the reference: the flatten is NHWC (PyTorch flattens NCHW), which permutes the first FC's
input rows and changes nothing else; a MaxPool whose input map is already smaller than 2 in H or W is
skipped, so the same networks run on the 8x8 digits data (on 32x32 inputs it never triggers and the
network is the reference's). Initialisation follows the zoo (Kaiming-normal fan-out convs, zero biases,
PyTorch's uniform weight init for the linear layers), not PyTorch's defaults.

Parameter counts on 32x32x3 inputs, CIFAR-100 book with 100 classes / CIFAR-10 book with 10 classes:
plane2 215,172 / 13,082, plane4 475,652 / 37,338, plane6 1,107,204 / 82,778, plane8 1,246,276 / 327,962,
plane10 2,931,460 / 2,487,850.
"""

from __future__ import annotations

import re
from typing import Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd_jax.backends import DEFAULT_KERNELS, Kernels
from kd_jax.errors import KDJaxError
from kd_jax.models.layers import conv, torch_default_init
from kd_jax.models.outputs import ModelOutput
from kd_jax.models.resnet_cifar import Dtype, batch_norm, classifier
from kd_jax.models.vgg import max_pool_2x2

Spec = Tuple[str, ...]

_C16, _C32, _C64, _C128, _C256 = "Conv16", "Conv32", "Conv64", "Conv128", "Conv256"
_P = "MaxPool"
# The reference's `plane_cifar10_book` and `plane_cifar100_book` (the last FC's size is num_classes).
PLANE_CIFAR10_BOOK: Dict[str, Spec] = {
    "2": (_C16, _P, _C16, _P, "FC10"),
    "4": (_C16, _C16, _P, _C32, _C32, _P, "FC10"),
    "6": (_C16, _C16, _P, _C32, _C32, _P, _C64, _C64, _P, "FC10"),
    "8": (_C16, _C16, _P, _C32, _C32, _P, _C64, _C64, _P, _C128, _C128, _P, "FC64", "FC10"),
    "10": (_C32, _C32, _P, _C64, _C64, _P, _C128, _C128, _P, _C256, _C256, _C256, _C256, _P, "FC128", "FC10"),
}
PLANE_CIFAR100_BOOK: Dict[str, Spec] = {
    "2": (_C32, _P, _C32, _P, "FC100"),
    "4": (_C32, _C32, _P, _C64, _C64, _P, "FC100"),
    "6": (_C32, _C32, _P, _C64, _C64, _P, _C128, _C128, "FC100"),  # no pool after the last group
    "8": (_C32, _C32, _P, _C64, _C64, _P, _C128, _C128, _P, _C256, _C256, _P, "FC64", "FC100"),
    "10": (_C32, _C32, _P, _C64, _C64, _P, _C128, _C128, _P, _C256, _C256, _C256, _C256, _P, "FC512",
           "FC100"),
}

_LAYER = re.compile(r"(Conv|FC)([0-9]+)|MaxPool")


def plane_book(num_classes: int) -> Dict[str, Spec]:
  """The reference's rule: the CIFAR-10 book for 10 classes, the CIFAR-100 book otherwise."""
  return PLANE_CIFAR10_BOOK if num_classes == 10 else PLANE_CIFAR100_BOOK


def parse_layers(layers: Sequence[str]) -> Tuple[Tuple[str, int], ...]:
  """`layers` as (kind, size) pairs, kind 'conv', 'pool' (size 0) or 'fc'.

  Raises:
    KDJaxError: an entry that is not 'ConvN', 'MaxPool' or 'FCN' (N a positive integer), no Conv or no FC,
      a Conv or MaxPool after an FC, or a MaxPool that does not follow a Conv.
  """
  if isinstance(layers, str):
    raise KDJaxError(f"plain CNN layers must be a sequence of layer strings, not the string {layers!r}.")
  parsed = []
  for i, entry in enumerate(layers):
    match = _LAYER.fullmatch(entry) if isinstance(entry, str) else None
    if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
      raise KDJaxError(f"plain CNN layer {i} is {entry!r}; each entry must be 'ConvN', 'MaxPool' or 'FCN' "
                       f"with N a positive integer (e.g. 'Conv32', 'FC100'). Got layers={tuple(layers)}.")
    kind = "pool" if match.group(1) is None else match.group(1).lower()
    parsed.append((kind, 0 if kind == "pool" else int(match.group(2))))
  kinds = [kind for kind, _ in parsed]
  problem = None
  if "conv" not in kinds:
    problem = "it has no Conv"
  elif "fc" not in kinds:
    problem = "it has no FC (the last FC is the classifier)"
  elif any(k != "fc" for k in kinds[kinds.index("fc"):]):
    problem = "a Conv or MaxPool comes after an FC"
  elif any(k == "pool" and (i == 0 or kinds[i - 1] != "conv") for i, k in enumerate(kinds)):
    problem = "a MaxPool does not follow a Conv"
  if problem:
    raise KDJaxError(f"plain CNN layers must be Conv/MaxPool entries, then FC entries, each MaxPool after a Conv; "
                     f"{problem}: layers={tuple(layers)}.")
  return tuple(parsed)


class PlainCNN(nn.Module):
  """A TAKD plain CNN built from a layer spec (see the module docstring for the syntax).

  A *group* is a run of Convs and the MaxPool that ends it (if any). A MaxPool whose input is smaller than
  2 in H or W is skipped (its group then ends at its last conv); this only happens on small inputs, e.g.
  plane10 on 8x8 digits, whose groups come out 4x4, 2x2, 1x1, 1x1.

  Outputs (`ModelOutput`):
    - `stages[i]`: the output of group i, i.e. of its MaxPool, or of its last conv's ReLU when no pool
      follows (or the pool is skipped); one entry per group.
    - `preact_stages[i]`: the BN output of group i's last conv (before its ReLU), max-pooled as the stage
      is, so it has the stage's shape and `stages[i] == relu(preact_stages[i])` exactly (a max pool and
      a ReLU commute). The network computes the group output that way round: pool, then ReLU.
    - `embedding`: the classifier's input, the last hidden FC's ReLU output, or the flattened (NHWC) conv
      output when the spec has a single FC.
  A [B, H, W] input is treated as one channel.

  Submodules: `conv{i}` / `bn{i}` for the i-th conv (from 0), `fc_hidden{j}` for the hidden FCs and `fc`
  for the classifier.

  Attributes:
    num_classes: classifier outputs; the last FC entry of `layers` must have this size.
    layers: the layer spec, e.g. `PLANE_CIFAR100_BOOK["4"]`.
    dtype: computation dtype (pass jnp.bfloat16 for mixed precision).
    param_dtype: parameter dtype.
    kernels: the convolutions' and pools' kernels (`kd_jax.backends.Kernels`; a run passes its own).
  """

  num_classes: int
  layers: Spec = PLANE_CIFAR10_BOOK["2"]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernels: Kernels = DEFAULT_KERNELS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
    spec = parse_layers(self.layers)
    if spec[-1][1] != self.num_classes:
      raise KDJaxError(f"the last FC of a plain CNN is its classifier and must have num_classes = "
                       f"{self.num_classes} outputs; got {self.layers[-1]!r}.")
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4:
      raise KDJaxError(f"PlainCNN expects NHWC images [B, H, W, C] (or [B, H, W]); got shape {x.shape}.")
    dt, pdt, k = self.dtype, self.param_dtype, self.kernels
    stages, preacts = [], []
    preact = None  # the last conv's BN output while a group is open

    def close_group(preact: jax.Array) -> jax.Array:
      out = nn.relu(preact)
      stages.append(out)
      preacts.append(preact)
      return out

    n_conv = n_hidden = 0
    fcs_left = sum(kind == "fc" for kind, _ in spec)
    for kind, size in spec:
      if kind == "conv":
        if preact is not None:
          x = nn.relu(preact)
        x = conv(size, 3, use_bias=True, dtype=dt, param_dtype=pdt, kernels=k, name=f"conv{n_conv}")(x)
        preact = batch_norm(train, dt, pdt, f"bn{n_conv}")(x)
        n_conv += 1
      elif kind == "pool":
        if preact.shape[1] >= 2 and preact.shape[2] >= 2:
          preact = max_pool_2x2(preact, train, k)
        x, preact = close_group(preact), None
      else:
        if preact is not None:
          x, preact = close_group(preact), None
        if x.ndim == 4:
          x = x.reshape((x.shape[0], -1))
        fcs_left -= 1
        if fcs_left:
          x = nn.relu(nn.Dense(size, kernel_init=torch_default_init, bias_init=nn.initializers.zeros,
                               dtype=dt, param_dtype=pdt, name=f"fc_hidden{n_hidden}")(x))
          n_hidden += 1
    embedding = x
    logits = classifier(self.num_classes, dt, pdt)(embedding)
    return ModelOutput(prediction=logits, stages=tuple(stages), preact_stages=tuple(preacts),
                       embedding=embedding)


def _with_classes(layers: Sequence[str], num_classes: int) -> Spec:
  """`layers` (validated) with the last FC's size replaced by `num_classes`."""
  parse_layers(layers)
  return tuple(layers[:-1]) + (f"FC{num_classes}",)


def plain_cnn(num_classes: int, *, layers: Sequence[str], dtype: Dtype = jnp.float32,
              param_dtype: Dtype = jnp.float32, kernels: Kernels = DEFAULT_KERNELS) -> PlainCNN:
  """A plain CNN from a TAKD layer spec, e.g. `layers=("Conv32", "MaxPool", "FC100")`; the last FC's size
  is replaced by `num_classes`."""
  return PlainCNN(num_classes=num_classes, layers=_with_classes(layers, num_classes), dtype=dtype,
                  param_dtype=param_dtype, kernels=kernels)


def describe(layers: Sequence[str]) -> str:
  """A compact form of a spec: conv widths, M for a max pool, FCN for a hidden FC and FC for the classifier,
  e.g. '32-M-32-M-FC'."""
  words = [e[4:] if e.startswith("Conv") else "M" if e == "MaxPool" else e for e in layers]
  return "-".join(words[:-1] + ["FC"])


def _named(depth: str):
  def constructor(num_classes: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                  kernels: Kernels = DEFAULT_KERNELS) -> PlainCNN:
    return plain_cnn(num_classes, layers=plane_book(num_classes)[depth], dtype=dtype, param_dtype=param_dtype,
                     kernels=kernels)

  constructor.__name__ = constructor.__qualname__ = f"plane{depth}"
  constructor.__doc__ = (f"TAKD plain CNN, CIFAR-100 book: {describe(PLANE_CIFAR100_BOOK[depth])}. For 10 "
                         f"classes TAKD's CIFAR-10 book: {describe(PLANE_CIFAR10_BOOK[depth])} (TAKD's and "
                         f"DGKD's `plane{depth}`; conv widths, M = 2x2 max pool).")
  return constructor


plane2 = _named("2")
plane4 = _named("4")
plane6 = _named("6")
plane8 = _named("8")
plane10 = _named("10")
