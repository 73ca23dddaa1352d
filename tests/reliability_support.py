"""What the end-to-end reliability tests share: the trainer's command line, its environment.

Runs are `configs/simclr.py:tiny` shrunk to a 16-wide one-block ViT on batches of 16, on one
CPU device, so a run costs its start-up and compilation; the compiled programs go to a JAX
cache shared by the session, so only the first run of a program pays for compiling it.
"""

from __future__ import annotations

import os
import sys

from xla_flags import xla_flags

from big_contrast.data import bundled

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The reference schedule of the resume tests: 60 steps, a checkpoint every 20.
STEPS, EVERY = 60, 20


def shared_dir(tmp_path_factory, name: str) -> str:
  """A directory shared by every test module of this pytest session."""
  path = tmp_path_factory.getbasetemp() / f"reliability-{name}"
  path.mkdir(exist_ok=True)
  return str(path)


def digits_dir(data_dir: str) -> str:
  """The session's TFDS data dir (conftest's `data_dir`) with the bundled digits built in it
  before any run starts, so that the runs never pay for building it."""
  bundled.ensure_built("bc_digits", data_dir)
  return data_dir


def train_cmd(workdir, data_dir, *overrides: str) -> list[str]:
  return [
    sys.executable,
    "-m",
    "big_contrast.train",
    "--config=configs/simclr.py:tiny",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    f"--config.total_steps={STEPS}",
    f"--config.ckpt_every={EVERY}",
    "--config.log_every=10",
    "--config.batch_size=16",
    "--config.model.image.width=16",
    "--config.model.image.depth=1",
    "--config.model.image.mlp_dim=32",
    "--config.eval.at_end=('diagnostics',)",
    *overrides,
  ]


def env(tmp_path_factory, devices: int = 1, **extra: str) -> dict[str, str]:
  out = {k: v for k, v in os.environ.items() if not k.startswith("BIG_CONTRAST_")}
  out.update(
    JAX_PLATFORMS="cpu",
    PYTHONUNBUFFERED="1",
    XLA_FLAGS=xla_flags(devices),
    JAX_COMPILATION_CACHE_DIR=shared_dir(tmp_path_factory, "jax-cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    **extra,
  )
  return out
