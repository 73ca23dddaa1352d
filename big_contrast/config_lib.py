"""Command-line configs: `--config=configs/x.py:variant --config.key=value`, checks, start-up.

Configs are Python files returning an `ml_collections.ConfigDict` from
`get_config(arg)`. ConfigDicts are locked after loading, so a misspelled
`--config.key` override is an error that names the key.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import jax
import ml_collections

_REQUIRED = (
  "task",
  "seed",
  "mesh",
  "data",
  "model",
  "loss",
  "batch_size",
  "total_steps",
  "optim",
  "log_every",
  "ckpt_every",
  "keep_ckpts",
  "max_nonfinite_steps",
)


def sibling_config(config_file: str, name: str, variant: str) -> ml_collections.ConfigDict:
  """`get_config(variant)` of the config file `name` beside `config_file`.

  Lets a method's config build on its family's (supcon.py on simclr.py) however
  the config was loaded: `--config=` loads files by path, not as a package.
  """
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
  spec = importlib.util.spec_from_file_location(f"_big_contrast_config_{name[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


# Types of the input-pipeline keys whose default is None (a ConfigDict
# placeholder needs one, so that a command-line value is parsed).
_DATA_PLACEHOLDER_TYPES = {"data_dir": str, "read_threads": int}


def data_config() -> ml_collections.ConfigDict:
  """A `config.data` holding every key the input pipeline reads, at its default.

  Config files start from it and set what they change, so any pipeline knob can
  be set on the command line (`--config.data.read_threads=8`) although the file
  does not name it: overrides of keys a locked ConfigDict lacks are errors.
  """
  # Imported on use: importing config_lib alone does not load the data stack.
  from big_contrast.data import pipeline  # noqa: PLC0415

  data = ml_collections.ConfigDict()
  for key, value in pipeline.DATA_DEFAULTS.items():
    if value is None:
      data[key] = ml_collections.config_dict.placeholder(_DATA_PLACEHOLDER_TYPES[key])
    elif key == "augment":
      data[key] = augment_config(**value)
    else:
      data[key] = value
  return data


def augment_config(**overrides) -> ml_collections.ConfigDict:
  """A `config.data.augment` with every key of `augment.DEFAULTS`, `overrides` applied.

  Same reason as `data_config`: `--config.data.augment.device=True` then works on
  any config. The values are the ones `Augment` would fill in anyway.
  """
  from big_contrast.data import augment  # noqa: PLC0415

  # Augment checks the keys (an unknown one is an error naming the known ones)
  # and fills in the defaults.
  return ml_collections.ConfigDict(augment.Augment(overrides).cfg)


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails early, naming the config key, on settings that cannot run."""
  missing = [k for k in _REQUIRED if k not in config]
  if missing:
    raise ValueError(f"config is missing keys {missing}")
  if config.task not in ("image_text", "multiview", "text"):
    raise ValueError(f"config.task={config.task!r}: expected 'image_text', 'multiview' or 'text'")
  for key in ("batch_size", "total_steps", "log_every", "ckpt_every", "keep_ckpts"):
    if int(config[key]) <= 0:
      raise ValueError(f"config.{key}={config[key]} must be positive")
  if config.data.name is None:
    raise ValueError(
      "config.data.name is not set: give a TFDS dataset name or the directory "
      "of a converted dataset, e.g. --config.data.name=/data/my_pairs/1.0.0"
    )
  if config.task in ("image_text", "text") and config.text.tokenizer is None:
    raise ValueError("config.text.tokenizer is not set: 'bytes' or a SentencePiece .model path")
  from big_contrast import objectives  # noqa: PLC0415 — avoids a cycle at import

  objectives.check_task(config.loss, config.task)


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
           update), and `log_shapes` prints shapes and shardings.
  'nojit': as 'on', plus `jax_disable_jit`: jitted functions run op by op, so
           `print` and pdb work inside them. Ahead-of-time compilation
           (`jit(f).lower(...).compile()`) refuses to run in this mode, so a
           caller that compiles ahead of time calls the jitted function instead.
  """
  mode = debug_mode(config)
  if mode:
    jax.config.update("jax_debug_nans", True)
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
  from absl import app, flags  # noqa: PLC0415
  from ml_collections import config_flags  # noqa: PLC0415

  config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/clip.py:digits.", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda argv: main(quiet_library_logs(argv)), argv=sys.argv)


def quiet_library_logs(argv):
  """Orbax, TFDS and grain log every step at INFO; show warnings unless --verbosity is given."""
  from absl import flags, logging  # noqa: PLC0415

  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  return argv
