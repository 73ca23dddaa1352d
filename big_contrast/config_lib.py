"""Configs: the schema of a run, its blocks with their defaults, and the checks.

A config file (`configs/*.py`) returns an `ml_collections.ConfigDict` from
`get_config(variant)`. It starts from `base_config(task)`, which holds every key
the trainer, the input pipeline, the optimizer and the evaluators read, each at
its one default (those defaults live beside the code that reads them:
`pipeline.DATA_DEFAULTS`, `augment.DEFAULTS`, `optim.DEFAULTS`,
`objectives.OBJECTIVES`, `evaluators.DEFAULTS`), and sets what its recipe
changes. Configs are locked after loading, so any key is a `--config.a.b=value`
away and a misspelled one is an error naming it. `validate` fails early, naming
the key, on a config that cannot run.
"""

from __future__ import annotations

import importlib.util
import os
import types
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from big_contrast import objectives, optim, tasks, writers
from big_contrast.data import augment, pipeline
from big_contrast.evaluate import evaluators

# Types of the keys whose default is None (a ConfigDict placeholder needs one, so
# that a command-line value is parsed).
_PLACEHOLDER_TYPES = {
  "data_dir": str,
  "read_threads": int,
  "block_size": int,
  "momentum": float,
  "raw_pixels_size": int,
  "path": str,
  "adapt": str,
}


def _block(defaults: Mapping[str, Any], overrides: Mapping[str, Any], where: str):
  unknown = sorted(set(overrides) - set(defaults))
  if unknown:
    raise ValueError(f"{where}.{unknown[0]}: unknown key; expected some of {sorted(defaults)}")
  block = ml_collections.ConfigDict()
  for key, value in {**defaults, **overrides}.items():
    if value is None:
      value = config_dict.placeholder(_PLACEHOLDER_TYPES[key])
    block[key] = value
  return block


def data_config(**overrides) -> ml_collections.ConfigDict:
  """`config.data`: every key the input pipeline reads, at its default, `overrides` applied."""
  block = _block(pipeline.DATA_DEFAULTS, overrides, "config.data")
  block.augment = augment_config(**dict(overrides.get("augment", {})))
  return block


def augment_config(**overrides) -> ml_collections.ConfigDict:
  """`config.data.augment`: every key of `augment.DEFAULTS`, `overrides` applied."""
  return ml_collections.ConfigDict(augment.resolve_augment_config(overrides))


def optim_config(**overrides) -> ml_collections.ConfigDict:
  """`config.optim`: every key of `optim.DEFAULTS`, `overrides` applied."""
  return _block(optim.DEFAULTS, overrides, "config.optim")


def loss_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """`config.loss` for the objective `name`: its settings at their defaults, `overrides` applied."""
  block = _block(objectives.get(name).defaults, overrides, f"config.loss (name={name!r})")
  block.name = name
  return block


def eval_config(**overrides) -> ml_collections.ConfigDict:
  """`config.eval`: every key of `evaluators.DEFAULTS`, `overrides` applied."""
  return _block(evaluators.DEFAULTS, overrides, "config.eval")


def init_from_config(**overrides) -> ml_collections.ConfigDict:
  """`config.init_from`: continual pretraining from a .npz or a big_contrast run dir.

  path: where the parameters are (None: train from scratch); rename: (regex,
  replacement) rules applied to the source's names; adapt: 'repeat' | 'zero'
  adapts a first layer with other input channels (`models.pretrained`).
  """
  return _block({"path": None, "rename": (), "adapt": None}, overrides, "config.init_from")


