"""What ships with big_contrast: the bundled datasets and vocabularies, by name.

* ``DATASETS``: ``data.name`` -> TFDS builder (``bc_digits``, ``bc_digits_grid``
  from ``digits.py``, ``bc_lee`` from ``lee.py``); ``ensure_built(name)``
  returns one prepared, building it on first use.
* ``VOCABULARIES``: name -> function ``(vocab_size, data_dir) -> .model path``
  that trains (once, then cached under ``data_dir``) a SentencePiece model on
  a bundled dataset; ``make_tokenizer("bc_lee:4000")`` uses it, and hands every
  other spec (``"bytes"``, a ``.model`` path) to ``tokenizer.make_tokenizer``.
* ``SOURCE_TOKENIZERS``: ``"KIND:PATH"`` -> a pretrained source's tokenizer over
  the user's own file (``clip_bpe``, ``siglip``, ``hf``; ``bpe.py``, ``tokenizer.py``).

Adding a bundled dataset or vocabulary is one entry here. This module knows
nothing about grain, models or training.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import tensorflow_datasets as tfds

from big_contrast.data import bpe, digits, lee
from big_contrast.data import tokenizer as tokenizer_lib
from big_contrast.data.builders import build_once

DATASETS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {**digits.BUILDERS, **lee.BUILDERS}

VOCABULARIES: dict[str, Callable[[int, str | None], str]] = {
  "bc_digits": digits.sentencepiece_model,
  "bc_lee": lee.sentencepiece_model,
}


def _hf(path: str) -> tokenizer_lib.Tokenizer:
  """A Hugging Face tokenizer file: ``tokenizer.json`` (BPE), else a SiglipTokenizer's model."""
  if path.endswith(".json"):
    return bpe.TokenizerJSON(path)
  return tokenizer_lib.SigLIPTokenizer(path, canonicalize=True)


# ``"KIND:PATH"`` → a pretrained source's tokenizer over the user's file, ids exactly the source's.
SOURCE_TOKENIZERS: dict[str, Callable[[str], tokenizer_lib.Tokenizer]] = {
  "clip_bpe": bpe.ClipBPETokenizer,  # OpenAI CLIP / OpenCLIP: bpe_simple_vocab_16e6.txt.gz
  "siglip": tokenizer_lib.SigLIPTokenizer,  # big_vision SigLIP: its SentencePiece .model
  "hf": _hf,  # Hugging Face: tokenizer.json, or SiglipTokenizer's spiece.model
}


def ensure_built(name: str = "bc_digits", data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """The prepared builder of bundled dataset ``name``, built on first use.

  Args:
    name: one of ``DATASETS`` (``'bc_digits'``, ``'bc_digits_grid'``, ``'bc_lee'``).
    data_dir: TFDS data dir; ``None`` means ``default_data_dir()``.

  Safe when several processes of one machine call it at once (see
  ``builders.build_once``).
  """
  if name not in DATASETS:
    raise ValueError(
      f"Unknown bundled dataset {name!r}; expected one of {sorted(DATASETS)} "
      "or a path to a TFDS dataset directory."
    )
  return build_once(DATASETS[name], data_dir)


def vocabulary_spec(spec: str) -> tuple[str, int] | None:
  """``"NAME:V"`` naming a bundled vocabulary -> (NAME, V); any other spec -> None."""
  name, _, size = spec.partition(":")
  return (name, int(size)) if name in VOCABULARIES and size.isdigit() else None


def make_tokenizer(spec: str, data_dir: str | None = None) -> tokenizer_lib.Tokenizer:
  """A tokenizer from its spec: ``"bytes"``, ``"bc_lee:V"``, a SentencePiece ``.model`` path,
  or one of a pretrained source's files: ``"clip_bpe:/path/bpe_simple_vocab_16e6.txt.gz"``,
  ``"siglip:/path/spiece.model"``, ``"hf:/path/tokenizer.json"`` (see ``tokenizer.SPECS``).

  ``"NAME:V"`` for a bundled vocabulary ``NAME`` is a V-piece SentencePiece
  model trained on that dataset's train split, built on first use into
  ``data_dir`` (``None``: ``default_data_dir()``) and cached there.
  """
  if known := vocabulary_spec(spec):
    name, size = known
    return tokenizer_lib.SentencePieceTokenizer(VOCABULARIES[name](size, data_dir))
  name, _, size = spec.partition(":")
  if name in SOURCE_TOKENIZERS:
    if not os.path.isfile(size):
      raise FileNotFoundError(f"tokenizer {spec!r}: no file {size!r}")
    return SOURCE_TOKENIZERS[name](size)
  if spec != "bytes" and not os.path.isfile(spec):
    bundled = ", ".join(f"'{n}:VOCAB_SIZE'" for n in sorted(VOCABULARIES))
    raise ValueError(f"Unknown tokenizer {spec!r}: use {bundled}, {tokenizer_lib.SPECS}.")
  return tokenizer_lib.make_tokenizer(spec)
