"""The bundled digits datasets build offline, once, into the expected splits."""

import collections
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from big_contrast import data
from big_contrast.data import builders, digits
from big_contrast.data.pipeline import load_source


@pytest.fixture(scope="module")
def data_dir(data_dir):
  data.ensure_built("bc_digits", data_dir)
  return data_dir


def test_digits_builds_offline_with_writer_held_out_splits(data_dir):
  builder = data.ensure_built("bc_digits", data_dir)
  assert builder.info.splits["train"].num_examples == 1500
  assert builder.info.splits["test"].num_examples == 297
  assert builder.info.file_format.value == "array_record"
  assert "tensorflow" not in sys.modules
  target = load_digits().target
  for split, first in (("train", 0), ("test", 1500)):
    source = load_source("bc_digits", split, data_dir)
    indices = [int(source[i]["index"]) for i in range(len(source))]
    assert indices == list(range(first, first + len(source)))
    assert [int(source[i]["label"]) for i in range(0, len(source), 37)] == [
      int(target[first + i]) for i in range(0, len(source), 37)
    ]


def test_digits_features_decode_with_pil(data_dir):
  record = load_source("bc_digits", "test", data_dir)[5]
  image = np.asarray(Image.open(io.BytesIO(record["image"])))
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  assert image.max() > 200 and image.min() == 0
  np.testing.assert_array_equal(image[..., 0], image[..., 2])
  # The same record through TFDS's own (non-TF) decoder.
  decoded = tfds.builder_from_directory(
    os.path.join(data_dir, "bc_digits", "1.0.0")
  ).as_data_source("test")[5]
  np.testing.assert_array_equal(decoded["image"], image)


def test_digits_captions_vary_and_name_the_digit(data_dir):
  source = load_source("bc_digits", "train", data_dir)
  by_label = collections.defaultdict(set)
  for i in range(0, 1500, 3):
    record = source[i]
    caption = record["caption"].decode()
    label = int(record["label"])
    assert digits.DIGIT_NAMES[label] in caption or str(label) in caption
    by_label[label].add(caption)
  assert all(len(captions) >= 5 for captions in by_label.values())


def test_ensure_built_second_call_does_not_rebuild(data_dir):
  record_file = os.path.join(
    data_dir, "bc_digits", "1.0.0", "bc_digits-train.array_record-00000-of-00001"
  )
  mtime = os.path.getmtime(record_file)
  builders._BUILT.clear()  # A fresh process: only the files on disk remain.
  data.ensure_built("bc_digits", data_dir)
  assert os.path.getmtime(record_file) == mtime


def test_ensure_built_is_safe_under_concurrent_first_use(tmp_path):
  code = (
    "import sys; from big_contrast import data; "
    "b = data.ensure_built('bc_digits', sys.argv[1]); "
    "print(b.info.splits['train'].num_examples)"
  )
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", code, str(tmp_path)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
    )
    for _ in range(2)
  ]
  outs = [p.communicate(timeout=120)[0].decode().split()[-1] for p in procs]
  assert [p.returncode for p in procs] == [0, 0]
  assert outs == ["1500", "1500"]
  assert len(load_source("bc_digits", "test", str(tmp_path))) == 297


def test_default_data_dir_follows_environment(monkeypatch):
  monkeypatch.setenv("BIG_CONTRAST_DATA_DIR", "/some/where")
  assert data.default_data_dir() == "/some/where"
  monkeypatch.delenv("BIG_CONTRAST_DATA_DIR")
  assert data.default_data_dir().endswith(
    os.path.join(".cache", "big_contrast", "tensorflow_datasets")
  )


def test_unknown_bundled_name_is_an_error_naming_it(tmp_path):
  with pytest.raises(ValueError, match="bc_nope"):
    data.ensure_built("bc_nope", str(tmp_path))


def test_digit_grids_are_multi_label_and_keep_writers_held_out(data_dir):
  data.ensure_built("bc_digits_grid", data_dir)

  def cells_of(split):
    source = load_source("bc_digits", split, data_dir)
    return {
      np.asarray(Image.open(io.BytesIO(source[i]["image"]))).tobytes() for i in range(len(source))
    }

  train_cells, test_cells = cells_of("train"), cells_of("test")
  for split, own, other, n in (
    ("train", train_cells, test_cells, 3000),
    ("test", test_cells, train_cells, 600),
  ):
    source = load_source("bc_digits_grid", split, data_dir)
    assert len(source) == n
    for i in range(0, n, n // 20):
      record = source[i]
      grid = np.asarray(Image.open(io.BytesIO(record["image"])))
      assert grid.shape == (64, 64, 3)
      cells = [grid[r : r + 32, c : c + 32].tobytes() for r in (0, 32) for c in (0, 32)]
      assert all(cell in own and cell not in other for cell in cells)
      named = {
        label
        for label, word in enumerate(digits.DIGIT_NAMES)
        if word in record["caption"].decode().split(": ")[1].replace(",", "").split()
      }
      assert set(np.flatnonzero(record["labels"]).tolist()) == named


def test_digits_vocabulary_is_word_level_on_captions_and_built_from_train_only(tmp_path):
  tok = data.make_tokenizer("bc_digits:128", str(tmp_path))
  path = os.path.join(tmp_path, "bc_digits_tokenizer", "train_bpe_128.model")
  assert os.path.isfile(path) and (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 2, 128)
  assert digits.sentencepiece_model(128, str(tmp_path)) == path  # cached, not retrained
  # Every caption, train or test, fits the digits config's 12 tokens with its EOS,
  # and is no longer than 8 (it is 31 bytes at most).
  _, labels = digits._load_sklearn_digits()
  captions = [digits.caption_for(int(y), i) for i, y in enumerate(labels)]
  ids = tok.encode_batch(captions, 32)
  lengths = (ids != tok.pad_id).sum(axis=1)
  assert lengths.max() <= 8 and (ids == tok.eos_id).sum() == len(captions)
  assert len(digits.train_captions()) == digits.NUM_TRAIN
  # A word it never saw is spelled, not lost: no unknown-piece ids.
  assert 1 not in tok.encode_batch(["a zebra"], 12)
