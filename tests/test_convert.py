"""Converters: build small datasets in tmp_path, read them back through TFDS and grain."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from big_contrast.data import convert, convert_writer, pipeline
from big_contrast.data.tokenizer import make_tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
import convert_image_folder
import convert_image_text
import convert_multilabel


def _photos() -> list[np.ndarray]:
  """Real photographs if scikit-image is installed, else synthetic pictures."""
  try:
    from skimage import data  # noqa: PLC0415 — optional: scikit-image

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
  except ImportError:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (120 + 10 * i, 160, 3), np.uint8) for i in range(4)]


def _encoded(rng: np.random.Generator, fmt: str = "JPEG") -> bytes:
  """A random 48-96 px crop of a photo, encoded as ``fmt``."""
  photos = _photos()
  photo = photos[rng.integers(len(photos))]
  h, w = rng.integers(48, 97, size=2)
  top, left = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
  buf = io.BytesIO()
  Image.fromarray(photo[top : top + h, left : left + w]).save(buf, format=fmt)
  return buf.getvalue()


def _corrupt_jpeg(rng) -> bytes:
  return _encoded(rng)[:200]  # Valid header, truncated entropy-coded data.


def _write(path, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def _records(out_dir: str, split: str) -> list[dict]:
  builder = tfds.builder_from_directory(out_dir)
  source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
  return [dict(source[i]) for i in range(len(source))]


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  """root/{cat,dog,fish}/ with JPEGs and PNGs, a truncated JPEG and a stray text file."""
  root = str(tmp_path_factory.mktemp("folder"))
  rng = np.random.default_rng(1)
  expected = {}  # bytes -> class name
  for cls, n in (("cat", 9), ("dog", 7), ("fish", 6)):
    for i in range(n):
      fmt = "PNG" if i % 4 == 3 else "JPEG"
      data = _encoded(rng, fmt)
      _write(os.path.join(root, cls, f"{i:03d}.{fmt.lower()}"), data)
      expected[data] = cls
  _write(os.path.join(root, "dog", "broken.jpg"), _corrupt_jpeg(rng))
  _write(os.path.join(root, "cat", "notes.txt"), b"not an image")
  return root, expected


@pytest.fixture(scope="module")
def folder_dataset(image_folder, tmp_path_factory):
  root, _ = image_folder
  out = str(tmp_path_factory.mktemp("out") / "pets")
  report = convert.convert_image_folder(
    root, out, test_fraction=0.3, seed=7, shard_size=5, progress=False
  )
  return out, report


def test_image_folder_keeps_bytes_and_labels_and_lists_bad_files(image_folder, folder_dataset):
  _, expected = image_folder
  out, report = folder_dataset
  builder = tfds.builder_from_directory(out)
  names = builder.info.features["label"].names
  assert names == ["cat", "dog", "fish"]
  got = {}
  for split in ("train", "test"):
    for r in _records(out, split):
      got[r["image"]] = names[r["label"]]
  assert got == expected  # Every good image, bytes unchanged, right class.
  assert report["splits"]["train"] + report["splits"]["test"] == len(expected)
  assert 0 < report["splits"]["test"] < report["splits"]["train"]
  assert builder.info.splits["train"].num_shards > 1  # shard_size=5 -> several files.
  reasons = {s["key"]: s["reason"] for s in report["skipped"]}
  assert reasons == {
    os.path.join("dog", "broken.jpg"): "undecodable",
    os.path.join("cat", "notes.txt"): "not_an_image",
  }
  with open(os.path.join(out, convert_writer.REPORT_FILE)) as f:
    assert json.load(f)["skipped_by_reason"] == {"undecodable": 1, "not_an_image": 1}
  assert not os.path.exists(out + ".incomplete")


def test_image_folder_split_is_reproducible_and_respects_subdirs(image_folder, tmp_path):
  root, expected = image_folder
  a = convert.convert_image_folder(
    root, str(tmp_path / "a"), test_fraction=0.3, seed=7, progress=False
  )
  b = convert.convert_image_folder(
    root, str(tmp_path / "b"), test_fraction=0.3, seed=7, shard_size=3, progress=False
  )
  assert a["splits"] == b["splits"]
  assert {r["image"] for r in _records(str(tmp_path / "a"), "test")} == {
    r["image"] for r in _records(str(tmp_path / "b"), "test")
  }
  # root/<split>/<class>/...: splits come from the folders.
  split_root = tmp_path / "split_root"
  for i, (data, cls) in enumerate(expected.items()):
    _write(str(split_root / ("test" if i % 5 == 0 else "train") / cls / f"{i}.img.jpg"), data)
  report = convert.convert_image_folder(
    str(split_root), str(tmp_path / "c"), split_subdirs=True, progress=False
  )
  assert report["splits"] == {
    "test": len(range(0, len(expected), 5)),
    "train": len(expected) - len(range(0, len(expected), 5)),
  }


def test_image_folder_reads_through_train_and_eval_pipelines(folder_dataset):
  out, report = folder_dataset
  cfg = dict(name=out, image_size=32)
  it = pipeline.train_iterator(
    cfg, kind="multiview", global_batch_size=4, seed=0, process_index=0, process_count=1
  )
  batch = next(it)
  assert batch["views"].shape == (4, 2, 32, 32, 3)
  assert batch["label"].shape == (4,) and batch["skipped"].sum() == 0
  seen = []
  for b in pipeline.eval_batches(cfg, kind="image", batch_size=4, process_index=0, process_count=1):
    seen.extend(b["index"][b["mask"]].tolist())
  assert sorted(seen) == list(range(report["splits"]["test"]))
  assert pipeline.class_names(cfg) == ["cat", "dog", "fish"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
  """images/ + rows of (image_path, caption): good ones, a missing file, an
  empty caption and a corrupt JPEG."""
  root = tmp_path_factory.mktemp("pairs")
  rng = np.random.default_rng(2)
  rows, good = [], {}
  for i in range(12):
    data = _encoded(rng)
    _write(str(root / "images" / f"{i}.jpg"), data)
    rows.append({"image_path": f"images/{i}.jpg", "caption": f"photo number {i}, café"})
    good[data] = rows[-1]["caption"]
  rows.append({"image_path": "images/missing.jpg", "caption": "gone"})
  _write(str(root / "images" / "empty.jpg"), _encoded(rng))
  rows.append({"image_path": "images/empty.jpg", "caption": "  "})
  _write(str(root / "images" / "bad.jpg"), _corrupt_jpeg(rng))
  rows.append({"image_path": "images/bad.jpg", "caption": "a broken file"})
  return root, rows, good


def _check_pairs(out, report, good):
  got = {r["image"]: _text(r["caption"]) for s in report["splits"] for r in _records(out, s)}
  assert got == good
  reasons = sorted(s["reason"] for s in report["skipped"])
  assert reasons == ["empty_caption", "missing_file", "undecodable"]


def test_jsonl_pairs_keep_bytes_and_captions_and_skip_bad_rows(pairs, tmp_path):
  root, rows, good = pairs
  manifest = root / "pairs.jsonl"
  manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  out = str(tmp_path / "pairs_jsonl")
  report = convert.convert_manifest(
    str(manifest), out, test_fraction=0.25, seed=1, shard_size=4, progress=False
  )
  _check_pairs(out, report, good)
  tok = make_tokenizer("bytes")
  cfg = dict(name=out, image_size=32)
  batch = next(
    pipeline.train_iterator(
      cfg,
      kind="image_text",
      global_batch_size=4,
      seed=0,
      tokenizer=tok,
      process_index=0,
      process_count=1,
    )
  )
  assert batch["image"].shape == (4, 32, 32, 3) and batch["text"].shape == (4, 32)
  n_test = sum(
    len(b["mask"]) and int(b["mask"].sum())
    for b in pipeline.eval_batches(
      cfg, kind="image_text", batch_size=3, tokenizer=tok, process_index=0, process_count=1
    )
  )
  assert n_test == report["splits"]["test"]


def test_csv_pairs_match_jsonl(pairs, tmp_path):
  root, rows, good = pairs
  manifest = root / "pairs.csv"
  with open(manifest, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=["image_path", "caption"])
    writer.writeheader()
    writer.writerows(rows)
  out = str(tmp_path / "pairs_csv")
  report = convert.convert_manifest(str(manifest), out, progress=False)
  _check_pairs(out, report, good)
  assert list(report["splits"]) == ["train"]


def test_multilabel_manifest_gives_multi_hot_labels(tmp_path):
  rng = np.random.default_rng(3)
  label_sets = [["sky", "tree"], ["tree"], [], ["water", "sky"], ["tree", "water"], ["sky"]]
  rows, expected = [], {}
  for i, names in enumerate(label_sets):
    data = _encoded(rng)
    _write(str(tmp_path / f"{i}.jpg"), data)
    rows.append(
      {"file": f"{i}.jpg", "tags": ";".join(names), "split": "test" if i < 2 else "train"}
    )
    expected[data] = set(names)
  manifest = tmp_path / "tags.csv"
  with open(manifest, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["file", "tags", "split"])
    writer.writeheader()
    writer.writerows(rows)
  out = str(tmp_path / "tags")
  report = convert.convert_manifest(
    str(manifest),
    out,
    image_key="file",
    caption_key=None,
    labels_key="tags",
    split_key="split",
    progress=False,
  )
  assert report["splits"] == {"test": 2, "train": 4} and report["num_skipped"] == 0
  builder = tfds.builder_from_directory(out)
  names = builder.info.metadata["label_names"]
  assert names == ["sky", "tree", "water"]
  got = {
    r["image"]: {names[c] for c in np.flatnonzero(r["labels"])}
    for s in ("train", "test")
    for r in _records(out, s)
  }
  assert got == expected
  batch = next(
    pipeline.train_iterator(
      dict(name=out, image_size=32),
      kind="image",
      global_batch_size=2,
      seed=0,
      process_index=0,
      process_count=1,
    )
  )
  assert batch["labels"].shape == (2, 3) and batch["labels"].dtype == np.int32
  # Names outside a given vocabulary are skipped and listed.
  report = convert.convert_manifest(
    str(manifest),
    str(tmp_path / "tags2"),
    image_key="file",
    caption_key=None,
    labels_key="tags",
    label_names=["sky", "tree"],
    progress=False,
  )
  assert report["skipped_by_reason"] == {"unknown_label": 2}


def _tar(path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
  with tarfile.open(path, "w") as tar:
    for key, files in samples:
      for ext, data in files.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_webdataset_tars_keep_pairs_and_skip_incomplete_samples(tmp_path):
  rng = np.random.default_rng(4)
  good, tars = {}, []
  for t in range(3):
    samples = []
    for k in range(5):
      data, caption = _encoded(rng), f"tar {t} sample {k}"
      samples.append((f"{t:02d}/{k:04d}", {"jpg": data, "txt": caption.encode()}))
      good[data] = caption
    if t == 0:
      samples.append(("00/nocap", {"jpg": _encoded(rng)}))
      samples.append(("00/empty", {"jpg": _encoded(rng), "txt": b"\n"}))
      samples.append(("00/bad", {"jpg": _corrupt_jpeg(rng), "txt": b"broken"}))
      samples.append(("00/noimg", {"txt": b"text only"}))
    tars.append(str(tmp_path / f"shard-{t:05d}.tar"))
    _tar(tars[-1], samples)
  out = str(tmp_path / "wds")
  report = convert.convert_webdataset(tars[:2], out, test_tars=tars[2:], progress=False)
  assert report["splits"] == {"test": 5, "train": 10}
  assert sorted(s["reason"] for s in report["skipped"]) == [
    "empty_caption",
    "missing_caption",
    "missing_image",
    "undecodable",
  ]
  got = {r["image"]: _text(r["caption"]) for s in ("train", "test") for r in _records(out, s)}
  assert got == good
  test_index = sorted(r["index"] for r in _records(out, "test"))
  assert test_index == [2 * 10**9 + k for k in range(5)]


def test_killed_conversion_restarts_and_redoes_only_unfinished_shards(
  image_folder, tmp_path, monkeypatch
):
  root, _ = image_folder
  out = str(tmp_path / "restart")
  real = convert_writer._run_task

  def crash_on_third(task, cfg):
    if task.task_id == 2:
      raise KeyboardInterrupt("simulated kill")
    return real(task, cfg)

  monkeypatch.setattr(convert_writer, "_run_task", crash_on_third)
  with pytest.raises(KeyboardInterrupt):
    convert.convert_image_folder(root, out, shard_size=4, progress=False)
  assert not os.path.exists(out)  # Nothing half-written where readers look.
  monkeypatch.setattr(convert_writer, "_run_task", real)
  report = convert.convert_image_folder(root, out, shard_size=4, progress=False)
  assert report["resumed_tasks"] == 2
  fresh = convert.convert_image_folder(root, str(tmp_path / "fresh"), shard_size=4, progress=False)
  assert report["splits"] == fresh["splits"]
  assert _records(out, "train") == _records(str(tmp_path / "fresh"), "train")
  with pytest.raises(FileExistsError, match="overwrite"):
    convert.convert_image_folder(root, out, progress=False)


def test_worker_processes_write_the_same_dataset(image_folder, folder_dataset, tmp_path):
  root, _ = image_folder
  out, report = folder_dataset
  par = str(tmp_path / "par")
  report2 = convert.convert_image_folder(
    root, par, test_fraction=0.3, seed=7, shard_size=5, num_workers=2, progress=False
  )
  assert report2["splits"] == report["splits"]
  for split in ("train", "test"):
    assert _records(par, split) == _records(out, split)


def test_command_line_tools_print_a_summary(image_folder, pairs, tmp_path, capsys):
  root, _ = image_folder
  summary = convert_image_folder.main(
    ["--root", root, "--out", str(tmp_path / "f"), "--num_workers", "0", "--test_fraction", "0.2"]
  )
  assert json.loads(capsys.readouterr().out) == summary
  assert summary["skipped_by_reason"] == {"undecodable": 1, "not_an_image": 1}
  pairs_root, rows, good = pairs
  manifest = pairs_root / "cli.jsonl"
  manifest.write_text(
    "".join(json.dumps({**r, "labels": ["a", "b"][: i % 3]}) + "\n" for i, r in enumerate(rows))
  )
  summary = convert_image_text.main(
    ["--manifest", str(manifest), "--out", str(tmp_path / "t"), "--num_workers", "0"]
  )
  assert summary["splits"] == {"train": len(good)}
  summary = convert_multilabel.main(
    ["--manifest", str(manifest), "--out", str(tmp_path / "m"), "--num_workers", "0"]
  )
  assert summary["skipped_by_reason"] == {"missing_file": 1, "undecodable": 1}
  assert tfds.builder_from_directory(str(tmp_path / "m")).info.metadata["label_names"] == ["a", "b"]
