"""The converters' engine: checked items -> a sharded TFDS ArrayRecord dataset dir.

The input readers (``convert.py``) turn a user's files into *tasks*; each task
is a picklable list of ``Item``s (or a ``.tar`` shard to read) whose examples
all land in one output shard per split. ``write_dataset`` runs the tasks in
worker processes and then publishes the dataset:

* every example is checked before it is written (file readable, image decodes
  with PIL and is no decompression bomb, format one TF can also decode, caption
  valid UTF-8 and not empty); a failing one is skipped and listed, with its
  reason, in ``conversion_report.json``;
* images are stored as their original encoded bytes (no re-encode);
* a task writes ``{out}.incomplete/shards/{split}-{task}.array_record`` via a
  temporary name and then a ``done/{task}.json`` marker, so a killed run
  restarted with the same arguments redoes only the unfinished tasks;
* at the end the shards get TFDS names, ``dataset_info.json``/``features.json``
  are written (``tfds.folder_dataset.write_metadata``, no TensorFlow needed),
  and the folder is renamed to ``out_dir`` in one step: ``out_dir`` either
  does not exist or holds a complete dataset.

This module knows nothing about where items come from, grain or training.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordWriter
from etils import epath
from PIL import Image
from tqdm.auto import tqdm

from big_contrast.data.augment import MAX_IMAGE_PIXELS, image_size

REPORT_FILE = "conversion_report.json"
# Formats that PIL (our pipeline) and tf.io.decode_image both read.
DEFAULT_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Which features the output has; ``make_features`` turns it into TFDS features.

  ``class_names``: a ``label`` ClassLabel (single label per image).
  ``multilabel_names``: a multi-hot ``labels`` Tensor ``[C]`` (int64, the
  layout ``pipeline``/``examples`` read), names kept in ``metadata.json``.
  """

  name: str
  has_caption: bool = False
  class_names: tuple[str, ...] | None = None
  multilabel_names: tuple[str, ...] | None = None
  description: str = ""


def make_features(spec: DatasetSpec) -> tfds.features.FeaturesDict:
  features: dict[str, Any] = {
    # encoding_format=None: the bytes are stored as given (JPEG, PNG, ...).
    "image": tfds.features.Image(shape=(None, None, 3), encoding_format=None),
    "index": np.int64,
  }
  if spec.has_caption:
    features["caption"] = tfds.features.Text()
  if spec.class_names is not None:
    features["label"] = tfds.features.ClassLabel(names=list(spec.class_names))
  if spec.multilabel_names is not None:
    features["labels"] = tfds.features.Tensor(shape=(len(spec.multilabel_names),), dtype=np.int64)
  return tfds.features.FeaturesDict(features)


@dataclasses.dataclass
class Item:
  """One candidate example. ``key`` names it in the report (path or tar/member).

  ``image_path`` is read by the worker; a ``TarTask`` fills ``image_bytes``.
  ``skip`` is a reason already known by the reader (e.g. ``missing_caption``).
  """

  key: str
  index: int
  split: str
  image_path: str | None = None
  image_bytes: bytes | None = None
  caption: str | None = None
  label: int | None = None
  labels: tuple[int, ...] | None = None
  skip: str | None = None
  detail: str = ""


@dataclasses.dataclass
class ListTask:
  """A fixed list of items (image files on disk)."""

  task_id: int
  items: list[Item]

  @property
  def size(self) -> int:
    return len(self.items)

  def iter_items(self) -> Iterator[Item]:
    return iter(self.items)


@dataclasses.dataclass
class TarTask:
  """One WebDataset-style ``.tar`` shard: ``KEY.jpg`` + ``KEY.txt`` per sample.

  ``index`` of sample k of tar number t is ``t * 10**9 + k`` (stable without
  reading the other tars). Split by ``split_of(key)``.
  """

  task_id: int
  path: str
  split_of: Any  # callable key -> split; picklable (SplitAssigner)
  image_exts: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
  caption_ext: str = "txt"
  size: int = 1

  def iter_items(self) -> Iterator[Item]:
    k = 0
    for key, files in _tar_samples(self.path):
      ext = next((e for e in self.image_exts if e in files), None)
      item = Item(
        key=f"{self.path}:{key}", index=self.task_id * 10**9 + k, split=self.split_of(key)
      )
      k += 1
      if ext is None:
        item.skip, item.detail = "missing_image", f"members: {sorted(files)}"
      elif self.caption_ext not in files:
        item.skip, item.detail = "missing_caption", f"members: {sorted(files)}"
      else:
        item.image_bytes = files[ext]
        try:
          item.caption = files[self.caption_ext].decode("utf-8")
        except UnicodeDecodeError as e:
          item.skip, item.detail = "undecodable_caption", f"{key}.{self.caption_ext}: {e}"
      yield item


