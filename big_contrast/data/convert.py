"""Converters: users' image data -> TFDS ArrayRecord dataset directories.

Three inputs, one output format (read with ``tfds.builder_from_directory(out)
.as_data_source(split)`` or ``pipeline.train_iterator(dict(name=out), ...)``):

* ``convert_image_folder``: ``root/class_name/*.jpg`` -> ``image``, ``label``
  (ClassLabel, the folder names sorted), ``index`` (position in the sorted
  listing). Optionally ``root/{train,test}/class_name/...``.
* ``convert_manifest``: a JSONL or CSV file with an image path per row plus a
  ``caption`` (image-text pairs), a ``label`` name and/or a list of ``labels``
  names (multi-label -> multi-hot ``labels`` [C]); ``index`` = row number.
* ``convert_webdataset``: WebDataset-style ``.tar`` shards (``KEY.jpg`` +
  ``KEY.txt``) -> ``image``, ``caption``, ``index``.

Train/test: ``test_fraction`` (a seeded hash of each item's key decides, so
it is reproducible and order-independent) or splits given by the input (split
sub-folders, a ``split`` column, separate test tars). Images keep their
original bytes; bad items are skipped and listed in ``conversion_report.json``
(see ``convert_writer``, which also makes the conversion restartable).

This module knows nothing about grain or training.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Sequence

from big_contrast.data.convert_writer import (
  DEFAULT_FORMATS,
  DatasetSpec,
  Item,
  ListTask,
  SplitAssigner,
  TarTask,
  write_dataset,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
DEFAULT_SHARD_SIZE = 4096


def dataset_name(out_dir: str) -> str:
  """A TFDS-style snake_case name from the output folder's name."""
  base = os.path.basename(os.path.abspath(out_dir).rstrip("/")) or "dataset"
  name = re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_")
  return name if name and name[0].isalpha() else f"ds_{name}"


def _chunked_tasks(items: Iterator[Item], shard_size: int) -> Iterator[ListTask]:
  """Groups items per split into tasks of ``shard_size``: one output shard each.

  Task ids follow the input order, so the same input gives the same tasks.
  """
  buffers: dict[str, list[Item]] = {}
  task_id = 0
  for item in items:
    buf = buffers.setdefault(item.split, [])
    buf.append(item)
    if len(buf) >= shard_size:
      yield ListTask(task_id, buf)
      task_id += 1
      buffers[item.split] = []
  for split in sorted(buffers):
    if buffers[split]:
      yield ListTask(task_id, buffers[split])
      task_id += 1


# ---------------------------------------------------------------- image folder


def _list_images(folder: str, extensions: Sequence[str], ignored: list[str]) -> list[str]:
  """Image files under ``folder`` (recursive), sorted; others go to ``ignored``."""
  found = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames.sort()
    for f in sorted(filenames):
      path = os.path.join(dirpath, f)
      (found if f.lower().endswith(tuple(extensions)) else ignored).append(path)
  return found


def _subdirs(path: str) -> list[str]:
  return sorted(
    d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith(".")
  )


def convert_image_folder(
  root: str,
  out_dir: str,
  *,
  test_fraction: float = 0.0,
  seed: int = 0,
  split_subdirs: bool = False,
  name: str | None = None,
  shard_size: int = DEFAULT_SHARD_SIZE,
  num_workers: int = 0,
  verify: str = "decode",
  formats: Sequence[str] = DEFAULT_FORMATS,
  extensions: Sequence[str] = IMAGE_EXTENSIONS,
  overwrite: bool = False,
  progress: bool = True,
) -> dict:
  """``root/class_name/**/*.jpg`` -> TFDS dataset at ``out_dir``; returns the report.

  Args:
    root: one sub-folder per class (its name is the class name).
    out_dir: the dataset directory to create.
    test_fraction, seed: share of images (by a seeded hash of their path
      relative to ``root``) put in split ``test``; 0 -> only ``train``.
    split_subdirs: ``root/<split>/class_name/...`` instead; each split's
      classes must be a subset of the union of all splits' classes.
    name: TFDS dataset name (default from ``out_dir``'s folder name).
    shard_size: input images per output shard (per split).
    num_workers: worker processes that read and check the images.
    verify, formats: see ``convert_writer.check_image``.
    extensions: file endings taken as images; other files are listed in
      the report as ``not_an_image``.
  """
  root = os.path.abspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"Image folder {root} does not exist.")
  split_roots = (
    {s: os.path.join(root, s) for s in _subdirs(root)} if split_subdirs else {None: root}
  )
  class_names = sorted({c for r in split_roots.values() for c in _subdirs(r)})
  if not class_names:
    raise ValueError(
      f"{root} has no class sub-folders (expected root/class_name/*.jpg"
      f"{' under root/<split>/' if split_subdirs else ''})."
    )
  assign = SplitAssigner(test_fraction, seed)
  ignored: list[str] = []
  listing: list[Item] = []
  for split, split_root in split_roots.items():
    for label, cls in enumerate(class_names):
      folder = os.path.join(split_root, cls)
      if not os.path.isdir(folder):
        continue
      for path in _list_images(folder, extensions, ignored):
        rel = os.path.relpath(path, root)
        listing.append(
          Item(
            key=rel, index=len(listing), image_path=path, label=label, split=split or assign(rel)
          )
        )
  spec = DatasetSpec(
    name=name or dataset_name(out_dir),
    class_names=tuple(class_names),
    description=f"Converted from the image folder {root}.",
  )
  fingerprint = dict(
    kind="image_folder",
    root=root,
    test_fraction=test_fraction,
    seed=seed,
    split_subdirs=split_subdirs,
    shard_size=shard_size,
    num_items=len(listing),
  )
  return write_dataset(
    _chunked_tasks(iter(listing), shard_size),
    out_dir,
    spec,
    fingerprint=fingerprint,
    total=len(listing),
    num_workers=num_workers,
    verify=verify,
    formats=formats,
    overwrite=overwrite,
    progress=progress,
    reader_skipped=[
      {"key": os.path.relpath(p, root), "reason": "not_an_image", "detail": ""} for p in ignored
    ],
  )


