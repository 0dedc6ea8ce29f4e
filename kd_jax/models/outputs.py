"""The single output structure every kd_jax model returns."""

from __future__ import annotations

from typing import Tuple

import flax.struct
import jax


@flax.struct.dataclass
class ModelOutput:
  """What a model returns, identical in structure for every architecture.

  Attributes:
    logits: [B, num_classes] pre-softmax scores.
    stages: output of each stage (after its final activation), NHWC for conv nets, [B, D] for MLPs,
      ordered from the input side to the output side.
    preact_stages: the same stages before their final ReLU (what AB and ReviewKD-style methods read).
      For stages whose block has no activation at the end the entry equals the stage output.
    embedding: [B, D] the pooled (penultimate) feature fed to the classifier.
  """

  logits: jax.Array
  stages: Tuple[jax.Array, ...]
  preact_stages: Tuple[jax.Array, ...]
  embedding: jax.Array
