"""The console scripts: `big_contrast COMMAND [ARGS]` and one `big_contrast-COMMAND` per command.

Each command runs exactly what its `python -m big_contrast.…` module or `python
tools/….py` script runs, with the same flags (`big_contrast-train --config=… --workdir=…`
is `python -m big_contrast.train --config=… --workdir=…`). `big_contrast --help` lists them.
The converters and launchers live in the repository's `tools/` directory, so they need the
source checkout the Quickstart installs from (`pip install -e .`).
"""

from __future__ import annotations

import functools
import os
import runpy
import sys

# name: (a module of the package or a script in tools/, the one line --help shows)
COMMANDS: dict[str, tuple[str, str]] = {
  "train": ("big_contrast.train", "train from a config, then evaluate (resumes a workdir)"),
  "evaluate": ("big_contrast.evaluate", "evaluate a run's checkpoint: probe, kNN, zero-shot, ..."),
  "report": ("big_contrast.report", "draw report.png: curves and final table of runs"),
  "convert-image-folder": ("convert_image_folder.py", "image folder tree -> TFDS ArrayRecord"),
  "convert-image-text": ("convert_image_text.py", "image-caption pairs (JSONL, tars) -> TFDS"),
  "convert-multilabel": ("convert_multilabel.py", "multi-label manifest -> TFDS ArrayRecord"),
  "train-tokenizer": ("train_tokenizer.py", "a SentencePiece model from your captions"),
  "tpu-vm": ("tpu_vm.py", "create a Cloud TPU VM slice and run training on every worker"),
  "slurm-launch": ("slurm_launch.py", "submit multi-node GPU training to SLURM"),
  "run-until-done": ("run_until_done.py", "re-run a command until the run reports finished"),
}


def _tools_dir() -> str:
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def run(name: str, argv: list[str] | None = None) -> None:
  """Runs command `name` with `argv` (default: this process's arguments) as its arguments."""
  target, _ = COMMANDS[name]
  argv = sys.argv[1:] if argv is None else argv
  if target.endswith(".py"):
    path = os.path.join(_tools_dir(), target)
    if not os.path.isfile(path):
      sys.exit(
        f"big_contrast {name}: {path} is missing; the converters and launchers run from a "
        "source checkout (git clone, then pip install -e .)"
      )
    sys.argv = [path, *argv]
    runpy.run_path(path, run_name="__main__")
  else:
    sys.argv = [f"big_contrast-{name}", *argv]
    runpy.run_module(target, run_name="__main__", alter_sys=True)


def usage() -> str:
  width = max(map(len, COMMANDS))
  lines = ["usage: big_contrast COMMAND [ARGS]   (or big_contrast-COMMAND [ARGS])", "", "commands:"]
  lines += [f"  {name:<{width}}  {line}" for name, (_, line) in COMMANDS.items()]
  lines += ["", "big_contrast COMMAND --help shows a command's own flags."]
  return "\n".join(lines)


def main() -> None:
  """`big_contrast COMMAND [ARGS]`."""
  args = sys.argv[1:]
  if not args or args[0] in ("-h", "--help", "help"):
    print(usage())
    return
  if args[0] not in COMMANDS:
    sys.exit(f"big_contrast: unknown command {args[0]!r}\n\n{usage()}")
  run(args[0], args[1:])


# One console script per command (setup.py's entry_points).
train = functools.partial(run, "train")
evaluate = functools.partial(run, "evaluate")
report = functools.partial(run, "report")
convert_image_folder = functools.partial(run, "convert-image-folder")
convert_image_text = functools.partial(run, "convert-image-text")
convert_multilabel = functools.partial(run, "convert-multilabel")
train_tokenizer = functools.partial(run, "train-tokenizer")
tpu_vm = functools.partial(run, "tpu-vm")
slurm_launch = functools.partial(run, "slurm-launch")
run_until_done = functools.partial(run, "run-until-done")