# -------------------------------------------------------------------- manifest


def _undecodable(row: dict) -> str | None:
  """The first column whose value was not valid UTF-8 (read with surrogateescape)."""
  for key, value in row.items():
    if isinstance(value, str) and any("\udc80" <= c <= "\udcff" for c in value):
      return str(key)
  return None


def _manifest_rows(path: str) -> Iterator[tuple[int, dict]]:
  """(row number, row dict) of a JSONL (``.jsonl``/``.json``) or CSV/TSV file.

  Bytes that are not UTF-8 do not stop the conversion: the row gets an
  ``__undecodable__`` entry naming the column (JSON escapes such as ``\\udc80``
  are decoded too, and caught the same way).
  """
  with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
    if path.endswith((".jsonl", ".json")):
      row_no = 0
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          row = {"__error__": f"line {line_no}: {e}"}
        bad = _undecodable(row) if isinstance(row, dict) else None
        if bad:
          row["__undecodable__"] = bad
        yield row_no, row
        row_no += 1
    else:
      dialect = "excel-tab" if path.endswith(".tsv") else "excel"
      for row_no, row in enumerate(csv.DictReader(f, dialect=dialect)):
        bad = _undecodable(row)
        if bad:
          row["__undecodable__"] = bad
        yield row_no, row


def _label_list(value, sep: str) -> list[str]:
  if value is None:
    return []
  if isinstance(value, str):
    return [v.strip() for v in value.split(sep) if v.strip()]
  return [str(v).strip() for v in value]


def convert_manifest(
  manifest: str,
  out_dir: str,
  *,
  image_key: str = "image_path",
  caption_key: str | None = "caption",
  label_key: str | None = None,
  labels_key: str | None = None,
  label_names: Sequence[str] | None = None,
  label_sep: str = ";",
  split_key: str | None = None,
  image_root: str | None = None,
  test_fraction: float = 0.0,
  seed: int = 0,
  name: str | None = None,
  shard_size: int = DEFAULT_SHARD_SIZE,
  num_workers: int = 0,
  verify: str = "decode",
  formats: Sequence[str] = DEFAULT_FORMATS,
  overwrite: bool = False,
  progress: bool = True,
) -> dict:
  """A JSONL/CSV manifest of images -> TFDS dataset at ``out_dir``; returns the report.

  Each row names an image (``image_key``; relative paths are relative to
  ``image_root``, default the manifest's folder) and, depending on which
  keys are given:

  * ``caption_key`` -> ``caption`` (image-text pairs; an empty one is skipped);
  * ``label_key``   -> ``label`` ClassLabel from one name per row;
  * ``labels_key``  -> multi-hot ``labels`` [C] from a list of names (JSON
    list, or a ``label_sep``-separated string in CSV); an empty list is a
    valid all-zero row.

  Class names are ``label_names`` if given (rows naming others are skipped
  as ``unknown_label``), else all names in the manifest, sorted (one extra
  pass over the file). ``split_key`` takes each row's split from a column;
  otherwise ``test_fraction``/``seed`` decide by a hash of the image path.
  """
  manifest = os.path.abspath(manifest)
  image_root = os.path.abspath(image_root or os.path.dirname(manifest))
  if label_key and labels_key:
    raise ValueError("Give label_key (one class per image) or labels_key (multi-label), not both.")
  class_key = label_key or labels_key
  if class_key and label_names is None:
    names = set()
    for _, row in _manifest_rows(manifest):
      if "__error__" in row or "__undecodable__" in row:
        continue  # skipped below, with its reason
      names.update(
        _label_list(row.get(class_key), label_sep)
        if labels_key
        else _label_list([row[class_key]] if row.get(class_key) else [], "")
      )
    label_names = sorted(names)
  label_ids = {n: i for i, n in enumerate(label_names or ())}
  assign = SplitAssigner(test_fraction, seed)
  num_rows = 0

  def items() -> Iterator[Item]:
    nonlocal num_rows
    for row_no, row in _manifest_rows(manifest):
      num_rows += 1
      path = row.get(image_key)
      item = Item(
        key=f"row {row_no}: {path}",
        index=row_no,
        split="train",
        image_path=os.path.join(image_root, str(path)) if path else None,
      )
      if "__error__" in row:
        item.skip, item.detail = "bad_row", row["__error__"]
      elif "__undecodable__" in row:
        column = row["__undecodable__"]
        item.skip = "undecodable_caption" if column == caption_key else "bad_row"
        item.detail = f"column {column!r} is not valid UTF-8"
      elif not path:
        item.skip, item.detail = "no_image_path", f"no {image_key!r} value"
      item.split = str(row.get(split_key) or "").strip() if split_key else assign(str(path))
      if split_key and not item.split and not item.skip:
        item.skip, item.detail = "no_split", f"no {split_key!r} value"
      if caption_key:
        caption = row.get(caption_key)
        item.caption = "" if caption is None else str(caption)
      if class_key and not item.skip:
        names = (
          _label_list(row.get(class_key), label_sep)
          if labels_key
          else [str(row.get(class_key) or "").strip()]
        )
        unknown = [n for n in names if n not in label_ids]
        if unknown:
          item.skip, item.detail = "unknown_label", f"{unknown}"
        elif labels_key:
          item.labels = tuple(sorted({label_ids[n] for n in names}))
        else:
          item.label = label_ids[names[0]]
      yield item

  spec = DatasetSpec(
    name=name or dataset_name(out_dir),
    has_caption=bool(caption_key),
    class_names=tuple(label_names) if label_key else None,
    multilabel_names=tuple(label_names) if labels_key else None,
    description=f"Converted from the manifest {manifest}.",
  )
  fingerprint = dict(
    kind="manifest",
    manifest=manifest,
    mtime=os.path.getmtime(manifest),
    image_root=image_root,
    image_key=image_key,
    caption_key=caption_key,
    label_key=label_key,
    labels_key=labels_key,
    split_key=split_key,
    test_fraction=test_fraction,
    seed=seed,
    shard_size=shard_size,
  )
  total = sum(1 for _ in _manifest_rows(manifest)) if progress else None
  return write_dataset(
    _chunked_tasks(items(), shard_size),
    out_dir,
    spec,
    fingerprint=fingerprint,
    total=total,
    num_workers=num_workers,
    verify=verify,
    formats=formats,
    overwrite=overwrite,
    progress=progress,
  )


