"""The single output structure every kd_jax model returns, whatever its task."""

from __future__ import annotations

from typing import Optional, Tuple

import flax.struct
import jax


@flax.struct.dataclass
class ModelOutput:
  """What a model returns, identical in structure for every architecture and task.

  Attributes:
    prediction: what the task's loss and metrics read: classification logits [B, C], per-pixel logits
      [B, H, W, C] (class axis last), an image [B, H, W, C] (super-resolution), a rating [B].
    stages: output of each stage (after its final activation), NHWC for conv nets, [B, D] for MLPs and
      embedding models, ordered from the input side to the output side.
    preact_stages: the same stages before their final ReLU (what AB and ReviewKD-style methods read).
      For stages whose block has no activation at the end the entry equals the stage output.
    embedding: [B, D] the pooled (penultimate) feature fed to the prediction head.
    stem: NHWC output of the layers before the first stage (the CIFAR ResNets' conv-BN-ReLU), or None for
      models without a separate stem. RepDistiller's feature lists start with it (`feat[0]`); FSP pairs
      it with the first stage. Last, with a default, so models that have no stem need not name it; None
      is an empty pytree node, so outputs without a stem flatten to the same leaves as before.
  """

  prediction: jax.Array
  stages: Tuple[jax.Array, ...]
  preact_stages: Tuple[jax.Array, ...]
  embedding: jax.Array
  stem: Optional[jax.Array] = None

  @property
  def logits(self) -> jax.Array:
    """`prediction` under its classification name: the pre-softmax scores, class axis last."""
    return self.prediction
