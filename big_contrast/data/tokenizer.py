"""Text tokenizers that need no download: byte-level, or a local SentencePiece model.

Both give fixed-length int32 id arrays with ``pad_id == 0`` and an EOS token
that always survives truncation, which is what the text tower pools on.

    tok = make_tokenizer("bytes")                 # tests, tiny configs
    tok = make_tokenizer("/path/captions.model")  # trained by tools/train_tokenizer.py
    ids = tok.encode_batch(["a handwritten digit seven"], max_len=32)  # [1, 32] int32

Vocabularies built from a bundled dataset (``"bc_lee:4000"``) and the
pretrained sources' tokenizers (``"clip_bpe:PATH"``, ``"siglip:PATH"``,
``"hf:PATH"``; ``SigLIPTokenizer`` here, the BPE ones in ``bpe.py``) are
``big_contrast.data.make_tokenizer``'s (``bundled.py``), which hands the other
specs to this module.

This module knows nothing about datasets, grain or models.
"""

from __future__ import annotations

import os
import string
import tempfile
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import sentencepiece as spm


class Tokenizer:
  """Interface: ``vocab_size``, ``pad_id`` (0), ``eos_id``, ``encode_batch``."""

  vocab_size: int
  pad_id: int = 0
  eos_id: int

  def encode(self, text: str) -> list[int]:
    """Token ids of ``text`` without EOS or padding."""
    raise NotImplementedError

  def decode(self, ids: Sequence[int]) -> str:
    """Inverse of ``encode``; ignores pad, EOS and other special ids."""
    raise NotImplementedError

  def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    """Returns int32 ``[len(texts), max_len]``: ids, EOS, then ``pad_id``.

    Texts longer than ``max_len - 1`` tokens are truncated so that EOS is
    always the last non-pad token.
    """
    if max_len < 1:
      raise ValueError(f"max_len must be >= 1 (room for EOS), got {max_len}.")
    out = np.full((len(texts), max_len), self.pad_id, dtype=np.int32)
    for row, text in enumerate(texts):
      ids = self.encode(text)[: max_len - 1] + [self.eos_id]
      out[row, : len(ids)] = ids
    return out


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes shifted by 3: 0 = pad, 1 = bos (unused), 2 = eos; vocab 259."""

  _OFFSET = 3

  def __init__(self):
    self.pad_id = 0
    self.bos_id = 1
    self.eos_id = 2
    self.vocab_size = 256 + self._OFFSET

  def encode(self, text: str) -> list[int]:
    return [b + self._OFFSET for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    data = bytes(int(i) - self._OFFSET for i in ids if int(i) >= self._OFFSET)
    return data.decode("utf-8", errors="replace")


class SentencePieceTokenizer(Tokenizer):
  """A local SentencePiece ``.model``; id 0 must be the pad piece.

  ``tools/train_tokenizer.py`` trains models with ``pad_id=0, unk_id=1,
  bos_id=-1, eos_id=2``. Models from elsewhere whose id 0 is not padding
  are rejected rather than silently mis-padded.
  """

  def __init__(self, model_path: str):
    self._path = model_path
    self._sp = spm.SentencePieceProcessor(model_file=model_path)
    self.vocab_size = int(self._sp.get_piece_size())
    self.pad_id = 0
    if self._sp.pad_id() != 0:
      raise ValueError(
        f"SentencePiece model {model_path} has pad_id={self._sp.pad_id()}; "
        "big_contrast needs pad_id=0. Retrain it with "
        "tools/train_tokenizer.py (or --pad_id=0 --unk_id=1 --eos_id=2)."
      )
    if self._sp.eos_id() < 0:
      raise ValueError(
        f"SentencePiece model {model_path} has no EOS piece; retrain it "
        "with tools/train_tokenizer.py (or --eos_id=2)."
      )
    self.eos_id = int(self._sp.eos_id())

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text, out_type=int))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids if int(i) not in (self.pad_id, self.eos_id)])

  def __reduce__(self):
    # The C++ processor does not pickle; grain workers rebuild it by path.
    return (SentencePieceTokenizer, (self._path,))


class SigLIPTokenizer(Tokenizer):
  """SigLIP's SentencePiece tokenization, as big_vision or Hugging Face applies it.

  Lower case; ``canonicalize=True`` (Hugging Face's ``SiglipTokenizer``) also
  drops ASCII punctuation and collapses whitespace. Then the model's ids, EOS
  appended and kept when the text is truncated, padded with EOS: big_vision's
  ``tokenize(eos='sticky', pad_value=1)`` for the released SigLIP models, whose
  text tower reads the last position. ``pad_id`` is therefore the EOS id.
  """

  def __init__(self, model_path: str, *, canonicalize: bool = False):
    self._path, self._canonicalize = model_path, canonicalize
    self._sp = spm.SentencePieceProcessor(model_file=model_path)
    self.vocab_size = int(self._sp.get_piece_size())
    if self._sp.eos_id() < 0:
      raise ValueError(f"SentencePiece model {model_path} has no EOS piece")
    self.eos_id = self.pad_id = int(self._sp.eos_id())

  def clean(self, text: str) -> str:
    text = text.lower()
    if self._canonicalize:
      text = " ".join(text.translate(_NO_PUNCTUATION).split())
    return text

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(self.clean(text), out_type=int))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids if int(i) != self.eos_id])

  def __reduce__(self):
    return (_siglip, (self._path, self._canonicalize))


def _siglip(path: str, canonicalize: bool) -> SigLIPTokenizer:
  return SigLIPTokenizer(path, canonicalize=canonicalize)


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


# The specs `make_tokenizer` accepts, for error messages here and in `bundled.py`.
SPECS = (
  "'bytes' or the path of a SentencePiece .model file (train one with tools/train_tokenizer.py), "
  "or a pretrained source's file: 'clip_bpe:PATH' (CLIP's bpe_simple_vocab_16e6.txt.gz), "
  "'siglip:PATH' (a SigLIP SentencePiece model, as big_vision tokenizes), 'hf:PATH' (a Hugging "
  "Face tokenizer.json, or a SiglipTokenizer's spiece.model)"
)


def make_tokenizer(spec: str) -> Tokenizer:
  """``"bytes"`` -> ``ByteTokenizer``; the path of a ``.model`` file -> SentencePiece.

  The pretrained sources' specs (``clip_bpe:``, ``siglip:``, ``hf:``) are
  ``big_contrast.data.make_tokenizer``'s (``bundled.py``).
  """
  if spec == "bytes":
    return ByteTokenizer()
  if os.path.isfile(spec):
    return SentencePieceTokenizer(spec)
  raise ValueError(f"Unknown tokenizer {spec!r}: use {SPECS}.")


def train_sentencepiece(
  texts: Iterable[str],
  model_prefix: str,
  vocab_size: int = 8000,
  model_type: str = "unigram",
  character_coverage: float = 0.9995,
) -> str:
  """Trains a SentencePiece model offline; returns the ``.model`` path.

  Ids follow big_contrast's convention: 0 = pad, 1 = unk, 2 = eos, no bos.
  ``hard_vocab_limit=False`` lets a small caption set give a smaller
  vocabulary instead of failing.
  """
  os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
  spm.SentencePieceTrainer.train(
    sentence_iterator=(t for t in texts if t.strip()),
    model_prefix=model_prefix,
    vocab_size=vocab_size,
    model_type=model_type,
    character_coverage=character_coverage,
    pad_id=0,
    unk_id=1,
    bos_id=-1,
    eos_id=2,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  return model_prefix + ".model"


def cached_sentencepiece(
  path: str, texts: Callable[[], Iterable[str]], vocab_size: int, model_type: str
) -> str:
  """``path`` (a ``.model``), trained from ``texts()`` on first use and reused after.

  Written under a temporary name beside ``path`` and renamed, so processes that
  build it at once agree on one file.
  """
  if os.path.isfile(path):
    return path
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=folder) as tmp:
    built = train_sentencepiece(
      texts(), os.path.join(tmp, "sp"), vocab_size=vocab_size, model_type=model_type
    )
    os.replace(built, path)
  return path
