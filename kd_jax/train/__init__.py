"""Training: state, steps, sharding, checkpoints and the loop."""

from kd_jax.train.loop import evaluate, train_and_evaluate
from kd_jax.train.step import TrainState, create_train_state, eval_step, train_step

__all__ = ["TrainState", "create_train_state", "eval_step", "evaluate", "train_and_evaluate",
           "train_step"]
