"""Process start-up for the entry points: flags, multi-host initialisation, debug aids, logs.

`run(main)` is the absl entry point of `python -m big_contrast.train` (flags
`--config=FILE:VARIANT`, `--config.key=value`, `--workdir`);
`maybe_initialize_distributed()` joins a multi-process run; `apply_debug`
turns on what `config.debug` asks for. Knows nothing of models or training.
"""

from __future__ import annotations

import os
import sys

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags


def maybe_initialize_distributed() -> None:
  """Joins a multi-process run when the environment describes one.

  Explicit: BIG_CONTRAST_COORDINATOR (host:port), BIG_CONTRAST_NUM_PROCESSES and
  BIG_CONTRAST_PROCESS_ID (what tools/tpu_vm.py and tools/slurm_train.sbatch set).
  Otherwise a multi-task SLURM job or a GKE TPU pod is left to JAX's own detection.
  """
  coordinator = os.environ.get("BIG_CONTRAST_COORDINATOR")
  if coordinator:
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=coordinator,
      num_processes=int(os.environ["BIG_CONTRAST_NUM_PROCESSES"]),
      process_id=int(os.environ["BIG_CONTRAST_PROCESS_ID"]),
    )
  elif "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()
  elif os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
    # GKE TPU pods set this; Cloud TPU VMs do not (tools/tpu_vm.py exports the
    # BIG_CONTRAST_* variables from the metadata server on every worker instead).
    jax.distributed.initialize()


_DEBUG_MODES = {
  "": "",
  "off": "",
  "false": "",
  "0": "",
  "on": "on",
  "true": "on",
  "1": "on",
  "nojit": "nojit",
}


def debug_mode(config: ml_collections.ConfigDict) -> str:
  """'' (off), 'on' or 'nojit', from `config.debug` or else $BIG_CONTRAST_DEBUG."""
  value = config.get("debug", None)
  if value is None:
    value = os.environ.get("BIG_CONTRAST_DEBUG", "")
  mode = _DEBUG_MODES.get(str(value).strip().lower())
  if mode is None:
    raise ValueError(f"config.debug={value!r}: expected one of 'on', 'nojit', or '' (off)")
  return mode


def apply_debug(config: ml_collections.ConfigDict) -> str:
  """Turns on the debugging aids `config.debug` asks for; returns the mode ('' when off).

  'on':    `jax_debug_nans`: the first NaN a jitted computation produces raises
           FloatingPointError there (instead of the optimizer skipping the
           update), `log_shapes` prints shapes and shardings, and the
           libraries' INFO logs and TFDS's build messages show.
  'nojit': as 'on', plus `jax_disable_jit`: jitted functions run op by op, so
           `print` and pdb work inside them. Ahead-of-time compilation
           (`jit(f).lower(...).compile()`) refuses to run in this mode, so a
           caller that compiles ahead of time calls the jitted function instead.
  """
  mode = debug_mode(config)
  if mode:
    jax.config.update("jax_debug_nans", True)
    logging.set_verbosity(logging.INFO)  # the libraries' own logs (TFDS, Orbax, grain) too
    if mode == "nojit":
      jax.config.update("jax_disable_jit", True)
    if jax.process_index() == 0:
      print(
        f"debug mode {mode!r}: jax_debug_nans on" + (", jit disabled" if mode == "nojit" else ""),
        flush=True,
      )
  return mode


def log_shapes(config: ml_collections.ConfigDict, name: str, tree) -> None:
  """In debug mode, prints each leaf of `tree`: path, shape, dtype, sharding (process 0 only)."""
  if not debug_mode(config) or jax.process_index() != 0:
    return
  lines = [f"{name}:"]
  for path, leaf in jax.tree.leaves_with_path(tree):
    sharding = getattr(leaf, "sharding", None)
    spec = getattr(sharding, "spec", sharding)
    dtype = getattr(leaf, "dtype", type(leaf).__name__)
    lines.append(
      f"  {jax.tree_util.keystr(path, simple=True, separator='/')}  "
      f"{tuple(getattr(leaf, 'shape', ()))} {dtype}  {spec}"
    )
  print("\n".join(lines), flush=True)


def run(main) -> None:
  """absl entry point with `--config` (a config file) and `--workdir` flags."""
  config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/clip.py:digits.", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda argv: main(quiet_library_logs(argv)), argv=sys.argv)


def quiet_library_logs(argv):
  """Orbax, TFDS and grain log every step at INFO; show warnings unless --verbosity is given."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  return argv