def _tar_samples(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
  """(key, {ext: bytes}) per sample; members of a sample are consecutive."""
  current, files = None, {}
  with tarfile.open(path, "r|*") as tar:  # Streaming: works on pipes/GCS fuse.
    for member in tar:
      if not member.isfile():
        continue
      base = os.path.basename(member.name)
      if base.startswith("."):
        continue
      stem, _, ext = base.partition(".")
      key = os.path.join(os.path.dirname(member.name), stem)
      if key != current:
        if current is not None:
          yield current, files
        current, files = key, {}
      files[ext.lower()] = tar.extractfile(member).read()
  if current is not None:
    yield current, files


@dataclasses.dataclass(frozen=True)
class SplitAssigner:
  """key -> 'test' with probability ``test_fraction`` (by a seeded hash), else 'train'.

  A hash of the key (not the order) decides, so duplicates of a key never
  straddle the splits and the assignment does not depend on input order.
  """

  test_fraction: float = 0.0
  seed: int = 0

  def __call__(self, key: str) -> str:
    if self.test_fraction <= 0:
      return "train"
    digest = hashlib.blake2b(f"{self.seed}:{key}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    return "test" if u < self.test_fraction else "train"


def check_image(data: bytes, verify: str, formats: Sequence[str]) -> str | None:
  """None if ``data`` is a usable image, else why not.

  An image declaring more than ``augment.MAX_IMAGE_PIXELS`` pixels is a
  ``decompression_bomb`` (never decoded).
  ``verify``: ``"decode"`` decodes every pixel (JPEGs at 1/8 scale via
  ``draft``, which still reads the whole entropy-coded stream, so truncation
  is caught); ``"header"`` only parses the header; ``"none"`` trusts the bytes.
  """
  if verify == "none":
    return None
  size = image_size(data)
  if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
    return (
      f"decompression_bomb:{len(data)} bytes declare {size[0]}x{size[1]} pixels "
      f"(> {MAX_IMAGE_PIXELS}, big_contrast.data.augment.MAX_IMAGE_PIXELS)"
    )
  try:
    with Image.open(io.BytesIO(data)) as img:
      if img.format not in formats:
        return f"unsupported_format:{img.format}"
      if verify == "decode":
        img.draft("RGB", (1, 1))
        img.load()
  except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data.
    return f"undecodable:{type(e).__name__}: {e}"
  return None


@dataclasses.dataclass(frozen=True)
class _WorkerConfig:
  spec: DatasetSpec
  work_dir: str
  verify: str
  formats: tuple[str, ...]


_FEATURES_CACHE: dict[DatasetSpec, tfds.features.FeaturesDict] = {}


def _example(item: Item, cfg: _WorkerConfig) -> tuple[dict | None, str | None, str]:
  """(example, None, "") or (None, reason, detail)."""
  if item.skip:
    return None, item.skip, item.detail
  data = item.image_bytes
  if data is None:
    try:
      with open(item.image_path, "rb") as f:
        data = f.read()
    except FileNotFoundError:
      return None, "missing_file", item.image_path
    except OSError as e:
      return None, "unreadable_file", f"{item.image_path}: {e}"
  problem = check_image(data, cfg.verify, cfg.formats)
  if problem:
    reason, _, detail = problem.partition(":")
    return None, reason, detail.strip()
  example: dict[str, Any] = {"image": data, "index": item.index}
  if cfg.spec.has_caption:
    caption = (item.caption or "").strip()
    if not caption:
      return None, "empty_caption", ""
    example["caption"] = caption
  if cfg.spec.class_names is not None:
    example["label"] = item.label
  if cfg.spec.multilabel_names is not None:
    multi_hot = np.zeros((len(cfg.spec.multilabel_names),), np.int64)
    multi_hot[list(item.labels or ())] = 1
    example["labels"] = multi_hot
  return example, None, ""


def _run_task(task, cfg: _WorkerConfig) -> dict:
  """Writes one task's shards (one per split it touches) and its done marker."""
  features = _FEATURES_CACHE.get(cfg.spec)
  if features is None:
    features = _FEATURES_CACHE[cfg.spec] = make_features(cfg.spec)
  writers: dict[str, Any] = {}
  counts: Counter = Counter()
  nbytes: Counter = Counter()
  skipped: list[dict] = []

  def shard(split: str) -> str:
    return os.path.join(cfg.work_dir, "shards", f"{split}-{task.task_id:06d}")

  try:
    for item in task.iter_items():
      example, reason, detail = _example(item, cfg)
      if example is None:
        skipped.append({"key": item.key, "reason": reason, "detail": detail[:300]})
        continue
      record = features.serialize_example(example)
      if item.split not in writers:
        writers[item.split] = ArrayRecordWriter(shard(item.split) + ".tmp", "group_size:1")
      writers[item.split].write(record)
      counts[item.split] += 1
      nbytes[item.split] += len(record)
  except (OSError, tarfile.TarError) as e:
    # A corrupt/unreadable tar: keep what was read, list the rest as lost.
    skipped.append(
      {
        "key": getattr(task, "path", str(task.task_id)),
        "reason": "unreadable_tar",
        "detail": f"{type(e).__name__}: {e}"[:300],
      }
    )
  for split, writer in writers.items():
    writer.close()
    os.replace(shard(split) + ".tmp", shard(split) + ".array_record")
  result = {
    "task_id": task.task_id,
    "counts": dict(counts),
    "bytes": dict(nbytes),
    "skipped": skipped,
    "size": task.size,
  }
  marker = os.path.join(cfg.work_dir, "done", f"{task.task_id:06d}.json")
  with open(marker + ".tmp", "w") as f:
    json.dump(result, f)
  os.replace(marker + ".tmp", marker)
  return result


def _prepare_work_dir(out_dir: str, fingerprint: dict, overwrite: bool) -> str:
  if os.path.exists(out_dir):
    if not overwrite:
      raise FileExistsError(
        f"{out_dir} already exists; pass overwrite=True (--overwrite) to replace it."
      )
  work_dir = out_dir.rstrip("/") + ".incomplete"
  config_path = os.path.join(work_dir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      previous = json.load(f)
    if previous != fingerprint or overwrite:
      shutil.rmtree(work_dir)
  os.makedirs(os.path.join(work_dir, "shards"), exist_ok=True)
  os.makedirs(os.path.join(work_dir, "done"), exist_ok=True)
  if not os.path.exists(config_path):
    with open(config_path, "w") as f:
      json.dump(fingerprint, f, indent=1)
  return work_dir


def _bounded_map(fn, tasks: Iterable, workers: int, cfg: _WorkerConfig) -> Iterator[dict]:
  """``fn(task, cfg)`` over tasks, at most 2*workers in flight (the task
  iterator may be huge, so it is never consumed ahead of time)."""
  if workers <= 0:
    for task in tasks:
      yield fn(task, cfg)
    return
  ctx = multiprocessing.get_context("spawn")  # Safe even with JAX threads alive.
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
    pending: set = set()
    for task in tasks:
      pending.add(pool.submit(fn, task, cfg))
      if len(pending) >= 2 * workers:
        done, pending = concurrent.futures.wait(
          pending, return_when=concurrent.futures.FIRST_COMPLETED
        )
        yield from (f.result() for f in done)
    for f in concurrent.futures.as_completed(pending):
      yield f.result()


def write_dataset(
  tasks: Iterable,
  out_dir: str,
  spec: DatasetSpec,
  *,
  fingerprint: dict,
  total: int | None = None,
  num_workers: int = 0,
  verify: str = "decode",
  formats: Sequence[str] = DEFAULT_FORMATS,
  overwrite: bool = False,
  reader_skipped: Sequence[dict] = (),
  progress: bool = True,
) -> dict:
  """Runs ``tasks`` and publishes the dataset at ``out_dir``; returns the report.

  Args:
    tasks: ``ListTask``/``TarTask``s with stable ``task_id``s (same input ->
      same tasks), so a restart can skip the ones already done.
    out_dir: the dataset directory to create (it will hold
      ``dataset_info.json``); read it with ``tfds.builder_from_directory``.
    spec: the features.
    fingerprint: JSON-able description of the inputs and options; a restart
      resumes only if it is unchanged, else starts over.
    total: number of input items, for the progress bar.
    num_workers: worker processes (0: in this process).
    verify, formats: see ``check_image``.
    reader_skipped: items the reader already rejected (listed in the report).
  """
  start = time.time()
  out_dir = os.path.abspath(out_dir)
  fingerprint = json.loads(
    json.dumps(  # Canonical JSON form (tuples -> lists).
      {**fingerprint, "spec": dataclasses.asdict(spec), "verify": verify, "formats": list(formats)}
    )
  )
  work_dir = _prepare_work_dir(out_dir, fingerprint, overwrite)
  cfg = _WorkerConfig(spec, work_dir, verify, tuple(formats))
  results: dict[int, dict] = {}
  done_dir = os.path.join(work_dir, "done")
  for name in os.listdir(done_dir):
    if name.endswith(".json"):
      with open(os.path.join(done_dir, name)) as f:
        result = json.load(f)
      results[result["task_id"]] = result
  resumed = len(results)
  bar = tqdm(total=total, unit="item", desc=f"converting {spec.name}", disable=not progress)

  def todo():
    for task in tasks:
      if task.task_id in results:
        bar.update(task.size)
      else:
        yield task

  for result in _bounded_map(_run_task, todo(), num_workers, cfg):
    results[result["task_id"]] = result
    bar.update(result["size"])
    bar.set_postfix(skipped=sum(len(r["skipped"]) for r in results.values()))
  bar.close()
  report = _publish(results, work_dir, out_dir, spec, overwrite, list(reader_skipped))
  report.update(resumed_tasks=resumed, seconds=round(time.time() - start, 1))
  with open(os.path.join(out_dir, REPORT_FILE), "w") as f:
    json.dump(report, f, indent=1)
  return report


def _publish(
  results: dict[int, dict],
  work_dir: str,
  out_dir: str,
  spec: DatasetSpec,
  overwrite: bool,
  reader_skipped: list[dict],
) -> dict:
  final = os.path.join(work_dir, "dataset")
  os.makedirs(final, exist_ok=True)
  split_infos = []
  splits = sorted({s for r in results.values() for s in r["counts"]})
  if not splits:
    raise ValueError(
      f"No example of the input could be converted; see the skipped items "
      f"under {work_dir}/done/*.json."
    )
  template = tfds.core.ShardedFileTemplate(
    data_dir=epath.Path(final),
    template=_TEMPLATE,
    dataset_name=spec.name,
    filetype_suffix="array_record",
  )
  for split in splits:
    tasks = [r for _, r in sorted(results.items()) if r["counts"].get(split)]
    lengths = [r["counts"][split] for r in tasks]
    for shard_index, r in enumerate(tasks):
      src = os.path.join(work_dir, "shards", f"{split}-{r['task_id']:06d}.array_record")
      dst = template.replace(split=split).sharded_filepath(
        shard_index=shard_index, num_shards=len(tasks)
      )
      if os.path.exists(src):  # Absent if a previous publish got this far.
        os.replace(src, os.fspath(dst))
    split_infos.append(
      tfds.core.SplitInfo(
        name=split,
        shard_lengths=lengths,
        filename_template=template.replace(split=split),
        num_bytes=sum(r["bytes"][split] for r in tasks),
      )
    )
  metadata = tfds.core.MetadataDict()
  if spec.multilabel_names is not None:
    metadata["label_names"] = list(spec.multilabel_names)
  tfds.folder_dataset.write_metadata(
    data_dir=final,
    features=make_features(spec),
    split_infos=split_infos,
    filename_template=template,
    check_data=False,
    description=spec.description,
    metadata=metadata,
    disable_shuffling=True,
  )
  skipped = reader_skipped + [s for _, r in sorted(results.items()) for s in r["skipped"]]
  report = {
    "dataset_dir": out_dir,
    "splits": {info.name: info.num_examples for info in split_infos},
    "num_skipped": len(skipped),
    "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
    "skipped": skipped,
  }
  if overwrite and os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(final, out_dir)
  shutil.rmtree(work_dir)
  return report
