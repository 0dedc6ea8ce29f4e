"""The single output structure every kd_jax model returns, whatever its task."""

from __future__ import annotations

from typing import Tuple

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
  """

  prediction: jax.Array
  stages: Tuple[jax.Array, ...]
  preact_stages: Tuple[jax.Array, ...]
  embedding: jax.Array

  @property
  def logits(self) -> jax.Array:
    """`prediction` under its classification name: the pre-softmax scores, class axis last."""
    return self.prediction
