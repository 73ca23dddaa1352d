"""One raw TFDS record -> one model example: decode, augment, tokenize.

Images come out as ``uint8`` (``image`` [S, S, 3] or ``views`` [V, S, S, 3]);
the model maps them to [-1, 1] on the device. With ``augment.device`` a
multiview example also carries ``augment_seed`` (uint32) for the train step's
photometric ops.

``ExampleTransform.train(record, rng[, out])`` and ``.eval(record)`` return dicts of
NumPy arrays (``image`` or ``views``, ``text``, ``text_id``, ``label`` /
``labels``, ``index``, ``skipped``; eval adds ``mask``), or ``None`` when
the image does not decode (or is a decompression bomb) or a caption/text is
not valid UTF-8; such records are named in the log (``sources.report_skipped``)
and counted in ``data/skipped``. ``EvalOrBlank`` turns such failures into masked
blanks for eval. Both pickle, so they run unchanged in grain workers.

This module knows nothing about grain's dataset graph, hosts or models.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from big_contrast.data import augment as augment_lib
from big_contrast.data.sources import report_skipped
from big_contrast.data.tokenizer import Tokenizer

# image_text: image + caption tokens (CLIP); multiview: V augmented views
# (SimCLR); image: one image + labels (probes, supervised baselines); text:
# tokens of one text feature (SimCSE; ``doc`` is passed on when present).
KINDS = ("image_text", "multiview", "image", "text")


class ExampleTransform:
  """Turns a raw record into a model example; picklable for grain workers.

  The keyword arguments are the data config's keys of the same names
  (``pipeline.DATA_DEFAULTS`` holds their defaults); ``augment`` is
  ``data.augment`` (``augment.DEFAULTS``).
  """

  def __init__(
    self,
    *,
    kind: str,
    features,
    image_size: int,
    num_views: int,
    augment: Mapping[str, Any] | None,
    tokenizer: Tokenizer | None,
    text_max_len: int,
    image_key: str,
    caption_key: str,
    label_key: str,
    text_key: str,
  ):
    if kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    self.kind = kind
    self.size = int(image_size)
    self.num_views = int(num_views)
    self.image_key = image_key
    self.caption_key = caption_key
    self.label_key = label_key
    self.text_key = text_key
    self.augment = augment_lib.Augment(augment)
    self.tokenizer = tokenizer
    self.text_max_len = int(text_max_len)
    keys = set(features.keys())
    self.has_doc = "doc" in keys
    if kind == "text":
      if self.text_key not in keys:
        raise ValueError(
          f"kind='text' needs a text feature {self.text_key!r} "
          f"(data.text_key); features: {sorted(keys)}."
        )
      if tokenizer is None:
        raise ValueError("kind='text' needs a tokenizer (big_contrast.data.make_tokenizer).")
    elif self.image_key not in keys:
      raise ValueError(
        f"Dataset has no image feature {self.image_key!r} "
        f"(data.image_key); features: {sorted(keys)}."
      )
    self.has_label = self.label_key in keys
    self.num_multi_hot = (
      features["labels"].shape[-1] if "labels" in keys and self.label_key != "labels" else 0
    )
    if kind == "image_text":
      if self.caption_key not in keys:
        raise ValueError(
          f"kind='image_text' needs a caption feature "
          f"{self.caption_key!r} (data.caption_key); "
          f"features: {sorted(keys)}."
        )
      if tokenizer is None:
        raise ValueError("kind='image_text' needs a tokenizer (big_contrast.data.make_tokenizer).")

  def _decode(self, record) -> np.ndarray | None:
    if self.image_key not in record:  # a record that did not read (already reported)
      return None
    img, problem = augment_lib.decode_checked(record[self.image_key])
    if img is None:
      report_skipped(f"record {record.get('position')}", problem)
    return img

  def _text(self, record, key: str) -> str | None:
    """A text feature as str; None (the record is skipped, and named) if not valid UTF-8."""
    value = record[key]
    if not isinstance(value, bytes):
      return str(value)
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError as e:
      report_skipped(f"record {record.get('position')}", f"{key} is not valid UTF-8 ({e})")
      return None

  def _fields(self, record, pixels: np.ndarray) -> dict[str, np.ndarray] | None:
    out = {"index": np.int32(record["position"]), "skipped": np.int32(0)}
    if self.kind == "multiview":
      out["views"] = pixels
    else:
      out["image"] = pixels
    if self.kind == "image_text":
      caption = self._text(record, self.caption_key)
      if caption is None:
        return None
      out["text"] = self.tokenizer.encode_batch([caption], self.text_max_len)[0]
      out["text_id"] = np.int32(zlib.crc32(caption.encode("utf-8")) & 0x7FFFFFFF)
    if self.has_label:
      out["label"] = np.int32(record[self.label_key])
    if self.num_multi_hot:
      out["labels"] = np.asarray(record["labels"], np.int32)
    return out

  def _text_fields(self, record) -> dict[str, np.ndarray] | None:
    text = self._text(record, self.text_key)
    if text is None:
      return None
    out = {
      "index": np.int32(record["position"]),
      "skipped": np.int32(0),
      "text": self.tokenizer.encode_batch([text], self.text_max_len)[0],
    }
    if self.has_doc:
      out["doc"] = np.int32(record["doc"])
    if self.has_label:
      out["label"] = np.int32(record[self.label_key])
    return out

  @property
  def pixel_key(self) -> str | None:
    """The field holding the augmented pixels: ``views``, ``image`` or None (text)."""
    return {"multiview": "views", "text": None}.get(self.kind, "image")

  @property
  def pixel_shape(self) -> tuple[int, ...] | None:
    """Shape of the ``pixel_key`` field of one example (uint8), or None."""
    if self.kind == "text":
      return None
    view = (self.size, self.size, 3)
    return (self.num_views,) + view if self.kind == "multiview" else view

  def train(self, record, rng: np.random.Generator, out: np.ndarray | None = None):
    """A train example, or None if the image does not decode.

    ``out``: a uint8 array of ``pixel_shape`` the pixels are written into
    (the chunk reader passes a row of its chunk buffer, saving a copy and
    an allocation per example); by default a new array.
    """
    if self.kind == "text":
      return self._text_fields(record) if self.text_key in record else None
    img = self._decode(record)
    if img is None:
      return None
    if self.kind == "multiview":
      pixels = self.augment.simclr_views(img, rng, self.size, self.num_views, out=out)
    else:
      pixels = self.augment.clip_train(img, rng, self.size, out=out)
    out = self._fields(record, pixels)
    if out is not None and self.kind == "multiview" and self.augment.on_device:
      # The device ops' randomness, from this example's RNG: (seed, example, epoch).
      out["augment_seed"] = np.uint32(rng.integers(2**32, dtype=np.uint64))
    return out

  def eval(self, record):
    if self.kind == "text":
      if self.text_key not in record:
        return None
      out = self._text_fields(record)
      if out is not None:
        out["mask"] = np.bool_(True)
      return out
    img = self._decode(record)
    if img is None:
      return None
    view = augment_lib.eval_view(img, self.size)
    if self.kind == "multiview":
      view = np.repeat(view[None], self.num_views, axis=0)
    out = self._fields(record, view)
    if out is not None:
      out["mask"] = np.bool_(True)
    return out


class EvalOrBlank:
  """``ExampleTransform.eval``, with undecodable records replaced by masked blanks.

  Blanks (not ``None``) keep every host's example count equal, so eval
  padding stays exact. ``source`` is the ``PositionedSource`` being read,
  used once to find a readable record to copy the blank's shapes from.
  """

  def __init__(self, example: ExampleTransform, source):
    self._example = example
    self._source = source
    self._blank = None

  def __call__(self, record):
    out = self._example.eval(record)
    if out is not None:
      return out
    if self._blank is None:
      self._blank = next(
        (
          o
          for o in map(self._example.eval, (self._source[i] for i in range(len(self._source))))
          if o is not None
        ),
        None,
      )
      if self._blank is None:
        raise ValueError("No record of this split decodes; is the dataset corrupt?")
    blank = {k: np.zeros_like(v) for k, v in self._blank.items()}
    blank["index"] = np.int32(record["position"])
    blank["skipped"] = np.int32(1)
    return blank
