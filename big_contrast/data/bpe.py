"""Byte-level BPE tokenizers that reproduce CLIP's token ids exactly, from the user's files.

``ClipBPETokenizer(path)``: OpenAI CLIP's / OpenCLIP's tokenizer over its merges
file (``bpe_simple_vocab_16e6.txt.gz``): ftfy and HTML-unescape cleaning,
whitespace collapsed, lower case, CLIP's pre-tokenizing pattern, ``<start_of_text>``
first, ``<end_of_text>`` last, truncated so the end token survives, zero padding.

``TokenizerJSON(path)``: a Hugging Face ``tokenizer.json`` with a BPE model
(Hugging Face CLIP's, GPT-2-style ones): its normalizer, pre-tokenizer, BPE
merges, added tokens and post-processor, as far as those pieces go here (a
piece this reader does not know is an error naming it). Padding comes from the
file's ``padding`` block, else ``pad_token`` of the ``tokenizer_config.json`` beside it.

    tok = ClipBPETokenizer("bpe_simple_vocab_16e6.txt.gz")
    ids = tok.encode_batch(["a photo of a cat"], max_len=77)  # [1, 77] int32

This module knows nothing about datasets, grain or models.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import os
import unicodedata
from collections.abc import Sequence

import numpy as np

from big_contrast.data.tokenizer import Tokenizer


@functools.cache
def byte_to_unicode() -> dict[int, str]:
  """GPT-2's reversible map of the 256 bytes to printable characters (no whitespace/control).

  Ordered as CLIP's vocabulary lists them: the printable bytes first, then the
  others (mapped to 256, 257, ...).
  """
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
  chars = {b: chr(b) for b in keep}
  for extra, b in enumerate(b for b in range(256) if b not in chars):
    chars[b] = chr(256 + extra)
  return chars


def _regex():
  # The `regex` package, not `re`: the patterns use Unicode classes (\p{L}, \p{N}).
  import regex  # noqa: PLC0415 — only the BPE tokenizers need it

  return regex


def _bytes_text(symbols: str, suffix: str) -> str:
  """Byte-level symbols back to text; `suffix` (a word's end) becomes a space."""
  inverse = {c: b for b, c in byte_to_unicode().items()}
  words = symbols.split(suffix) if suffix else [symbols]
  data = b" ".join(bytes(inverse[c] for c in w if c in inverse) for w in words)
  return data.decode("utf-8", errors="replace").strip()


class _BPE:
  """Merges by rank over one pre-tokenized word; `suffix` marks a word's last symbol."""

  def __init__(self, merges: Sequence[tuple[str, ...]], suffix: str):
    self.ranks = {tuple(m): i for i, m in enumerate(merges)}
    self.suffix = suffix
    self.cache: dict[str, list[str]] = {}

  def __call__(self, word: str) -> list[str]:
    if word in self.cache:
      return self.cache[word]
    symbols = list(word[:-1]) + [word[-1] + self.suffix]
    while len(symbols) > 1:
      pairs = {(a, b) for a, b in zip(symbols[:-1], symbols[1:])}
      best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
      if best not in self.ranks:
        break
      merged, i = [], 0
      while i < len(symbols):
        if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
          merged.append(symbols[i] + symbols[i + 1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    self.cache[word] = symbols
    return symbols


class ClipBPETokenizer(Tokenizer):
  """OpenAI CLIP's BPE over a merges file; ids as `open_clip.tokenize` gives them.

  The vocabulary is the 256 byte characters, the same with ``</w>``, one entry
  per merge (the file's lines 1 to 48,894, as CLIP reads it), then
  ``<start_of_text>`` and ``<end_of_text>``: 49,408 ids for the released file.
  """

  def __init__(self, path: str):
    try:
      import ftfy  # noqa: PLC0415, F401 — CLIP's text cleaning; checked here, used in encode
    except ImportError as e:
      raise ImportError("the CLIP tokenizer needs ftfy: pip install ftfy") from e
    self._path = path
    with gzip.open(path, "rt", encoding="utf-8") as f:
      lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    base = list(byte_to_unicode().values())
    vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges]
    specials = ["<start_of_text>", "<end_of_text>"]
    self.encoder = {tok: i for i, tok in enumerate(vocab + specials)}
    self.decoder = {i: tok for tok, i in self.encoder.items()}
    self.bos_id, self.eos_id = self.encoder[specials[0]], self.encoder[specials[1]]
    self.pad_id = 0
    self.vocab_size = len(vocab) + len(specials)
    self._bpe = _BPE(merges, "</w>")
    for s in specials:
      self._bpe.cache[s] = [s]
    self._pattern = _regex().compile(
      "|".join(specials) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
      _regex().IGNORECASE,
    )

  @staticmethod
  def clean(text: str) -> str:
    """CLIP's cleaning: ftfy, HTML entities (twice), whitespace collapsed, lower case."""
    import ftfy  # noqa: PLC0415 — see __init__

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()

  def encode(self, text: str) -> list[int]:
    chars = byte_to_unicode()
    ids = []
    for word in self._pattern.findall(self.clean(text)):
      word = "".join(chars[b] for b in word.encode("utf-8"))
      ids.extend(self.encoder[s] for s in self._bpe(word))
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    keep = [self.decoder[int(i)] for i in ids if int(i) not in (self.bos_id, self.eos_id)]
    return _bytes_text("".join(keep), "</w>")

  def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    """int32 [N, max_len]: start, ids, end, zeros; a long text keeps its end token last."""
    if max_len < 2:
      raise ValueError(f"max_len must be >= 2 (start and end tokens), got {max_len}.")
    out = np.zeros((len(texts), max_len), np.int32)
    for row, text in enumerate(texts):
      ids = [self.bos_id] + self.encode(text)[: max_len - 2] + [self.eos_id]
      out[row, : len(ids)] = ids
    return out

  def __reduce__(self):
    return (ClipBPETokenizer, (self._path,))


# --------------------------------------------------------------- tokenizer.json ---


def _pattern(spec: dict):
  if "Regex" in spec:
    return _regex().compile(spec["Regex"])
  return _regex().compile(_regex().escape(spec["String"]))


def _normalize(spec: dict | None, text: str) -> str:
  if spec is None:
    return text
  kind = spec["type"]
  if kind == "Sequence":
    for part in spec["normalizers"]:
      text = _normalize(part, text)
    return text
  if kind in ("NFC", "NFD", "NFKC", "NFKD"):
    return unicodedata.normalize(kind, text)
  if kind == "Lowercase":
    return text.lower()
  if kind == "Replace":
    return _pattern(spec["pattern"]).sub(spec["content"].replace("\\", "\\\\"), text)
  if kind == "Strip":
    text = text.lstrip() if spec.get("strip_left", True) else text
    return text.rstrip() if spec.get("strip_right", True) else text
  raise ValueError(f"tokenizer.json normalizer {kind!r} is not supported here")


# GPT-2's pre-tokenizing pattern, which ByteLevel(use_regex=True) applies.
_GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _split(pattern, piece: str, behavior: str, invert: bool) -> list[str]:
  """`tokenizers`' Split: matches and the text between them, kept or dropped by `behavior`."""
  spans, last = [], 0
  for m in pattern.finditer(piece):
    if m.start() > last:
      spans.append((piece[last : m.start()], invert))
    if m.end() > m.start():
      spans.append((m.group(), not invert))
    last = m.end()
  if last < len(piece):
    spans.append((piece[last:], invert))
  if behavior == "Removed":
    return [s for s, is_match in spans if not is_match]
  if behavior == "Isolated":
    return [s for s, _ in spans]
  raise ValueError(f"tokenizer.json Split behavior {behavior!r} is not supported here")


def _pre_tokenize(spec: dict | None, pieces: list[str]) -> list[str]:
  if spec is None:
    return pieces
  kind = spec["type"]
  if kind == "Sequence":
    for part in spec["pretokenizers"]:
      pieces = _pre_tokenize(part, pieces)
    return pieces
  if kind == "Split":
    pattern = _pattern(spec["pattern"])
    return [s for p in pieces for s in _split(pattern, p, spec["behavior"], spec["invert"])]
  if kind == "ByteLevel":
    chars = byte_to_unicode()
    if spec.get("add_prefix_space") and pieces and not pieces[0].startswith(" "):
      pieces = [" " + pieces[0], *pieces[1:]]
    if spec.get("use_regex", True):
      gpt2 = _regex().compile(_GPT2_PATTERN)
      pieces = [s for p in pieces for s in gpt2.findall(p)]
    return ["".join(chars[b] for b in p.encode("utf-8")) for p in pieces]
  if kind == "WhitespaceSplit":
    return [s for p in pieces for s in p.split()]
  if kind == "Whitespace":
    pattern = _regex().compile(r"\w+|[^\w\s]+")
    return [s for p in pieces for s in pattern.findall(p)]
  raise ValueError(f"tokenizer.json pre_tokenizer {kind!r} is not supported here")


def _special_ids(spec: dict | None) -> tuple[list[int], list[int]]:
  """The ids a post-processor puts before and after a single sequence."""
  if spec is None or spec["type"] == "ByteLevel":
    return [], []
  kind = spec["type"]
  if kind in ("RobertaProcessing", "BertProcessing"):
    return [spec["cls"][1]], [spec["sep"][1]]
  if kind == "TemplateProcessing":
    before, after, seen = [], [], False
    for item in spec["single"]:
      if "Sequence" in item:
        seen = True
        continue
      ids = spec["special_tokens"][item["SpecialToken"]["id"]]["ids"]
      (after if seen else before).extend(ids)
    return before, after
  if kind == "Sequence":
    before, after = [], []
    for part in spec["processors"]:
      b, a = _special_ids(part)
      before, after = before + b, after + a
    return before, after
  raise ValueError(f"tokenizer.json post_processor {kind!r} is not supported here")


class TokenizerJSON(Tokenizer):
  """A Hugging Face ``tokenizer.json`` with a BPE model; ids as its fast tokenizer gives them.

  ``encode_batch`` adds the post-processor's special tokens, truncates the text
  so they survive (Hugging Face's ``truncation=True``) and pads to ``max_len``
  (``padding='max_length'``).
  """

  def __init__(self, path: str):
    self._path = path
    with open(path, encoding="utf-8") as f:
      spec = json.load(f)
    model = spec["model"]
    if model.get("type", "BPE") != "BPE":
      raise ValueError(f"{path}: model type {model.get('type')!r}; only BPE is supported here")
    if model.get("continuing_subword_prefix") or model.get("byte_fallback"):
      raise ValueError(
        f"{path}: BPE with continuing_subword_prefix or byte_fallback is not supported"
      )
    self.encoder: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    self._bpe = _BPE(merges, model.get("end_of_word_suffix") or "")
    self._unk = self.encoder.get(model.get("unk_token")) if model.get("unk_token") else None
    self._normalizer, self._pre = spec.get("normalizer"), spec.get("pre_tokenizer")
    self.added = {t["content"]: t["id"] for t in spec.get("added_tokens") or []}
    self._added_pattern = (
      _regex().compile("|".join(_regex().escape(t) for t in sorted(self.added, key=len)[::-1]))
      if self.added
      else None
    )
    self._before, self._after = _special_ids(spec.get("post_processor"))
    ids = [*self.encoder.values(), *self.added.values()]
    self.vocab_size = max(ids) + 1
    self.pad_id = self._pad_id(spec, path)
    self.eos_id = self._after[-1] if self._after else self.pad_id
    self.decoder = {i: t for t, i in {**self.encoder, **self.added}.items()}

  def _pad_id(self, spec: dict, path: str) -> int:
    if spec.get("padding"):
      return int(spec["padding"]["pad_id"])
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
    if os.path.isfile(config):
      with open(config, encoding="utf-8") as f:
        pad = json.load(f).get("pad_token")
      if isinstance(pad, dict):
        pad = pad.get("content")
      if pad is not None:
        if pad not in self.added and pad not in self.encoder:
          raise ValueError(f"{config}: pad_token {pad!r} is not in {path}'s vocabulary")
        return self.added.get(pad, self.encoder.get(pad))
    return 0

  def _word_ids(self, word: str) -> list[int]:
    out = []
    for symbol in self._bpe(word):
      if symbol in self.encoder:
        out.append(self.encoder[symbol])
      elif self._unk is not None:
        out.append(self._unk)
      else:
        raise ValueError(
          f"{self._path}: symbol {symbol!r} is not in the vocabulary and no unk_token"
        )
    return out

  def encode(self, text: str) -> list[int]:
    """Token ids of `text` without the post-processor's special tokens or padding."""
    parts, last = [], 0
    if self._added_pattern is not None:
      for m in self._added_pattern.finditer(text):
        parts.append((text[last : m.start()], None))
        parts.append((m.group(), self.added[m.group()]))
        last = m.end()
    parts.append((text[last:], None))
    ids = []
    for piece, added in parts:
      if added is not None:
        ids.append(added)
      elif piece:
        for word in _pre_tokenize(self._pre, [_normalize(self._normalizer, piece)]):
          if word:
            ids.extend(self._word_ids(word))
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    skip = {self.pad_id, *self._before, *self._after}
    text = "".join(self.decoder[int(i)] for i in ids if int(i) not in skip)
    return _bytes_text(text, self._bpe.suffix)

  def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    room = max_len - len(self._before) - len(self._after)
    if room < 0:
      raise ValueError(f"max_len={max_len} leaves no room for the special tokens")
    out = np.full((len(texts), max_len), self.pad_id, np.int32)
    for row, text in enumerate(texts):
      ids = self._before + self.encode(text)[:room] + self._after
      out[row, : len(ids)] = ids
    return out

  def __reduce__(self):
    return (TokenizerJSON, (self._path,))
