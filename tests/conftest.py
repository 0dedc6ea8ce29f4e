"""Eight forced CPU devices for the whole suite, set before JAX is imported anywhere, and one persistent XLA
compilation cache for the session.

The cache: many tests compile the same programs (the same tiny model's train step, evaluation and
initialisation under the same config), and on 2 cores compilation is most of the suite's time. The cache
lives in a fresh directory per session (removed at the end), shared by pytest-xdist workers and by the
training processes that tests start, which inherit the environment; a cache hit deserialises the very
executable the first compilation produced, so results are unchanged. A partly written entry read by a
concurrent process is a warning and a recompilation inside JAX, never a wrong program. Set
JAX_COMPILATION_CACHE_DIR yourself to keep a cache across sessions, or to "" to turn it off.

JAX's `jax_disable_most_optimizations` is on for the suite (JAX_DISABLE_MOST_OPTIMIZATIONS=1, inherited by the
processes tests start; set it to 0 to test optimised code): it turns down XLA's LLVM back end (optimisation
level 0, no expensive passes), not the HLO passes (fusion, layouts, SPMD partitioning), so the programs
compute the same operations; they only run slower. The tests' programs are tiny and compiled once or twice
each, so compiling is what costs: with it, a two-phase training test used 29% less CPU time
(docs/benchmarks.md, "Test suite"). Float sums may be vectorised differently (reassociation, a few ulps),
which no test depends on: comparisons between runs compare programs compiled the same way.

kd_jax's oneDNN convolutions (kd_jax.backends.cpu.onednn) are built into a fresh KD_JAX_CACHE_DIR per session as
well, unless it is set, so that the tests never read or write a user's ~/.cache/kd_jax.
"""

import os
import shutil
import tempfile

_DEVICES_FLAG = "--xla_force_host_platform_device_count=8"
if _DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit it from the controller
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _DEVICES_FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# One OpenMP thread per process: xdist already runs one worker per core, and oneDNN's convolutions (what
# cpu_conv_kernels='auto' picks where oneDNN is installed) would start one spinning OpenMP thread per core in
# every worker and in every training process a test starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process of the session (xdist's controller)
  _OWN_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="kd_jax_tests_xla_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  if "KD_JAX_CACHE_DIR" not in os.environ:
    os.environ["KD_JAX_CACHE_DIR"] = os.path.join(_OWN_CACHE, "kd_jax")

import pytest  # noqa: E402  (after the environment above, like everything that may import JAX)


def pytest_unconfigure(config):
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def digits():
  """The embedded digits dataset, loaded once for the session (read-only arrays)."""
  from kd_jax import data as kd_data
  return kd_data.load_dataset("digits")
