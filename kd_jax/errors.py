"""The one exception type kd_jax raises for bad user input.

The CLI catches it, prints the message and exits non-zero, so every message must say what was wrong and
what to do instead.
"""


class KDJaxError(ValueError):
  """A user-facing error: bad config key or value, unknown name, missing data, mismatched checkpoint."""
