r"""Evaluates a run's checkpoint from the command line.

  python -m big_contrast.evaluate --workdir=DIR --eval=linear_probe \
      [--dataset=NAME_OR_DIR --train_split=train --split=test --step=N]

--eval: one or more of the evaluators (comma-separated), or all. Prints a table
and writes DIR/eval_<step>.json.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from big_contrast import launch
from big_contrast.evaluate import encoder as encoder_lib
from big_contrast.evaluate import evaluators

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.", required=True)
_EVAL = flags.DEFINE_string(
  "eval", "linear_probe", f"One or more of {sorted(evaluators.EVALUATORS)}, or 'all'."
)
_DATASET = flags.DEFINE_string("dataset", None, "TFDS name or dataset dir (default: the run's).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir for --dataset.")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", None, "Split the probe/kNN fit on.")
_SPLIT = flags.DEFINE_string("split", None, "Split evaluated on (default: the run's eval split).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest readable).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global eval batch size.")


def main(argv):
  del argv
  launch.maybe_initialize_distributed()
  names = (
    list(evaluators.EVALUATORS)
    if _EVAL.value == "all"
    else [n.strip() for n in _EVAL.value.split(",") if n.strip()]
  )
  encoder = encoder_lib.load_encoder(_WORKDIR.value, step=_STEP.value)
  config = encoder.config.copy_and_resolve_references()
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
  results = {"step": encoder.step, **evaluators.run(names, config, encoder)}
  print(evaluators.format_table(results))
  out = os.path.join(_WORKDIR.value, f"eval_{encoder.step}.json")
  with open(out, "w") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(lambda argv: main(launch.quiet_library_logs(argv)))
