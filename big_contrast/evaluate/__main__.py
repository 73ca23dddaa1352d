r"""Evaluates a trained run's checkpoint from the command line.

  python -m big_contrast.evaluate --workdir=DIR --eval=linear_probe \
      [--dataset=NAME_OR_DIR --train_split=train --split=test --step=N]

--eval: linear_probe, knn, zero_shot, retrieval, or all (comma-separated lists
work too). Prints a table and writes DIR/eval_<step>.json.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from big_contrast import checkpoint, config_lib, sharding
from big_contrast.evaluate import standard

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.", required=True)
_EVAL = flags.DEFINE_string(
  "eval", "linear_probe", f"One or more of {standard.EVALUATORS}, or 'all'."
)
_DATASET = flags.DEFINE_string("dataset", None, "TFDS name or dataset dir (default: the run's).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir for --dataset.")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", None, "Split the probe/kNN fit on.")
_SPLIT = flags.DEFINE_string("split", None, "Split evaluated on (default: the run's eval split).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest readable).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global eval batch size.")


def main(argv):
  del argv
  config_lib.maybe_initialize_distributed()
  names = (
    list(standard.EVALUATORS)
    if _EVAL.value == "all"
    else [n.strip() for n in _EVAL.value.split(",") if n.strip()]
  )
  ckpt = checkpoint.Checkpointer(os.path.join(_WORKDIR.value, "checkpoints"))
  config = ckpt.restore_config(_STEP.value)
  with config.unlocked():
    if _DATASET.value:
      config.data.name = _DATASET.value
      config.data.data_dir = _DATA_DIR.value
    if _TRAIN_SPLIT.value:
      config.eval.probe_split = _TRAIN_SPLIT.value
    if _SPLIT.value:
      config.data.eval_split = _SPLIT.value
    if _BATCH_SIZE.value:
      config.eval.batch_size = _BATCH_SIZE.value
  mesh = sharding.make_mesh(config.mesh)
  step, state, trainee, tok = standard.load_run(config, mesh, ckpt, step=_STEP.value)
  results = standard.run_evaluators(names, config, trainee, state, tokenizer=tok)
  results = {"step": step, **results}
  print(standard.format_table(results))
  out = os.path.join(_WORKDIR.value, f"eval_{step}.json")
  with open(out, "w") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(lambda argv: main(config_lib.quiet_library_logs(argv)))
