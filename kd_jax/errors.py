"""The one exception type kd_jax raises for bad user input.

The CLI catches it, prints the message and exits non-zero, so every message must say what was wrong and
what to do instead.
"""


class KDJaxError(ValueError):
  """A user-facing error: bad config key or value, unknown name, missing data, mismatched checkpoint."""


def one_of(values) -> str:
  """'a', 'b' or 'c': the accepted values, for a KDJaxError's message."""
  quoted = [repr(v) for v in values]
  return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


class Preempted(Exception):
  """Training stopped on SIGTERM/SIGINT after checkpointing; running the same command again resumes it.

  Not an error: the CLI prints the message and exits 0, as schedulers expect of a job that saved its work.
  """

  def __init__(self, step: int, workdir: str, signal_name: str):
    super().__init__(f"{signal_name} received: checkpointed step {step} in {workdir} and stopped. Run the same "
                     "command again to resume from it.")
    self.step, self.workdir, self.signal_name = step, workdir, signal_name
