"""Reading TFDS ArrayRecord splits robustly: sources, positions, bad records.

* ``load_source``: a random-access source over one split, images left encoded.
* ``PositionedSource``: adds each record's position in its split; a record
  that cannot be read becomes ``None`` (or a position-only record for eval).
* ``report_skipped``: names a record the pipeline skipped (why, and its
  shard), the first few times and then now and then, so a bad dataset shows
  up in the log as well as in the ``data/skipped`` count.
* ``DataError``: a dataset that cannot be used as configured (a path that is
  not a dataset, a feature that is missing); the CLI prints it without a
  traceback.
* ``Rebatch``: a grain ``IterDataset`` turning chunks of good examples (bad
  records already dropped, and counted) into batches of exactly
  ``batch_size``; each dropped record is added to the ``skipped`` field of the
  next example, so the count travels inside the batches and survives worker
  processes and checkpoints.

This module knows nothing about augmentation, tokenizers or models.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from big_contrast.data import bundled
from big_contrast.data.builders import default_data_dir

log = logging.getLogger(__name__)


class DataError(ValueError):
  """A dataset that cannot be used as configured: the message names the path or feature."""


# Skipped records named in the log: the first ones, then every _REPORT_EVERY-th.
_REPORT_FIRST, _REPORT_EVERY = 10, 1000
_reported = {"count": 0}
_report_lock = threading.Lock()


def report_skipped(what: str, reason: str) -> None:
  """Logs that the record `what` (e.g. 'record 17 of train') was skipped, and why."""
  with _report_lock:
    _reported["count"] += 1
    n = _reported["count"]
  if n <= _REPORT_FIRST or n % _REPORT_EVERY == 0:
    more = " (further ones are counted in data/skipped)" if n == _REPORT_FIRST else ""
    log.warning("skipped %s: %s [%d skipped so far in this process]%s", what, reason, n, more)


def _builder(name_or_dir: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  if name_or_dir in bundled.DATASETS:
    return bundled.ensure_built(name_or_dir, data_dir)
  if os.path.isdir(name_or_dir):
    return tfds.builder_from_directory(name_or_dir)
  try:
    return tfds.builder(name_or_dir, data_dir=data_dir or default_data_dir())
  except Exception as e:  # tfds raises several types for unknown names.
    raise DataError(
      f"data.name={name_or_dir!r} is neither a bundled dataset "
      f"{sorted(bundled.DATASETS)}, an existing TFDS dataset directory "
      "(the folder holding dataset_info.json), nor a prepared TFDS dataset "
      f"in data_dir={data_dir!r}."
    ) from e


def load_source(name_or_dir: str, split: str, data_dir: str | None = None):
  """A random-access source over one split of a TFDS ArrayRecord dataset.

  Image features are left encoded (``tfds.decode.SkipDecoding``): they are
  decoded with PIL inside the grain pipeline, where a bad one is skippable.
  ``name_or_dir`` is a bundled dataset (built on first use), a TFDS dataset
  directory (e.g. a converter's output) or a TFDS name prepared in ``data_dir``.
  """
  return open_split(name_or_dir, split, data_dir)[0]


def open_split(name_or_dir: str, split: str, data_dir: str | None):
  """(source, features) of one split; see ``load_source``."""
  builder = _builder(name_or_dir, data_dir)
  decoders = {
    key: tfds.decode.SkipDecoding()
    for key, feature in builder.info.features.items()
    if isinstance(feature, tfds.features.Image)
  }
  return builder.as_data_source(split, decoders=decoders), builder.info.features


def class_names(name_or_dir: str, data_dir: str | None, label_key: str) -> list[str]:
  """The names of a dataset's classes, from its ``ClassLabel`` feature.

  For zero-shot prompts; underscores become spaces ("golden_retriever" ->
  "golden retriever").
  """
  features = _builder(name_or_dir, data_dir).info.features
  feature = features[label_key] if label_key in features else None
  if isinstance(feature, tfds.features.Sequence):
    feature = feature.feature
  if not isinstance(feature, tfds.features.ClassLabel):
    raise DataError(
      f"data.name={name_or_dir!r} has no ClassLabel feature {label_key!r} to take "
      f"class names from; its features are {sorted(features)}."
    )
  return [n.replace("_", " ") for n in feature.names]


def _shards(source) -> tuple[list[int], list[str]]:
  """(first index of each shard, its file name) of a TFDS split's records; empty if unknown."""
  try:
    instructions = source.dataset_info.splits[source.split].file_instructions
  except Exception:  # noqa: BLE001 - not a TFDS source (a test's list, another reader)
    return [], []
  starts, names, at = [], [], 0
  for fi in instructions:
    starts.append(at)
    names.append(os.path.basename(fi.filename))
    at += fi.take
  return starts, names


class PositionedSource:
  """Adds ``position`` (index in the split) to each record.

  A record that fails to deserialize becomes ``None`` (train: the chunk
  reader drops and counts it, exactly like an image that fails to decode) or, with
  ``keep_unreadable``, a record with only its position (eval: it becomes a
  masked blank, so every host keeps the same example count). Either way it is
  reported with the shard file it lives in, once per shard (a truncated
  ArrayRecord shard loses all its records at once).

  With ``cache``, every record read is kept in memory, deserialized, and later
  reads of it skip TFDS's parsing (about half of a small image's cost on the
  host): for a split that fits in RAM several times over (``data.cache_records``).
  """

  def __init__(self, source, keep_unreadable: bool = False, cache: bool = False):
    self._source = source
    self._keep_unreadable = keep_unreadable
    self._cache: dict[int, dict] | None = {} if cache else None
    self._starts, self._shard_names = _shards(source)
    self._bad_shards: set[str] = set()

  def __len__(self) -> int:
    return len(self._source)

  def shard_of(self, index: int) -> str | None:
    """The file name of the shard holding record `index`, when known."""
    if not self._starts:
      return None
    return self._shard_names[bisect.bisect_right(self._starts, index) - 1]

  def __getitem__(self, index: int):
    try:
      record = self._read(index)
    except Exception as e:  # noqa: BLE001 - any corrupt record is skipped.
      shard = self.shard_of(index)
      if shard not in self._bad_shards:
        self._bad_shards.add(shard)
        where = f" in shard {shard} (its other unreadable records are not named)" if shard else ""
        report_skipped(f"record {index}{where}", f"unreadable ({type(e).__name__}: {e})")
      if not self._keep_unreadable:
        return None
      record = {}
    record["position"] = index
    return record

  def _read(self, index: int) -> dict:
    """A fresh dict of record ``index``'s features (from the cache when it holds it)."""
    if self._cache is None:
      return dict(self._source[index])
    cached = self._cache.get(index)
    if cached is None:
      cached = self._cache[index] = dict(self._source[index])
    return dict(cached)


# Not grain.experimental.RebatchIterDataset (0.2.18): it rejects 0-row elements (all-bad chunks),
# carries no count across elements, and on resume re-reads (re-decodes) an already used-up chunk.
class Rebatch(grain.IterDataset):
  """Chunks of examples -> batches of exactly ``batch_size``, bad records counted.

  Each parent element is a chunk ``{"rows": dict of [n, ...] arrays or None,
  "tail_skipped": int}``: the chunk's good examples in stream order, each
  with ``skipped`` = bad records just before it within the chunk, and the
  bad records after its last good one. Chunks are cut and joined into
  batches; bad records not yet attributed are added to the ``skipped`` of
  the next example, so ``sum(batch["skipped"])`` over a run counts every bad
  record read. A chunk of exactly one batch that starts a batch passes
  through without a copy (only ``skipped`` is copied if bad records before
  it are pending).

  State: the parent's state at the current chunk, the rows of it already
  used and the pending count; restoring re-reads that chunk.
  """

  def __init__(self, parent: grain.IterDataset, batch_size: int):
    super().__init__(parent)
    self._batch_size = batch_size

  def __iter__(self):
    return _RebatchIterator(self._parent.__iter__(), self._batch_size)


class _RebatchIterator(grain.DatasetIterator):
  def __init__(self, parent: grain.DatasetIterator, batch_size: int):
    super().__init__(parent)
    self._batch_size = batch_size
    self._chunk_state = parent.get_state()
    self._rows: dict[str, np.ndarray] | None = None
    self._tail = 0
    self._offset = 0
    self._pending = 0

  def _load(self) -> int:
    """Reads the chunk at ``_chunk_state``; returns its number of rows."""
    chunk = next(self._parent)
    self._rows, self._tail = chunk["rows"], int(chunk["tail_skipped"])
    return 0 if self._rows is None else len(self._rows["skipped"])

  def _with_pending(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``rows``, with the bad records not yet attributed added to its first ``skipped``.

    Only ``skipped`` is copied (the chunk's arrays stay untouched).
    """
    if not self._pending:
      return rows
    skipped = rows["skipped"].copy()
    skipped[0] += self._pending
    self._pending = 0
    return dict(rows, skipped=skipped)

  def _advance(self) -> None:
    """The current chunk is used up: count its tail, point at the next one."""
    self._pending += self._tail
    self._rows, self._tail, self._offset = None, 0, 0
    self._chunk_state = self._parent.get_state()

  def __next__(self):
    parts: list[dict[str, np.ndarray]] = []
    need = self._batch_size
    while need:
      n = self._load() if self._rows is None else len(self._rows["skipped"])
      if n == need == self._batch_size and self._offset == 0:
        batch = self._with_pending(self._rows)
        self._advance()
        return batch
      take = min(need, n - self._offset)
      if take:
        parts.append(
          self._with_pending(
            {k: v[self._offset : self._offset + take] for k, v in self._rows.items()}
          )
        )
        self._offset += take
        need -= take
      if self._offset == n:
        self._advance()
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self) -> dict[str, Any]:
    return {"chunk": self._chunk_state, "offset": self._offset, "pending": self._pending}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["chunk"])
    self._chunk_state = state["chunk"]
    self._pending = int(state["pending"])
    # The next call re-reads the current chunk and goes on from the offset.
    self._rows, self._tail = None, 0
    self._offset = int(state["offset"])
