"""grain input pipelines over TFDS ArrayRecord datasets: train streams and eval passes.

Train (``train_iterator``), per host: one grain element is a *chunk* of
consecutive examples of this host's stream, read and augmented together::

    MapDataset.range(chunks) -> map(_ReadChunk)   # record = shuffle(seed, epoch)[p]
      -> to_iter_dataset(read threads)            # chunks in parallel, in order
      -> Rebatch(host batch)                      # drop bad records, count them
      -> optional mp_prefetch(worker_count)       # workers take whole chunks

The stream over all hosts is positions p = 0, 1, 2, ...: epoch p // N reads
record ``index_shuffle(p % N, seed + epoch)`` (a fresh permutation every
epoch, O(1) memory), and host h of P takes p = h, h + P, h + 2P, ...
(disjoint). Each example's augmentation RNG is a Philox stream keyed by
(seed, p), so a given example in a given epoch gets the same pixels whatever
the number of hosts, threads or workers. Which examples share a batch does
not depend on the threads or the chunk size, but it can on ``worker_count``:
each worker fills batches from its own chunks, taken in turn, which gives the
batches of one process only when a chunk is a whole batch and holds no bad
records. Reading a chunk per element keeps
grain's per-element Python (and the GIL it holds) off the per-example path:
decoding and resizing release the GIL, so read threads scale across cores
(``tools/bench_data.py``). The returned ``grain.DatasetIterator`` has
``get_state``/``set_state`` so a checkpointed run resumes on the exact batch.

Batches are dicts of host NumPy arrays (leading dim = host batch size ``b``):

* ``image_text``: ``image`` u8 [b, S, S, 3], ``text`` i32 [b, L],
  ``text_id`` i32 [b] (crc32 of the caption, 31 bits: equal captions are
  positives), ``label`` i32 [b] and/or ``labels`` i32 [b, C] when present.
* ``multiview``: ``views`` u8 [b, V, S, S, 3], ``label`` / ``labels``; with
  ``augment.device`` also ``augment_seed`` u32 [b], and the views are only
  cropped and flipped (``big_contrast.data.device_augment`` does the rest).
* ``image``: ``image`` u8 [b, S, S, 3], ``label`` / ``labels``.
* ``text``: ``text`` i32 [b, L] (the ``data.text_key`` feature, tokenized), and
  ``doc`` i32 [b] / ``label`` when present (SimCSE; no augmentation).
* Images are ``uint8`` RGB: a quarter of float32's bytes through worker
  queues and onto the device; models map them to [-1, 1] themselves
  (``big_contrast.models.layers.image_input``).
* always: ``index`` i32 [b] (the record's position in its split) and
  ``skipped`` i32 [b]: how many undecodable records were dropped just before
  each example, so ``batch["skipped"].sum()`` is this batch's ``data/skipped``
  (the trainer should pop it before sharding, or shard it like any [b] field).
* eval batches add ``mask`` bool [b] (False on padding).

This module knows nothing about models, meshes or losses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from big_contrast.data.allocator import tune_malloc, tune_malloc_in_worker
from big_contrast.data.augment import resolve_augment_config
from big_contrast.data.examples import KINDS, EvalOrBlank, ExampleTransform
from big_contrast.data.sources import PositionedSource, Rebatch, load_source, open_split
from big_contrast.data.sources import class_names as _class_names
from big_contrast.data.tokenizer import Tokenizer

__all__ = [
  "DATA_DEFAULTS",
  "KINDS",
  "EvalBatches",
  "class_names",
  "eval_batches",
  "load_source",
  "resolve_data_config",
  "train_dataset",
  "train_iterator",
]

# The data config's keys, with their defaults: the one source of both. A value
# of None in a given config means the default.
DATA_DEFAULTS: dict[str, Any] = {
  "name": "bc_digits",  # a bundled dataset, a TFDS name, or a dataset dir
  "data_dir": None,  # None -> big_contrast.data.default_data_dir()
  "train_split": "train",
  "eval_split": "test",
  "image_size": 32,
  "num_views": 2,
  "augment": {},  # its keys and defaults: big_contrast.data.augment.DEFAULTS
  "worker_count": 0,  # grain worker processes (0: in this process)
  "worker_buffer_size": 2,  # batches buffered per worker
  "read_threads": None,  # threads decoding/augmenting per process; None: auto
  "read_buffer_size": 128,  # examples prefetched by those threads
  "read_chunk": 64,  # examples one thread reads as one grain element
  "tune_malloc": True,  # glibc: reuse freed memory in this process (allocator.py)
  "cache_records": False,  # keep the train split's records in memory, parsed (small data)
  "image_key": "image",
  "caption_key": "caption",
  "label_key": "label",  # int class label; "labels" (multi-hot) is also passed on
  "text_key": "text",  # kind='text': the feature to tokenize
}


# Chunks in the endless train stream: as many as fit the index arithmetic.
_ENDLESS = 2**62


def resolve_data_config(data_cfg: Mapping[str, Any] | Any) -> dict[str, Any]:
  """A plain dict of every ``DATA_DEFAULTS`` key: ``data_cfg``'s values, else the defaults.

  ``data_cfg`` is a dict, an ml_collections ``ConfigDict`` or None; a key it
  gives as None takes the default (``data_dir=None``: the default data dir,
  ``read_threads=None``: chosen from the cores). ``augment`` is resolved in
  turn (``augment.resolve_augment_config``). A key outside ``DATA_DEFAULTS`` is
  an error naming it.
  """
  given = {} if data_cfg is None else dict(data_cfg.items())
  unknown = sorted(set(given) - set(DATA_DEFAULTS))
  if unknown:
    raise ValueError(f"Unknown data config keys {unknown}; known keys: {sorted(DATA_DEFAULTS)}.")
  cfg = {
    key: default if given.get(key) is None else given[key] for key, default in DATA_DEFAULTS.items()
  }
  cfg["augment"] = resolve_augment_config(cfg["augment"])
  return cfg


def _example_transform(
  cfg: dict[str, Any], features, kind: str, tokenizer: Tokenizer | None, text_max_len: int
) -> ExampleTransform:
  return ExampleTransform(
    kind=kind,
    features=features,
    image_size=cfg["image_size"],
    num_views=cfg["num_views"],
    augment=cfg["augment"],
    tokenizer=tokenizer,
    text_max_len=text_max_len,
    image_key=cfg["image_key"],
    caption_key=cfg["caption_key"],
    label_key=cfg["label_key"],
    text_key=cfg["text_key"],
  )


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, {process_count}).")
  return process_index, process_count


def _seeds(seed: int) -> tuple[int, int]:
  """Independent 32-bit seeds for the shuffle and the augmentation RNG."""
  shuffle_seed, augment_seed = np.random.SeedSequence(int(seed)).generate_state(2)
  return int(shuffle_seed), int(augment_seed)


def _read_threads(cfg: dict[str, Any]) -> int:
  """``data.read_threads``, or by default this host's cores shared among the processes.

  Decoding and resizing release the GIL, the Python around them does not,
  so threads beyond the cores only contend (``tools/bench_data.py``). Each
  worker process gets ``cores // worker_count`` threads, at least 1 and at
  most 16.
  """
  threads = cfg["read_threads"]
  if threads is not None:
    return int(threads)
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return max(1, min(16, (cores or 1) // max(1, int(cfg["worker_count"]))))


def _read_options(cfg: dict[str, Any], rows: int) -> grain.ReadOptions:
  """Read threads, and a prefetch buffer of ``read_buffer_size`` examples in elements of ``rows``."""
  threads = _read_threads(cfg)
  buffer = max(threads, -(-int(cfg["read_buffer_size"]) // rows))
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer)


def _chunk_rows(host_batch_size: int, cfg: dict[str, Any]) -> int:
  """The largest divisor of the host batch that is at most ``data.read_chunk``.

  A divisor, so that batches are whole chunks and pass through ``Rebatch``
  without a copy; small enough to keep every read thread busy and the
  prefetched bytes bounded (a 224 px two-view example is 301 KB).
  """
  limit = max(1, int(cfg["read_chunk"]))
  return max(d for d in range(1, min(limit, host_batch_size) + 1) if host_batch_size % d == 0)


def _philox_state(key: tuple[int, int]) -> dict[str, Any]:
  # The state numpy's `Philox(key=key)` starts in: assigned to one generator per
  # example in 6 us, where constructing `Generator(Philox(key=key))` takes 33 us.
  return {
    "bit_generator": "Philox",
    "state": {"counter": np.zeros(4, np.uint64), "key": np.array(key, np.uint64)},
    "buffer": np.zeros(4, np.uint64),
    "buffer_pos": 4,
    "has_uint32": 0,
    "uinteger": 0,
  }


class _ReadChunk:
  """Chunk number -> that chunk's examples, read, decoded and augmented.

  Chunk c of host h (of P) holds its stream elements ``c * rows + j``,
  i.e. global stream positions ``p = (c * rows + j) * P + h``. Records that
  do not read or decode are dropped and counted (see ``Rebatch``).
  """

  def __init__(
    self,
    source: PositionedSource,
    example: ExampleTransform,
    *,
    rows: int,
    process_index: int,
    process_count: int,
    shuffle_seed: int,
    augment_seed: int,
  ):
    self._source = source
    self._example = example
    self._rows = rows
    self._process_index = process_index
    self._process_count = process_count
    self._shuffle_seed = shuffle_seed
    self._augment_seed = augment_seed

  def record_index(self, position: int) -> int:
    """The split index the stream reads at global ``position``."""
    epoch, i = divmod(position, len(self._source))
    return int(
      grain.experimental.index_shuffle(
        i, max_index=len(self._source) - 1, seed=(self._shuffle_seed + epoch) % 2**32, rounds=4
      )
    )

  def __call__(self, chunk: int) -> dict[str, Any]:
    # One generator per call (calls run on several threads); its state is
    # reset per example: a Philox stream keyed by (seed, position).
    bit_generator = np.random.Philox(key=self._augment_seed)
    rng = np.random.Generator(bit_generator)
    # Pixels are written straight into one chunk buffer, row by good row:
    # no per-view or per-example arrays to allocate, fault in and stack.
    # Not into shared memory in workers, though that would save grain's
    # copy: freeing this malloc'd buffer raises glibc's dynamic mmap
    # threshold, so the per-example temporaries (decoded images, float
    # views) are reused from the heap instead of mapped and faulted in
    # fresh. Written into shared memory, 2 workers ran the full SimCLR set
    # 25% slower (935 page faults per example instead of 74).
    shape, key = self._example.pixel_shape, self._example.pixel_key
    pixels = None if shape is None else np.empty((self._rows,) + shape, np.uint8)
    good, bad = [], 0
    first = chunk * self._rows
    for element in range(first, first + self._rows):
      position = element * self._process_count + self._process_index
      record = self._source[self.record_index(position)]
      bit_generator.state = _philox_state((self._augment_seed, position))
      slot = None if pixels is None else pixels[len(good)]
      out = None if record is None else self._example.train(record, rng, out=slot)
      if out is None:
        bad += 1
        continue
      out["skipped"] = np.int32(bad)
      bad = 0
      good.append(out)
    if not good:
      return {"rows": None, "tail_skipped": bad}
    rows = {k: pixels[: len(good)] if k == key else np.stack([o[k] for o in good]) for k in good[0]}
    return {"rows": rows, "tail_skipped": bad}


def train_dataset(
  data_cfg: Mapping[str, Any] | Any,
  *,
  kind: str,
  global_batch_size: int,
  seed: int,
  tokenizer: Tokenizer | None = None,
  text_max_len: int = 32,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """This host's endless stream of training batches, as a ``grain.IterDataset``.

  ``train_iterator`` is ``iter()`` of this; the dataset form is handy for
  grain tools (``LimitIterDataset``, ``assert_equal_output_after_checkpoint``).

  Args:
    data_cfg: dict, ConfigDict or None: some of the keys of ``DATA_DEFAULTS``
      (``resolve_data_config``).
    kind: ``"image_text"`` (CLIP-style), ``"multiview"`` (SimCLR-style),
      ``"image"`` (one CLIP-style view + labels, e.g. supervised probes) or
      ``"text"`` (sentences only, SimCSE-style).
    global_batch_size: examples per step over all hosts; each host yields
      ``global_batch_size // process_count``.
    seed: shuffling and augmentation seed.
    tokenizer, text_max_len: captions/texts -> ``text`` ids (``image_text``, ``text``).
    process_index, process_count: this host's slice; default from JAX.

  Returns:
    A ``grain.IterDataset`` of batch dicts as in the module docstring.
  """
  cfg = resolve_data_config(data_cfg)
  process_index, process_count = _process(process_index, process_count)
  if global_batch_size % process_count:
    raise ValueError(
      f"batch_size (global_batch_size={global_batch_size}) must be divisible "
      f"by the number of processes ({process_count})."
    )
  host_batch_size = global_batch_size // process_count
  source, features = open_split(cfg["name"], cfg["train_split"], cfg["data_dir"])
  if len(source) == 0:
    raise ValueError(
      f"data.train_split={cfg['train_split']!r} of data.name={cfg['name']!r} has no records."
    )
  example = _example_transform(cfg, features, kind, tokenizer, text_max_len)
  shuffle_seed, augment_seed = _seeds(seed)
  rows = _chunk_rows(host_batch_size, cfg)
  read = _ReadChunk(
    PositionedSource(source, cache=bool(cfg["cache_records"])),
    example,
    rows=rows,
    process_index=process_index,
    process_count=process_count,
    shuffle_seed=shuffle_seed,
    augment_seed=augment_seed,
  )
  chunks = grain.MapDataset.range(_ENDLESS).map(read)
  it = Rebatch(chunks.to_iter_dataset(_read_options(cfg, rows)), host_batch_size)
  workers = int(cfg["worker_count"])
  if workers > 0:
    _mark_absl_flags_parsed()
    it = it.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=int(cfg["worker_buffer_size"])
      ),
      worker_init_fn=tune_malloc_in_worker,
    )
  elif cfg["tune_malloc"]:
    tune_malloc()
  return it


def train_iterator(
  data_cfg: Mapping[str, Any] | Any,
  *,
  kind: str,
  global_batch_size: int,
  seed: int,
  tokenizer: Tokenizer | None = None,
  text_max_len: int = 32,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this host's training batches.

  Same arguments as ``train_dataset``. Save ``it.get_state()`` with the
  checkpoint (or hand ``it`` to Orbax's grain handler) and ``set_state`` on
  a fresh iterator built with the same arguments to resume on the exact
  next batch.
  """
  return iter(
    train_dataset(
      data_cfg,
      kind=kind,
      global_batch_size=global_batch_size,
      seed=seed,
      tokenizer=tokenizer,
      text_max_len=text_max_len,
      process_index=process_index,
      process_count=process_count,
    )
  )


