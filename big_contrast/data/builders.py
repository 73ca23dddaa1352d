"""The base of the bundled (offline) TFDS builders, and their build-on-first-use.

* ``BundledBuilder``: a ``GeneratorBasedBuilder`` with nothing to download and
  no TensorFlow needed, whose ``train`` and ``test`` splits come from
  ``_generate_examples(split)``.
* ``default_data_dir()``: where bundled datasets (and the files derived from
  them, e.g. a bundled vocabulary) live when no ``data_dir`` is given.
* ``build_once(builder_class, data_dir)``: the prepared builder, built at most
  once per data dir even when several processes ask at the same time.

This module knows nothing about which datasets are bundled (``bundled.py``
lists them), grain, models or training.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import sys
import time
from typing import TextIO

import tensorflow_datasets as tfds
from absl import logging as absl_logging
from etils import epath


class BundledBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the bundled builders: nothing to download, no TF needed."""

  # TFDS finds a builder's checksums/metadata next to its source through
  # `importlib_resources`, which some installs lack; pointing it at this
  # file directly avoids that lookup (there are no checksums to find).
  code_path = epath.Path(__file__)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}


def default_data_dir() -> str:
  """``$BIG_CONTRAST_DATA_DIR`` or ``~/.cache/big_contrast/tensorflow_datasets``."""
  env = os.environ.get("BIG_CONTRAST_DATA_DIR")
  if env:
    return env
  return os.path.join(os.path.expanduser("~"), ".cache", "big_contrast", "tensorflow_datasets")


_BUILT: dict[tuple[str, str], tfds.core.DatasetBuilder] = {}


@contextlib.contextmanager
def _exclusive_lock(path: str):
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def build_once(
  builder_class: type[tfds.core.GeneratorBasedBuilder], data_dir: str | None = None
) -> tfds.core.DatasetBuilder:
  """The prepared ``builder_class`` in ``data_dir`` (``None``: ``default_data_dir()``).

  Building happens at most once per data dir: an exclusive ``fcntl.flock``
  on ``{data_dir}/.{name}.lock`` serialises concurrent first use by several
  processes on one machine (the losers wait, then find the data prepared);
  TFDS itself writes into a temporary directory and renames it into place,
  so a killed build leaves no half-written dataset behind. ``flock`` is not
  reliable on some network file systems: there, build once before launching
  many hosts (``python -c "from big_contrast import data;
  data.ensure_built('bc_digits')"``).
  """
  name = builder_class.name
  data_dir = os.fspath(data_dir or default_data_dir())
  key = (name, os.path.abspath(data_dir))
  if key in _BUILT:
    return _BUILT[key]
  with _library_output_quiet() as out:
    builder = builder_class(data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
      os.makedirs(data_dir, exist_ok=True)
      with _exclusive_lock(os.path.join(data_dir, f".{name}.lock")):
        builder = builder_class(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
          _prepare(builder, out)
          builder = builder_class(data_dir=data_dir, file_format="array_record")
  _BUILT[key] = builder
  return builder


def _prepare(builder: tfds.core.DatasetBuilder, out: TextIO) -> None:
  """Builds `builder`'s splits, saying in one line what was built and how big it is."""
  t0 = time.perf_counter()
  print(f"Building {builder.name}, a bundled dataset, once ...", end="", file=out, flush=True)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  splits = builder.info.splits
  counts = " + ".join(f"{s} {splits[s].num_examples:,}" for s in splits.keys())
  print(
    f" {counts} examples ({builder.info.dataset_size}) in {builder.data_dir}, "
    f"{time.perf_counter() - t0:.1f} s",
    file=out,
    flush=True,
  )


def library_output_wanted() -> bool:
  """Whether TFDS's own messages and progress bars should show: absl verbosity INFO or
  more (`--verbosity=0`, and debug mode, `launch.apply_debug`)."""
  return absl_logging.get_verbosity() >= absl_logging.INFO


@contextlib.contextmanager
def _library_output_quiet():
  """Yields the stream our own lines go to; TFDS's build chatter (its 'Downloading and
  preparing dataset' lines for data built offline, 'Variant folder … has no
  dataset_info.json' warnings while a first build is under way, progress bars) stays out of
  the output unless `library_output_wanted()`."""
  out = sys.stdout
  if library_output_wanted():
    yield out
    return
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  tfds.display_progress_bar(False)
  try:
    # TFDS prints its download lines with termcolor.cprint, i.e. to sys.stdout.
    with contextlib.redirect_stdout(io.StringIO()):
      yield out
  finally:
    tfds.display_progress_bar(True)
    absl_logger.setLevel(level)