# ------------------------------------------------------------------ webdataset


def convert_webdataset(
  tars: Sequence[str],
  out_dir: str,
  *,
  test_tars: Sequence[str] = (),
  test_fraction: float = 0.0,
  seed: int = 0,
  caption_ext: str = "txt",
  name: str | None = None,
  num_workers: int = 0,
  verify: str = "decode",
  formats: Sequence[str] = DEFAULT_FORMATS,
  overwrite: bool = False,
  progress: bool = True,
) -> dict:
  """WebDataset-style ``.tar`` shards -> TFDS dataset at ``out_dir``; returns the report.

  A sample is the consecutive members sharing a key (the member's path up to
  the first dot of its file name): an image (``jpg``/``jpeg``/``png``/
  ``webp``) and a caption (``caption_ext``). One task (and one output shard
  per split) per tar. ``test_tars`` all go to ``test``; otherwise
  ``test_fraction``/``seed`` split by a hash of the sample key.
  ``index`` = ``t * 10**9 + k`` for sample k of tar number t (``tars`` then
  ``test_tars``, in the given order).
  """
  tars = [os.path.abspath(t) for t in tars]
  test_tars = [os.path.abspath(t) for t in test_tars]
  missing = [t for t in tars + test_tars if not os.path.isfile(t)]
  if missing:
    raise FileNotFoundError(f"Tar shards not found: {missing[:5]}")
  train_assign = SplitAssigner(0.0 if test_tars else test_fraction, seed)
  tasks = [TarTask(i, t, train_assign, caption_ext=caption_ext) for i, t in enumerate(tars)] + [
    TarTask(len(tars) + i, t, _AllTest(), caption_ext=caption_ext) for i, t in enumerate(test_tars)
  ]
  spec = DatasetSpec(
    name=name or dataset_name(out_dir),
    has_caption=True,
    description=f"Converted from {len(tasks)} WebDataset tar shards.",
  )
  fingerprint = dict(
    kind="webdataset",
    tars=tars,
    test_tars=test_tars,
    test_fraction=test_fraction,
    seed=seed,
    caption_ext=caption_ext,
  )
  return write_dataset(
    tasks,
    out_dir,
    spec,
    fingerprint=fingerprint,
    total=len(tasks),
    num_workers=num_workers,
    verify=verify,
    formats=formats,
    overwrite=overwrite,
    progress=progress,
  )


class _AllTest:
  def __call__(self, key: str) -> str:
    return "test"


def report_summary(report: dict, max_listed: int = 10) -> dict:
  """The report with the skipped list cut to ``max_listed`` entries (for printing)."""
  summary = {k: v for k, v in report.items() if k != "skipped"}
  summary["skipped_first"] = report["skipped"][:max_listed]
  summary["report_file"] = os.path.join(report["dataset_dir"], "conversion_report.json")
  return summary