def class_names(data_cfg: Mapping[str, Any] | Any) -> list[str]:
  """Class names of ``data_cfg``'s dataset (its ``label_key`` ClassLabel feature)."""
  cfg = resolve_data_config(data_cfg)
  return _class_names(cfg["name"], cfg["data_dir"], cfg["label_key"])


def _mark_absl_flags_parsed() -> None:
  # grain's worker processes read absl flags; outside absl.app.run they are
  # unparsed, which grain treats as an error.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class EvalBatches:
  """One pass over a split, split across hosts; ``len()`` = batches per host.

  Every host yields the same number of batches (hosts run the same jitted
  step), so hosts with fewer examples get extra all-padding batches.
  """

  def __init__(self, ds: grain.MapDataset, batch_size: int, num_batches: int):
    self._ds = ds
    self._batch_size = batch_size
    self._num_batches = num_batches

  def __len__(self) -> int:
    return self._num_batches

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    template = None
    emitted = 0
    for batch in self._ds:
      template = batch
      emitted += 1
      yield batch
    for _ in range(self._num_batches - emitted):
      if template is None:
        template = self._ds[0] if len(self._ds) else None
      if template is None:
        raise ValueError("Cannot pad an eval split with no readable records.")
      yield {k: np.zeros_like(v) for k, v in template.items()}


