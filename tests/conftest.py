"""Test setup: 8 fake CPU devices (and cheap compiles, see xla_flags.py), set before JAX is
imported anywhere.

XLA's persistent compilation cache is pointed at one directory for the whole
session (the environment variables reach the trainer subprocesses too): many
tests compile the same step for the same shapes, in this process or in a
`python -m big_contrast.train` child, and a cached executable is the same
binary, so results are unchanged. The directory is new for every session.
"""

import os
import tempfile

from xla_flags import xla_flags

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(8)).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="big_contrast_tests_xla_cache_")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax
import pytest

jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS directory for the session: each bundled dataset is built once, on first use.

  Building `bc_digits` takes seconds and `bc_digits_grid` tens of seconds on a 2-core machine,
  and `data.ensure_built` is safe when several processes race to build the same one, so every
  test (and every trainer subprocess it starts) shares this directory rather than building its
  own copy. Tests of the build itself use their own `tmp_path`.
  """
  return str(tmp_path_factory.mktemp("tfds"))
