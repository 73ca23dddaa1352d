"""Test setup: 8 fake CPU devices, set before JAX is imported anywhere.

XLA's persistent compilation cache is pointed at one directory for the whole
session (the environment variables reach the trainer subprocesses too): many
tests compile the same step for the same shapes, in this process or in a
`python -m big_contrast.train` child, and a cached executable is the same
binary, so results are unchanged. The directory is new for every session.
"""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="big_contrast_tests_xla_cache_")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax

jax.config.update("jax_enable_x64", False)