def base_config(task: str) -> ml_collections.ConfigDict:
  """Every key a run reads, at its default, for `task`; `loss`, `model` towers and data to set."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})  # one -1: the remaining devices
  c.sharding_rules = [(".*", "fsdp")]  # (regex over parameter paths, strategy); first match
  c.data = data_config()
  if tasks.get(task).needs_tokenizer:
    c.text = ml_collections.ConfigDict({"tokenizer": "bytes", "max_len": 32})
  c.model = ml_collections.ConfigDict({"dtype": "float32", "remat": False})
  c.loss = ml_collections.ConfigDict()  # config_lib.loss_config(name, ...)
  c.batch_size = config_dict.placeholder(int)
  c.total_steps = config_dict.placeholder(int)
  c.optim = optim_config()
  c.microbatches = 1  # k > 1: exact gradient caching, activations for B/k at a time
  c.max_nonfinite_steps = 10  # stop after this many skipped (non-finite) updates in a row
  c.init_from = init_from_config()
  c.debug = ""  # 'on' | 'nojit': NaN checks, shapes and shardings (docs/debugging.md)
  c.log_every = 50
  # Besides metrics.jsonl: "tensorboard" (workdir/tb), "wandb" (big_contrast[wandb]).
  c.writers = ("tensorboard",)
  c.ckpt_every = 1000
  c.keep_ckpts = 3
  c.peer_timeout_s = 60.0  # multi-process: a peer silent this long is lost; the rest stop
  # Evaluators during training, e.g. ({"evaluator": "knn", "every": 500},), optionally
  # on other data: {"evaluator": "linear_probe", "every": 1000, "name": "probe_grid",
  # "data": {"name": "bc_digits_grid"}} (see big_contrast/evaluate/evaluators.py).
  c.evals = ()
  c.eval = eval_config()
  return c


def steps_for_epochs(epochs: float, examples: int, batch_size: int) -> int:
  """Steps that see `epochs` passes over `examples` at `batch_size` (whole batches, + 1).

  As SimCLR's `model_util.get_train_steps`: `examples · epochs // batch_size + 1`.
  """
  return int(examples * epochs // batch_size + 1)


def sibling_module(config_file: str, name: str) -> types.ModuleType:
  """The module `name` (a .py file) beside `config_file`, loaded by path.

  Config files are loaded by path (`--config=configs/x.py`), not as a package, so
  `configs/common.py` and a family's base config are reached this way.
  """
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
  spec = importlib.util.spec_from_file_location(f"_big_contrast_config_{name[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling_config(config_file: str, name: str, variant: str) -> ml_collections.ConfigDict:
  """`get_config(variant)` of the config file `name` beside `config_file` (a family's base)."""
  return sibling_module(config_file, name).get_config(variant)


def _missing(schema: ml_collections.ConfigDict, config, prefix: str) -> list[str]:
  out = []
  for key, value in schema.items():
    if key not in config:
      out.append(f"{prefix}{key}")
    elif isinstance(value, ml_collections.ConfigDict) and key not in ("loss", "model", "text"):
      out += _missing(value, config[key], f"{prefix}{key}.")
  return out


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails early, naming the config key, on settings that cannot run."""
  if "task" not in config:
    raise ValueError("config.task is missing; configs start from config_lib.base_config(task)")
  task = tasks.get(config.task)
  missing = _missing(base_config(config.task), config, "config.")
  if missing:
    raise ValueError(
      f"{missing[0]} is missing (and {len(missing) - 1} more); configs start from "
      "config_lib.base_config(task), which holds every key at its default"
    )
  for key in ("batch_size", "total_steps", "log_every", "ckpt_every", "keep_ckpts", "microbatches"):
    if config[key] is None or int(config[key]) <= 0:
      raise ValueError(f"config.{key}={config[key]} must be a positive integer")
  if config.data.name is None:
    raise ValueError(
      "config.data.name is not set: give a TFDS dataset name or the directory "
      "of a converted dataset, e.g. --config.data.name=/data/my_pairs/1.0.0"
    )
  if task.needs_tokenizer and config.text.tokenizer is None:
    raise ValueError("config.text.tokenizer is not set: 'bytes' or a SentencePiece .model path")
  if "name" not in config.loss:
    raise ValueError("config.loss.name is not set; build config.loss with config_lib.loss_config")
  writers.check_writers(config.writers)
  evaluators.probe_blocks(config, warn=False)
  if "image" in config.model and "augment" in config.data:
    augment.check_jitter_channels(
      int(config.model.image.get("channels", 3)), config.data.augment.jitter_prob
    )
  objectives.check_task(config.loss, config.task)
  objectives.settings(config.loss)
  optim.settings(config.optim)
