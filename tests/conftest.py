"""Eight forced CPU devices for the whole suite, set before JAX is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402  (after the environment above, like everything that may import JAX)


@pytest.fixture(scope="session")
def digits():
  """The embedded digits dataset, loaded once for the session (read-only arrays)."""
  from kd_jax import data as kd_data
  return kd_data.load_dataset("digits")
