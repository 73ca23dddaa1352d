"""The bundled digits datasets: scikit-learn's handwritten digits as TFDS ArrayRecord.

Two TFDS builders that need no download and no TensorFlow:

* ``bc_digits``: the 1,797 8x8 digits of ``sklearn.datasets.load_digits``,
  upsampled to 32x32 RGB PNGs, with ``label``, a templated ``caption`` and
  ``index``. Split ``train`` = the first 1,500 examples in scikit-learn's
  order, ``test`` = the last 297 (whole writers held out, no shuffle).
* ``bc_digits_grid``: 64x64 2x2 grids of those digits with a multi-hot
  ``labels`` feature (multi-label data); train grids use train digits only,
  test grids test digits only.

``big_contrast.data.ensure_built(name)`` builds them on first use
(``builders.build_once``).

This module knows nothing about grain, models or training.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from big_contrast.data.builders import BundledBuilder, default_data_dir
from big_contrast.data.tokenizer import cached_sentencepiece

DIGIT_NAMES = (
  "zero",
  "one",
  "two",
  "three",
  "four",
  "five",
  "six",
  "seven",
  "eight",
  "nine",
)
NUM_TRAIN = 1500  # sklearn's first 1500 digits; the remaining 297 are `test`.
IMAGE_SIZE = 32
GRID_SIZE = 64

# Several phrasings so that captions in a batch are not all identical; each
# example's template is fixed by its index (see `caption_for`). `{word}` is
# the digit's name, `{num}` the numeral.
CAPTION_TEMPLATES = (
  "a handwritten digit {word}",
  "the number {num} written by hand",
  "a scanned digit: {word}",
  "a photo of the digit {word}",
  "a blurry handwritten {num}",
  "the digit {word}, handwritten",
  "a small picture of a {word}",
  "someone wrote the number {word}",
)


def caption_for(label: int, index: int) -> str:
  """The caption of digit ``label`` at dataset position ``index``.

  The template is chosen by a hash of the index (not ``index % n``, which
  would correlate with sklearn's ordering of writers).
  """
  template = CAPTION_TEMPLATES[zlib.crc32(f"caption-{index}".encode()) % len(CAPTION_TEMPLATES)]
  return template.format(word=DIGIT_NAMES[label], num=label)


def _digit_to_rgb(pixels_8x8: np.ndarray, size: int) -> np.ndarray:
  """[8, 8] values 0..16 -> [size, size, 3] uint8 (bright ink on black)."""
  gray = np.clip(np.round(pixels_8x8 * (255.0 / 16.0)), 0, 255).astype(np.uint8)
  big = Image.fromarray(gray, mode="L").resize((size, size), Image.BILINEAR)
  return np.repeat(np.asarray(big)[..., None], 3, axis=-1)


def _png_bytes(rgb: np.ndarray) -> bytes:
  # Encoded here with PIL so that tfds never needs TensorFlow to encode.
  buf = io.BytesIO()
  Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
  return buf.getvalue()


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
  # Bundled with scikit-learn, so offline; imported here as it costs 1.6 s.
  from sklearn.datasets import load_digits  # noqa: PLC0415 — only building needs it

  digits = load_digits()
  return digits.images, digits.target.astype(np.int64)


def train_captions() -> list[str]:
  """The captions of the ``train`` split, in order."""
  _, labels = _load_sklearn_digits()
  return [caption_for(int(labels[i]), i) for i in range(NUM_TRAIN)]


def sentencepiece_model(vocab_size: int = 128, data_dir: str | None = None) -> str:
  """Path of a byte-pair SentencePiece model of the ``train`` captions (vocabulary ``bc_digits``).

  At 128 pieces every caption word is one or two pieces (a caption is at most 8
  tokens with EOS, against 31 bytes) and a word it never saw falls back to
  letters. Built on first use (well under a second) into
  ``<data_dir>/bc_digits_tokenizer/`` and reused; the test captions never shape it.
  """
  folder = os.path.join(data_dir or default_data_dir(), "bc_digits_tokenizer")
  path = os.path.join(folder, f"train_bpe_{vocab_size}.model")
  return cached_sentencepiece(path, train_captions, vocab_size, "bpe")


def _split_range(split: str) -> range:
  images, _ = _load_sklearn_digits()
  if split == "train":
    return range(0, NUM_TRAIN)
  return range(NUM_TRAIN, len(images))


class BcDigits(BundledBuilder):
  """scikit-learn digits as 32x32 RGB PNGs with labels and captions."""

  name = "bc_digits"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=(
        "scikit-learn's 8x8 handwritten digits upsampled to 32x32 RGB, "
        "with templated captions. train: first 1500, test: last 297."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="png"),
          "label": tfds.features.ClassLabel(names=DIGIT_NAMES),
          "caption": tfds.features.Text(),
          "index": np.int64,
        }
      ),
      supervised_keys=("image", "label"),
      # Records stay in generation order: record i of a split is the
      # split's i-th example in scikit-learn's order.
      disable_shuffling=True,
    )

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    images, labels = _load_sklearn_digits()
    for i in _split_range(split):
      label = int(labels[i])
      yield (
        i,
        {
          "image": _png_bytes(_digit_to_rgb(images[i], IMAGE_SIZE)),
          "label": label,
          "caption": caption_for(label, i),
          "index": i,
        },
      )


def grid_caption(labels: list[int]) -> str:
  """'a grid of handwritten digits: three, seven, seven and one'."""
  words = [DIGIT_NAMES[label] for label in labels]
  return "a grid of handwritten digits: " + ", ".join(words[:-1]) + " and " + words[-1]


class BcDigitsGrid(BundledBuilder):
  """2x2 grids of scikit-learn digits (64x64 RGB) with multi-hot labels."""

  name = "bc_digits_grid"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  NUM_GRIDS = {"train": 3000, "test": 600}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=(
        "2x2 grids of scikit-learn digits; `labels` is multi-hot over "
        "the ten digits. Train grids use train digits, test grids test "
        "digits."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(GRID_SIZE, GRID_SIZE, 3), encoding_format="png"),
          "labels": tfds.features.Tensor(shape=(10,), dtype=np.int64),
          "caption": tfds.features.Text(),
          "index": np.int64,
        }
      ),
      disable_shuffling=True,
    )

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    images, labels = _load_sklearn_digits()
    pool = np.asarray(_split_range(split))
    # A fixed generator per split: the grids are part of the dataset's
    # definition, identical on every build.
    rng = np.random.default_rng(1234 if split == "train" else 5678)
    half = GRID_SIZE // 2
    for g in range(self.NUM_GRIDS[split]):
      members = rng.choice(pool, size=4, replace=False)
      canvas = np.zeros((GRID_SIZE, GRID_SIZE, 3), np.uint8)
      for k, m in enumerate(members):
        r, c = divmod(k, 2)
        canvas[r * half : (r + 1) * half, c * half : (c + 1) * half] = _digit_to_rgb(
          images[m], half
        )
      cell_labels = [int(labels[m]) for m in members]
      multi_hot = np.zeros((10,), np.int64)
      multi_hot[cell_labels] = 1
      yield (
        g,
        {
          "image": _png_bytes(canvas),
          "labels": multi_hot,
          "caption": grid_caption(cell_labels),
          "index": g,
        },
      )


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
  BcDigits.name: BcDigits,
  BcDigitsGrid.name: BcDigitsGrid,
}