def eval_batches(
  data_cfg: Mapping[str, Any] | Any,
  split: str | None = None,
  *,
  kind: str,
  batch_size: int,
  tokenizer: Tokenizer | None = None,
  text_max_len: int = 32,
  process_index: int | None = None,
  process_count: int | None = None,
) -> EvalBatches:
  """Host batches covering ``split`` (default ``data.eval_split``) exactly once.

  Records ``[process_index::process_count]`` in split order, eval transform
  (resize + centre crop, no randomness; multiview repeats the one view V
  times). The last batch is padded to ``batch_size``; ``mask`` is False on
  padding and on records that failed to decode (also counted in
  ``skipped``); ``index`` is the record's position in the split.
  """
  cfg = resolve_data_config(data_cfg)
  process_index, process_count = _process(process_index, process_count)
  split = split or cfg["eval_split"]
  source, features = open_split(cfg["name"], split, cfg["data_dir"])
  example = _example_transform(cfg, features, kind, tokenizer, text_max_len)
  positioned = PositionedSource(source, keep_unreadable=True)
  ds = grain.MapDataset.source(positioned)[process_index::process_count]
  ds = ds.map(EvalOrBlank(example, positioned))
  per_host = -(-len(source) // process_count)
  num_batches = -(-per_host // batch_size)
  batched = ds.batch(
    batch_size,
    drop_remainder=False,
    batch_fn=lambda values: grain.experimental.batch_and_pad(values, batch_size=batch_size),
  )
  return EvalBatches(batched, batch_size, num_batches)
