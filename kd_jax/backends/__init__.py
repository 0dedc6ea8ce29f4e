"""Hardware-specific kernels and compiler options, reached by the models through one hook, `Kernels`.

A model is built with a `Kernels` (its `kernels` field, `DEFAULT_KERNELS` unless given) and takes its
convolution and its fusion barrier from it:

    nn.Conv(..., conv_general_dilated=self.kernels.conv_general_dilated)
    pooled = jnp.mean(self.kernels.fusion_barrier(x), axis=(1, 2))

A run builds its `Kernels` once from the config (`kernels_for`) and passes it to every network it creates;
its compiled programs take `compiler_options_for(config)`. Nothing here reads global state while a model is
traced: the kernels a model uses are one of its (hashable) fields. The CPU forms themselves, and why they
exist, are in `kd_jax.backends.cpu.conv` and `kd_jax.backends.cpu.onednn`; GPUs and TPUs keep XLA's own
convolutions in every mode (`lax.platform_dependent`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import jax

from kd_jax.backends.cpu import conv as cpu_conv
from kd_jax.backends.cpu.conv import AUTO_MATMUL, AUTO_ONEDNN, CONV_BACKWARDS, CPU_CONV_KERNELS

__all__ = ["AUTO_MATMUL", "AUTO_ONEDNN", "CONV_BACKWARDS", "CPU_CONV_KERNELS", "DEFAULT_KERNELS", "Kernels",
           "compiler_options_for", "cpu_conv_kernels_for", "fusion_barrier", "kernels_for"]


@dataclasses.dataclass(frozen=True)
class Kernels:
  """The kernels a model's convolutions and pools use (frozen and hashable, so a Flax module field).

  Attributes:
    conv_mode: the resolved convolution mode (`kd_jax.backends.cpu.conv.resolve_conv_backward`): 'auto'
      (the blocked backward on CPU, XLA's convolutions elsewhere), 'xla', 'matmul', 'blocked',
      'auto-matmul' (the matmul backward on CPU, YNNPACK's kernels) or 'auto-onednn' (oneDNN on CPU).
  """

  conv_mode: str = "auto"

  def __post_init__(self):
    cpu_conv.validate_conv_backward(self.conv_mode, resolved=True)

  def conv_general_dilated(self, lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None,
                           rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                           batch_group_count: int = 1, precision=None, preferred_element_type=None) -> jax.Array:
    """`lax.conv_general_dilated` (same signature, same values) with this mode's backward pass and kernels:
    what `nn.Conv(conv_general_dilated=...)` takes."""
    return cpu_conv.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                         dimension_numbers, feature_group_count, batch_group_count, precision,
                                         preferred_element_type, mode=self.conv_mode)

  def fusion_barrier(self, x: jax.Array) -> jax.Array:
    """`fusion_barrier(x)`: models pass an eval-mode feature map through it before a pool."""
    return fusion_barrier(x)


def fusion_barrier(x: jax.Array) -> jax.Array:
  """The identity, which on CPU keeps XLA from handing the computation of `x` to YNNPACK together with a
  reduction that reads it (`kd_jax.backends.cpu.conv.ynnpack_fusion_barrier` says why and how). The same
  for every mode; code outside a model (the frozen teachers' outputs) calls it directly."""
  return cpu_conv.ynnpack_fusion_barrier(x)


# What a model built without kernels uses: 'auto' with XLA's CPU kernels (the blocked backward on CPU). Not
# the default config's, whose cpu_conv_kernels='auto' may pick oneDNN: that needs a build and a self-check,
# which importing a model must not trigger.
DEFAULT_KERNELS = Kernels()


def kernels_for(config: Any) -> Kernels:
  """The kernels of a run config's `conv_backward` and `cpu_conv_kernels`.

  With `cpu_conv_kernels='onednn'` (and `conv_backward='auto'`) the oneDNN handlers are built and
  registered here, so that a missing oneDNN stops the run before anything is traced; the KDJaxError says
  what to install. With 'auto' (the default) they are used where they build and pass their self-check, XLA's
  kernels otherwise (`cpu_conv_kernels_for`; a training run pins that choice in its workdir,
  `kd_jax.train.workdir.pin_cpu_conv_kernels`).
  """
  mode = cpu_conv.resolve_conv_backward(config.get("conv_backward", "auto"),
                                        config.get("cpu_conv_kernels", "auto"))
  return Kernels(mode)


def cpu_conv_kernels_for(config: Any, platform: Optional[str] = None) -> Tuple[str, str]:
  """`(kernels, why)`: the CPU kernels a config's `cpu_conv_kernels` runs ('xla', 'ynnpack' or 'onednn';
  'auto' resolved by `kd_jax.backends.cpu.conv.auto_cpu_conv_kernels`) and a phrase for the run's log."""
  kernels = cpu_conv.validate_cpu_conv_kernels(config.get("cpu_conv_kernels", "auto"))
  if kernels == "auto":
    return cpu_conv.auto_cpu_conv_kernels(platform)
  names = {"xla": "XLA", "ynnpack": "YNNPACK", "onednn": "oneDNN"}
  return kernels, f"{names[kernels]} (config.cpu_conv_kernels={kernels!r})"


def compiler_options_for(config: Any, platform: Optional[str] = None) -> Optional[Dict[str, str]]:
  """XLA compiler options for a program of a run with this config, compiled for `platform` (default: JAX's
  default backend): `kd_jax.backends.cpu.conv.compiler_options` of its `cpu_conv_kernels`."""
  return cpu_conv.compiler_options(config.get("cpu_conv_kernels", "auto"), platform)
