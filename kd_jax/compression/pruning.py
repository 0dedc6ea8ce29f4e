"""Weight pruning on parameter pytrees: pure functions, params (and masks) in, params (and masks) out.

Three families, all usable with any distiller and scheme because they only touch parameter pytrees:

  - One-shot magnitude pruning without masks (`prune_by_magnitude`): R2KD's pruned teacher copy (Kim et
    al., arXiv:2311.13934; reference Seonghak35/R2KD, `mdistiller/engine/utils.py::unstructured_pruning`).
  - Unstructured magnitude masks (`magnitude_masks`, layer-wise or global), the gradual polynomial schedule
    of Zhu & Gupta (`polynomial_sparsity`, `is_update_step`, `gradual_masks`) and the update that keeps
    pruned weights at zero through the optimizer (`masked_update`, `keep_pruned`).
  - Structured filter pruning of the CIFAR ResNets' BasicBlocks (Li et al., `filter_masks`, `prune_filters`),
    masked or physically removed.

These serve the studies that combine KD with pruning (Park, Yoo, Kwak, "On the Orthogonality of Knowledge
Distillation with Other Techniques: From an Ensemble Perspective", arXiv:2009.04120) and AB's gradual
pruning (Heo, Lee, Yun, Choi, "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
Neurons", AAAI 2019, arXiv:1811.03233).

Mask convention (every function here reads and writes it): `masks` is a pytree with exactly the structure
of `params`, every leaf a boolean array that broadcasts against its parameter, True = kept. A leaf that is
pruned (or may be) has a mask of the parameter's own shape; every other leaf has a scalar `True`
(`jnp.ones((), bool)`). So `jax.tree.map(f, params, masks)` always lines up, the masks jit, shard (replicate)
and checkpoint like any other state, and the scalars cost nothing.

Prunable leaves (unstructured): leaves named `kernel` with ndim >= 2 (Flax `Conv` HWIO and `Dense` [in, out]
kernels) whose '/'-joined path (e.g. `layer1_0/conv1/kernel`) matches none of the `exclude` regular
expressions (`re.search`). Biases and BatchNorm parameters are never pruned by magnitude.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kd_jax.errors import KDJaxError, one_of

SCOPES = ("layer", "global")
Sparsity = Union[float, jax.Array]


# ----------------------------------------------------------------------------------------------------------
# Paths and leaves.
# ----------------------------------------------------------------------------------------------------------

def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(path) -> str:
  """The '/'-joined names of a `jax.tree_util` key path, e.g. 'layer1_0/conv1/kernel'."""
  return "/".join(_key_name(k) for k in path)


def _is_kernel(path, leaf) -> bool:
  return bool(path) and _key_name(path[-1]) == "kernel" and getattr(leaf, "ndim", 0) >= 2


def _compile_exclude(exclude: Union[str, Sequence[str]]) -> List[re.Pattern]:
  patterns = (exclude,) if isinstance(exclude, str) else tuple(exclude)
  compiled = []
  for p in patterns:
    try:
      compiled.append(re.compile(p))
    except (re.error, TypeError) as e:
      raise KDJaxError(f"pruning exclude pattern {p!r} is not a valid regular expression ({e}); pass regexes "
                       "matched against '/'-joined parameter paths, e.g. exclude=('^conv1/', '^fc/').") from e
  return compiled


def prunable_paths(params: Any, exclude: Union[str, Sequence[str]] = ()) -> List[str]:
  """The '/'-joined paths of the leaves `magnitude_masks` may prune, in flattening (path-sorted) order."""
  patterns = _compile_exclude(exclude)
  return [path_str(path) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
          if _is_kernel(path, leaf) and not any(r.search(path_str(path)) for r in patterns)]


def _kept_scalar() -> jax.Array:
  return jnp.ones((), bool)


def _map_with_masks(fn, params: Any, masks: Any, what: str) -> Any:
  try:
    return jax.tree.map(fn, params, masks)
  except (ValueError, TypeError) as e:
    raise KDJaxError(f"{what}: the masks do not have the structure of the parameters ({e}). Build the masks "
                     "from the same parameter tree (magnitude_masks(params, ...) or filter_masks(params, ...)), "
                     "and pass `variables['params']`, not the whole variables dict.") from e


# ----------------------------------------------------------------------------------------------------------
# One-shot magnitude pruning without masks (R2KD), kept as it was.
# ----------------------------------------------------------------------------------------------------------

def num_to_prune(size: int, rate: float) -> int:
  """How many of `size` entries `prune_by_magnitude` zeroes: `round(rate·size)` (Python's round, half to
  even), the count `torch.nn.utils.prune.l1_unstructured(amount=rate)` uses for a float amount."""
  if not 0.0 <= rate <= 1.0:
    raise KDJaxError(f"pruning rate (sparsity) must be in [0, 1], got {rate}; pass the fraction of weights to "
                     "zero, e.g. 0.5 for half.")
  return int(round(rate * size))


def prune_kernel(kernel: jax.Array, rate: float) -> jax.Array:
  """Zeroes exactly `num_to_prune(kernel.size, rate)` entries of one array: those with the smallest |w|.

  Ties in |w| at the threshold are broken by flat (row-major) index, lowest first (a stable sort), so the
  count is always exact; zeros already present count as the smallest magnitudes.
  """
  k = num_to_prune(kernel.size, rate)
  if k == 0:
    return kernel
  keep = _keep_smallest_out(jnp.abs(kernel.reshape(-1)).astype(jnp.float32), k)
  return jnp.where(keep, kernel.reshape(-1), jnp.zeros((), kernel.dtype)).reshape(kernel.shape)


def prune_by_magnitude(params: Any, rate: float = 0.1) -> Any:
  """Per-layer unstructured L1 (magnitude) pruning of every conv and dense kernel of a parameter pytree.

  In each leaf named `kernel` with ndim ≥ 2 (Flax `Conv`, `ConvTranspose`, `Dense`: HWIO or [in, out]), the
  `round(rate · size)` entries with the smallest |w| are set to zero, layer by layer (not a global
  threshold); biases, BatchNorm scales/offsets and any other leaf are returned unchanged. The zeros are
  simply values of the returned pytree: there is no mask, nothing re-grows them unless it is trained.
  Equals `apply_masks(params, magnitude_masks(params, rate))`.

  This is what R2KD does to its teacher copy (Kim et al., "Robustness-Reinforced Knowledge Distillation
  with Correlation Distance and Network Pruning", IEEE TKDE 2024, arXiv:2311.13934; reference
  `engine/utils.py::unstructured_pruning`: `torch.nn.utils.prune.l1_unstructured` on every Conv2d and
  Linear weight with `PRUNE.RATE = 0.1`, then `prune.remove`, no fine-tuning). The count `round(rate·n)`
  is torch's; ties at the threshold go to the lowest flat index (torch's `topk` leaves that unspecified).

  Args:
    params: a parameter pytree (e.g. `variables['params']`); pass only params, not `batch_stats`.
    rate: fraction in [0, 1] of each kernel to zero (0.1 in R2KD).

  Raises:
    KDJaxError (a ValueError): `rate` outside [0, 1].
  """
  num_to_prune(0, rate)  # validates the rate
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: prune_kernel(leaf, rate) if _is_kernel(path, leaf) else leaf, params)


def sparsity(params: Any) -> float:
  """Fraction of exact zeros over all kernels (leaves named `kernel`, ndim ≥ 2) of a pytree."""
  leaves = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if _is_kernel(path, leaf)]
  total = sum(int(leaf.size) for leaf in leaves)
  zeros = sum(int(jnp.sum(leaf == 0)) for leaf in leaves)
  return zeros / total if total else 0.0


# ----------------------------------------------------------------------------------------------------------
# Unstructured magnitude masks.
# ----------------------------------------------------------------------------------------------------------

def _is_static(value) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _prune_count(size: int, sparsity_: Sparsity):
  """`round(s·size)`, half to even: a Python int for a Python `s`, else an int32 array (traced `s`)."""
  if _is_static(sparsity_):
    return num_to_prune(size, float(sparsity_))
  s = jnp.clip(jnp.asarray(sparsity_, jnp.float32), 0.0, 1.0)
  # jnp.round is half-to-even like Python's round; in float32, so exact while s·size is (size < 2**24).
  return jnp.round(s * size).astype(jnp.int32)


def _keep_smallest_out(score: jax.Array, k) -> jax.Array:
  """Boolean keep-mask over a flat `score`: False for the `k` entries of lowest score, ties to the lowest
  index. Ranks (the inverse of a stable argsort) rather than `order[:k]`, so `k` may be traced."""
  n = score.shape[0]
  order = jnp.argsort(score, stable=True)
  rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  return rank >= k


def magnitude_masks(params: Any, sparsity: Sparsity, *, scope: str = "layer",
                    exclude: Union[str, Sequence[str]] = (), previous: Optional[Any] = None) -> Any:
  """Unstructured magnitude-pruning masks: the smallest |w| of the prunable kernels are masked out.

  With `n_l` entries in prunable kernel `l` and `N = Σ_l n_l`:
    - scope='layer': every prunable kernel loses exactly `round(s·n_l)` entries, its own smallest |w|;
    - scope='global': exactly `round(s·N)` entries over all prunable kernels together, those below one
      magnitude threshold (kernels with larger weights keep more of them).
  `round` is Python's (half to even), as `num_to_prune` and torch's `l1_unstructured`. Ordering key, lowest
  pruned first: |w|, then the kernel's position in the flattened (path-sorted) tree, then the flat
  row-major index inside the kernel; so the count is exact and the choice deterministic under ties. Zeros
  already present have |w| = 0 and so go first; entries masked out in `previous` rank below everything, so
  while `s` does not decrease they stay masked (gradual pruning never revives a weight).

  Prunable: leaves named `kernel` with ndim ≥ 2 whose '/'-joined path matches none of `exclude`
  (`re.search`). The default excludes nothing; the usual choice for a CIFAR ResNet or WRN keeps the stem
  conv and the classifier dense, `exclude=('^conv1/', '^fc/')`: they hold few weights (3·3·3·16 = 432 in
  the stem) and every one of them matters, the stem seeing the raw pixels and the classifier every class.

  Runs under `jax.jit`: `sparsity` may be a Python float (static: the counts are Python ints) or a traced
  scalar, e.g. `polynomial_sparsity(step, ...)` inside a step (the counts are then `round(s·n)` computed in
  float32). Uses one stable argsort per kernel (per tree for 'global'), no loop over elements.

  Args:
    params: a parameter pytree (`variables['params']`).
    sparsity: the fraction s in [0, 1] of prunable entries to mask out.
    scope: 'layer' or 'global'.
    exclude: regular expressions (one string or a sequence) of paths not to prune.
    previous: masks from an earlier call (same `params` structure) whose masked-out entries go first.

  Returns:
    Masks in this module's convention (see the module docstring): a bool array of the kernel's shape for
    every prunable kernel, a scalar True for every other leaf.

  Raises:
    KDJaxError: `scope` unknown, a Python `sparsity` outside [0, 1], an invalid regex, or `previous` not
      shaped like `params`' masks.
  """
  if scope not in SCOPES:
    raise KDJaxError(f"magnitude_masks: scope must be {one_of(SCOPES)}; got scope={scope!r}.")
  if _is_static(sparsity):
    num_to_prune(0, float(sparsity))
  patterns = _compile_exclude(exclude)
  with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
  prunable = [i for i, (path, leaf) in enumerate(with_path)
              if _is_kernel(path, leaf) and not any(r.search(path_str(path)) for r in patterns)]
  prev = None
  if previous is not None:
    try:
      prev = treedef.flatten_up_to(previous)
    except (ValueError, TypeError) as e:
      raise KDJaxError(f"magnitude_masks: `previous` does not have the structure of params ({e}); pass masks "
                       "returned by magnitude_masks for the same parameter tree.") from e

  def score(i: int) -> jax.Array:
    leaf = with_path[i][1]
    s = jnp.abs(leaf).astype(jnp.float32).reshape(-1)
    if prev is not None:
      # Already pruned: below every magnitude (|w| >= 0), ties among them by position as usual.
      kept = jnp.broadcast_to(jnp.asarray(prev[i], bool), leaf.shape).reshape(-1)
      s = jnp.where(kept, s, -1.0)
    return s

  out = [_kept_scalar() for _ in with_path]
  if scope == "layer":
    for i in prunable:
      leaf = with_path[i][1]
      out[i] = _keep_smallest_out(score(i), _prune_count(leaf.size, sparsity)).reshape(leaf.shape)
  elif prunable:
    scores = [score(i) for i in prunable]
    total = sum(int(s.shape[0]) for s in scores)
    keep = _keep_smallest_out(jnp.concatenate(scores), _prune_count(total, sparsity))
    start = 0
    for i, s in zip(prunable, scores):
      leaf = with_path[i][1]
      out[i] = keep[start:start + s.shape[0]].reshape(leaf.shape)
      start += s.shape[0]
  return jax.tree_util.tree_unflatten(treedef, out)


def apply_masks(params: Any, masks: Any) -> Any:
  """`where(mask, w, 0)` leaf by leaf: the parameters with every masked-out entry set to exactly zero.

  (`where`, not `w·mask`: a NaN or inf weight that is masked out still becomes 0.) Leaves with a scalar
  True mask come back unchanged. Runs under jit.
  """
  return _map_with_masks(lambda p, m: jnp.where(m, p, jnp.zeros((), jnp.asarray(p).dtype)), params, masks,
                         "apply_masks")


def masked_gradients(grads: Any, masks: Any) -> Any:
  """The gradients with the entries of masked-out weights set to zero (`apply_masks` on a gradient tree):
  an optimizer then accumulates no momentum or second moment on pruned weights."""
  return _map_with_masks(lambda g, m: jnp.where(m, g, jnp.zeros((), jnp.asarray(g).dtype)), grads, masks,
                         "masked_gradients")


def masked_update(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any,
                  masks: Any) -> Tuple[Any, Any]:
  """One optimizer step that leaves pruned weights at exactly zero:

      g' = masked_gradients(g, masks); (u, state') = tx.update(g', state, params);
      params' = apply_masks(params + u, masks)

  Both maskings are needed. Masking the gradient keeps the optimizer's statistics (momentum, Adam's
  moments) of pruned weights from growing, so they do not leak into later steps or distort adaptive step
  sizes. It is not enough on its own: updates also come from terms that do not go through the gradient,
  such as decoupled weight decay (AdamW's `wd·w`, zero only once w is) and momentum accumulated *before*
  the weight was pruned (SGD's trace decays as μ^t but is not zero), and a newly pruned weight is not yet
  zero in `params`. Re-masking the parameters after the update removes all of these, whatever `tx` is.

  Args:
    tx: any optax transformation (momentum, weight decay, schedules, clipping...).
    grads: gradients with the structure of `params`.
    opt_state: `tx`'s state.
    params: the current parameters (already masked or not).
    masks: masks in this module's convention for `params`.

  Returns:
    `(new_params, new_opt_state)`; every masked-out entry of `new_params` is 0.
  """
  grads = masked_gradients(grads, masks)
  updates, opt_state = tx.update(grads, opt_state, params)
  return apply_masks(optax.apply_updates(params, updates), masks), opt_state


def keep_pruned(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """`tx` as an optax transformation that keeps pruned weights at zero; the masks come with each update.

  `update(grads, state, params, *, masks)` masks the incoming gradients, runs `tx`, and replaces the update
  of every masked-out weight w by `−w`, so that `optax.apply_updates(params, updates)` puts it at exactly
  0 (w + (−w) = 0 in floating point). The result equals `masked_update(tx, grads, state, params, masks)`
  (see there why both the gradient and the parameters are masked). The masks are an argument, not state,
  because they change during gradual pruning and belong to the train state (checkpointed with it).
  Other extra arguments are forwarded to `tx`.

  Raises (at update time):
    KDJaxError: `masks` or `params` not given.
  """
  inner = optax.with_extra_args_support(tx)

  def init_fn(params):
    return inner.init(params)

  def update_fn(updates, state, params=None, *, masks=None, **extra_args):
    if masks is None or params is None:
      raise KDJaxError("keep_pruned(tx).update needs the parameters and the pruning masks: call "
                       "tx.update(grads, opt_state, params, masks=masks) (all-True masks before pruning starts).")
    updates, state = inner.update(masked_gradients(updates, masks), state, params, **extra_args)
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p).astype(u.dtype), updates, params, masks)
    return updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------------------
# The gradual (polynomial) schedule.
# ----------------------------------------------------------------------------------------------------------

def _validate_schedule(initial: float, final: float, begin_step: int, num_updates: int, update_every: int):
  if not (0.0 <= initial <= 1.0 and 0.0 <= final <= 1.0):
    raise KDJaxError(f"polynomial_sparsity: initial and final sparsity must be in [0, 1]; got initial={initial}, "
                     f"final={final}.")
  if initial > final:
    raise KDJaxError(f"polynomial_sparsity: initial sparsity {initial} exceeds final {final}; masks only grow "
                     "during gradual pruning, so pass initial <= final (usually initial=0).")
  for name, value, least in (("begin_step", begin_step, 0), ("num_updates", num_updates, 0),
                             ("update_every", update_every, 1)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
      raise KDJaxError(f"polynomial_sparsity: {name} must be an integer >= {least}; got {name}={value!r}.")


def polynomial_sparsity(step, *, initial: float, final: float, begin_step: int, num_updates: int,
                        update_every: int) -> jax.Array:
  """The gradual pruning schedule of Zhu & Gupta: the target sparsity in force at `step`.

      s_t = s_f + (s_i − s_f)·(1 − (t − t_0)/(n·Δt))³,   t ∈ {t_0, t_0 + Δt, …, t_0 + n·Δt}

  Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model compression",
  ICLR 2018 workshop, arXiv:1710.01878 (Eq. 1; reference: the paper's TensorFlow library,
  `tensorflow/contrib/model_pruning/python/pruning.py`, whose hparams `sparsity_function_begin_step`,
  `sparsity_function_end_step` and `pruning_frequency` are our t_0, t_0 + n·Δt and Δt, and whose
  `sparsity_function_exponent` is the 3 here). Masks are updated only at the n + 1 steps t_0 + kΔt
  (k = 0 … n: `is_update_step`), so t here is the last update step at or before `step`:
  t = t_0 + ⌊(step − t_0)/Δt⌋·Δt, clipped to [t_0, t_0 + nΔt]. Hence:
    - step < t_0: 0 (no pruning yet: `magnitude_masks` at 0 keeps everything);
    - t_0 ≤ step < t_0 + Δt: s_i (the first update prunes to the initial sparsity, often 0);
    - step ≥ t_0 + nΔt: s_f (the last update; the masks are frozen afterwards).
  Pruning is fast early, when redundancy is high, and slow near s_f. n = 0 is one-shot pruning to s_f at t_0.

  Args:
    step: the training step (a Python int or a traced integer scalar: jit-friendly).
    initial: s_i in [0, 1].
    final: s_f in [s_i, 1].
    begin_step: t_0 ≥ 0.
    num_updates: n ≥ 0, the number of Δt intervals (n + 1 mask updates in all).
    update_every: Δt ≥ 1 steps.

  Returns:
    A float32 scalar array.

  Raises:
    KDJaxError: sparsities outside [0, 1], initial > final, or steps/counts that are not non-negative
      integers (update_every ≥ 1).
  """
  _validate_schedule(initial, final, begin_step, num_updates, update_every)
  step = jnp.asarray(step, jnp.int32)
  k = jnp.clip((step - begin_step) // update_every, 0, num_updates)
  frac = k.astype(jnp.float32) / num_updates if num_updates else jnp.float32(1.0)
  s = final + (initial - final) * (1.0 - frac) ** 3
  return jnp.where(step < begin_step, 0.0, s).astype(jnp.float32)


def is_update_step(step, *, begin_step: int, num_updates: int, update_every: int) -> jax.Array:
  """Whether `step` is one of the n + 1 mask-update steps t_0 + kΔt, k = 0 … n, of `polynomial_sparsity`
  (a bool scalar array; `step` may be traced)."""
  _validate_schedule(0.0, 0.0, begin_step, num_updates, update_every)
  step = jnp.asarray(step, jnp.int32)
  offset = step - begin_step
  return (offset >= 0) & (offset <= num_updates * update_every) & (offset % update_every == 0)


def gradual_masks(params: Any, masks: Any, step, *, initial: float, final: float, begin_step: int,
                  num_updates: int, update_every: int, scope: str = "layer",
                  exclude: Union[str, Sequence[str]] = ()) -> Any:
  """The masks for `step` under gradual pruning: at an update step (`is_update_step`) new
  `magnitude_masks(params, polynomial_sparsity(step, ...), scope=scope, exclude=exclude, previous=masks)`,
  otherwise `masks` unchanged. Call it in the train step before `masked_update`; `masks` start as
  `magnitude_masks(params, 0.0, scope=scope, exclude=exclude)` (all True, the same tree shapes). Jit-friendly
  (`lax.cond`: the argsort runs only at update steps). Because `previous=masks`, a weight once pruned stays
  pruned and every update reaches its count exactly (Zhu & Gupta, arXiv:1710.01878: the weights are masked
  from the current magnitudes, and pruned weights are not revived).
  """
  schedule = dict(begin_step=begin_step, num_updates=num_updates, update_every=update_every)
  target = polynomial_sparsity(step, initial=initial, final=final, **schedule)
  return jax.lax.cond(is_update_step(step, **schedule),
                      lambda: magnitude_masks(params, target, scope=scope, exclude=exclude, previous=masks),
                      lambda: jax.tree.map(lambda m: jnp.asarray(m, bool), masks))


# ----------------------------------------------------------------------------------------------------------
# Reporting.
# ----------------------------------------------------------------------------------------------------------

def sparsity_report(params: Any, masks: Optional[Any] = None) -> Dict[str, Any]:
  """Parameter and non-zero counts of a (pruned) parameter tree, on the host.

  With `masks` the parameters are first masked (`apply_masks`), so the report describes what an exported
  pruned model holds. Returns a dict of Python numbers:
    - 'total', 'nonzero', 'sparsity': over every leaf (sparsity = 1 − nonzero/total);
    - 'kernel_total', 'kernel_nonzero', 'kernel_sparsity': over the conv/dense kernels only (leaves named
      `kernel`, ndim ≥ 2), the usual "sparsity" of unstructured-pruning papers;
    - 'layers': {'/'-joined path: {'size', 'nonzero', 'sparsity'}} for every kernel, and for every other
      leaf that `masks` covers with a non-scalar mask (e.g. the BatchNorm entries of `filter_masks`).
  Empty trees give 0 counts and sparsity 0.
  """
  if masks is not None:
    params = apply_masks(params, masks)
    mask_shapes = {path_str(p): np.ndim(m) for p, m in jax.tree_util.tree_leaves_with_path(masks)}
  else:
    mask_shapes = {}
  total = nonzero = kernel_total = kernel_nonzero = 0
  layers: Dict[str, Dict[str, Any]] = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    array = np.asarray(leaf)
    size, nz = int(array.size), int(np.count_nonzero(array))
    total, nonzero = total + size, nonzero + nz
    name = path_str(path)
    if _is_kernel(path, leaf):
      kernel_total, kernel_nonzero = kernel_total + size, kernel_nonzero + nz
    if _is_kernel(path, leaf) or mask_shapes.get(name, 0) > 0:
      layers[name] = {"size": size, "nonzero": nz, "sparsity": 1.0 - nz / size if size else 0.0}
  return {
      "total": total, "nonzero": nonzero, "sparsity": 1.0 - nonzero / total if total else 0.0,
      "kernel_total": kernel_total, "kernel_nonzero": kernel_nonzero,
      "kernel_sparsity": 1.0 - kernel_nonzero / kernel_total if kernel_total else 0.0,
      "layers": layers,
  }


# ----------------------------------------------------------------------------------------------------------
# Structured filter pruning of CIFAR ResNet BasicBlocks.
# ----------------------------------------------------------------------------------------------------------

_BLOCK_NAME = re.compile(r"^layer(\d+)_(\d+)$")


def _basic_blocks(params: Any) -> List[str]:
  """Names of the BasicBlocks of a `ResNetCIFAR` parameter tree, in network order (stage, then index,
  numerically: layer1_2 before layer1_10)."""
  if not hasattr(params, "keys"):
    raise KDJaxError("filter pruning takes a CIFAR ResNet's parameter dict (`variables['params']`).")
  names = sorted((n for n in params.keys() if _BLOCK_NAME.match(str(n))),
                 key=lambda n: tuple(int(g) for g in _BLOCK_NAME.match(str(n)).groups()))
  if not names:
    raise KDJaxError("filter pruning found no residual blocks (`layer<stage>_<index>`) in these parameters; it "
                     "supports the CIFAR ResNets of kd_jax.models.resnet_cifar (pass `variables['params']`).")
  for n in names:
    block = params[n]
    if "conv3" in block:
      raise KDJaxError(f"filter pruning supports BasicBlocks only; block {n!r} is a Bottleneck (it has conv3).")
    kernel = block.get("conv1", {}).get("kernel") if hasattr(block.get("conv1", {}), "get") else None
    if kernel is None or getattr(kernel, "ndim", 0) != 4 or "bn1" not in block or "kernel" not in block.get(
        "conv2", {}):
      raise KDJaxError(f"filter pruning needs standard convolutions (conv1/kernel, bn1, conv2/kernel) in block "
                       f"{n!r}; build the ResNet with conv='standard' (cheap convolutions are not supported).")
  return names


def _check_filter_rate(channels: int, rate: float, block: str) -> int:
  k = num_to_prune(channels, rate)
  if k >= channels:
    raise KDJaxError(f"filter pruning at rate {rate} would remove all {channels} filters of {block}/conv1; use "
                     f"a rate below {1 - 0.5 / channels:.4g} (round(rate·{channels}) < {channels}).")
  return k


@jax.jit
def _filter_l1(kernel: jax.Array) -> jax.Array:
  return jnp.sum(jnp.abs(kernel).astype(jnp.float32), axis=(0, 1, 2))


@functools.partial(jax.jit, static_argnums=1)
def _filter_keep(kernel: jax.Array, k: int) -> jax.Array:
  """Keep-mask over the output filters of one HWIO kernel: the `k` filters with the smallest L1 norm Σ|w|
  (ties to the lowest index) are False. Jitted once per kernel shape: the one ranking both `filter_masks`
  and `prune_filters` use, so they always pick the same filters."""
  return _keep_smallest_out(_filter_l1(kernel), k)


def _with(tree: Any, keys: Tuple[str, ...], value) -> Any:
  """A copy of nested dict `tree` with `tree[k0][k1]...` set to `value` (the inputs are not modified)."""
  out = dict(tree)
  out[keys[0]] = value if len(keys) == 1 else _with(tree[keys[0]], keys[1:], value)
  return out


def filter_masks(params: Any, rate: float) -> Any:
  """Masks for L1-norm filter pruning of every BasicBlock's first convolution (masked, not removed).

  Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017,
  arXiv:1608.08710, Sec. 3.1 and 4.2: a filter's importance is the sum of its absolute weights
  s_j = Σ|F_j|; in each block the `round(rate·C)` filters of `conv1` with the smallest s_j are pruned
  (ties to the lowest index), together with the matching BatchNorm channel of `bn1` and the matching input
  channels of `conv2`. As the paper does for ResNets, only the first conv of each residual block is
  pruned, so the block's output width (and the residual sum with the shortcut) is unchanged. One uniform
  rate for every block is a simplification: the paper picks per-stage rates from a sensitivity analysis
  and skips the most sensitive layers.

  Masked here: the pruned filters of `conv1/kernel`, the pruned entries of `bn1/scale` and `bn1/bias`, and
  the matching input channels of `conv2/kernel`. Zeroing only the filter is not enough: the channel's conv
  output is then 0, but BatchNorm maps it to (0 − μ)·γ/√(σ² + ε) + β, a nonzero constant in eval mode (μ,
  σ² the running statistics from before pruning) and still β in train mode (batch mean and variance 0),
  which survives the ReLU and which conv2 adds to every position: a signal the physically smaller network
  does not have. With γ = β = 0 the channel is exactly 0 after bn1 + ReLU in both modes, whatever the
  statistics, so the masked network computes what `prune_filters`' smaller network computes, and a masked
  training step leaves those entries at 0 (`masked_update`). The conv2 input channels then multiply zeros
  (masking them changes no output); they are masked so that the masks count exactly the weights
  `prune_filters` removes (`sparsity_report(params, masks)['nonzero']` is the smaller network's size when
  no other weight is 0). `batch_stats` need no mask.

  Args:
    params: a CIFAR ResNet's `variables['params']` (`kd_jax.models.resnet_cifar`, standard convs; with
      `inner_widths` or not).
    rate: fraction of each block's conv1 filters to prune, leaving at least one.

  Returns:
    Masks in this module's convention: full-shape bool arrays for each block's conv1/kernel, bn1/scale,
    bn1/bias and conv2/kernel, a scalar True everywhere else. Runs under jit; `rate` may be traced (then
    `round(rate·C)` is capped at C − 1 instead of raising).

  Raises:
    KDJaxError: rate outside [0, 1] or removing every filter of a block, or parameters without BasicBlocks
      (another model, Bottleneck blocks, cheap convolutions).
  """
  if _is_static(rate):
    num_to_prune(0, rate)
  masks = jax.tree.map(lambda _: _kept_scalar(), params)
  for name in _basic_blocks(params):
    conv1, conv2 = params[name]["conv1"]["kernel"], params[name]["conv2"]["kernel"]
    if _is_static(rate):
      keep = _filter_keep(conv1, _check_filter_rate(conv1.shape[-1], rate, name))
    else:  # a traced rate (the gradual schedule inside a train step): at least one filter is kept
      k = jnp.minimum(_prune_count(conv1.shape[-1], rate), conv1.shape[-1] - 1)
      keep = _keep_smallest_out(_filter_l1(conv1), k)
    masks = _with(masks, (name, "conv1", "kernel"), jnp.broadcast_to(keep[None, None, None, :], conv1.shape))
    masks = _with(masks, (name, "bn1", "scale"), keep)
    masks = _with(masks, (name, "bn1", "bias"), keep)
    masks = _with(masks, (name, "conv2", "kernel"), jnp.broadcast_to(keep[None, None, :, None], conv2.shape))
  return masks


def prune_filters(params: Any, batch_stats: Any, rate: float) -> Tuple[Tuple[int, ...], Any, Any]:
  """L1-norm filter pruning with the filters physically removed (Li et al., arXiv:1608.08710).

  Removes, in every BasicBlock, the conv1 filters `filter_masks(params, rate)` masks out, the matching
  `bn1` scale, bias, running mean and variance entries, and the matching input channels of conv2. The
  result is the variables of the same ResNet built with `inner_widths` (conv1's output width per block):

      inner_widths, p, bs = prune_filters(variables['params'], variables['batch_stats'], 0.5)
      small = create_model('resnet20', 100, inner_widths=inner_widths)
      small.apply({'params': p, 'batch_stats': bs}, x)   # == the full net on the masked variables

  Its parameter count drops by Σ_blocks k·(9·C_in + 2 + 9·C_out) for k removed filters, exactly the
  entries `filter_masks` masks out. Kept channels stay in their order. Runs on the host (output shapes
  depend on the weights), not under jit.

  Args:
    params: a CIFAR ResNet's `variables['params']` (masked by `filter_masks` or not: masked filters have
      L1 norm 0 and are chosen first, so the same rate removes the same filters).
    batch_stats: its `variables['batch_stats']`.
    rate: fraction of each block's conv1 filters to remove.

  Returns:
    `(inner_widths, new_params, new_batch_stats)`; `inner_widths` has one entry per block in network order
    (stage 1 first; `layer1_2` before `layer1_10`).

  Raises:
    KDJaxError: as `filter_masks`, or `batch_stats` without the blocks' `bn1` statistics.
  """
  if not _is_static(rate):
    raise KDJaxError(f"prune_filters takes a Python number as its rate (output shapes depend on it); got {rate!r}.")
  return remove_masked_filters(params, batch_stats, filter_masks(params, rate))


def remove_masked_filters(params: Any, batch_stats: Any, masks: Any) -> Tuple[Tuple[int, ...], Any, Any]:
  """`prune_filters` for the filters that `masks` (from `filter_masks`, e.g. a run's final masks) prune:
  `(inner_widths, new_params, new_batch_stats)` of the physically smaller CIFAR ResNet, whatever rate made
  the masks. On the host."""
  widths = []

  def take(array, axis: int, keep: np.ndarray) -> jax.Array:
    return jnp.asarray(np.take(np.asarray(array), keep, axis=axis))

  for name in _basic_blocks(params):
    keep = np.flatnonzero(np.asarray(masks[name]["bn1"]["scale"]))
    block = params[name]
    try:
      stats = batch_stats[name]["bn1"]
    except (KeyError, TypeError) as e:
      raise KDJaxError(f"batch_stats has no {name}/bn1 statistics; pass variables['batch_stats'] of the same "
                       "model as params.") from e
    params = _with(params, (name, "conv1", "kernel"), take(block["conv1"]["kernel"], 3, keep))
    params = _with(params, (name, "bn1"), {k: take(v, 0, keep) for k, v in block["bn1"].items()})
    params = _with(params, (name, "conv2", "kernel"), take(block["conv2"]["kernel"], 2, keep))
    batch_stats = _with(batch_stats, (name, "bn1"), {k: take(v, 0, keep) for k, v in stats.items()})
    widths.append(int(keep.size))
  return tuple(widths), params, batch_stats
