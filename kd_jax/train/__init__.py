"""Training: the train state, the schemes' steps, sharding, checkpoints, and the loop."""

from kd_jax.train.loop import evaluate, train_and_evaluate
from kd_jax.train.run import Run, build_run, init_state, make_step, model_variables
from kd_jax.train.schemes.distill import create_train_state, train_step
from kd_jax.train.step import TrainState, eval_step

__all__ = ["Run", "TrainState", "build_run", "create_train_state", "eval_step", "evaluate", "init_state",
           "make_step", "model_variables", "train_and_evaluate", "train_step"]
