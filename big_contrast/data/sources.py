"""Reading TFDS ArrayRecord splits robustly: sources, positions, bad records.

* ``load_source``: a random-access source over one split, images left encoded.
* ``PositionedSource``: adds each record's position in its split; a record
  that cannot be read becomes ``None`` (or a position-only record for eval).
* ``DropBad``: a grain ``IterDataset`` that drops ``None`` elements and
  records how many it dropped in the next element's ``skipped`` field, so the
  count travels inside the batches and survives worker processes and
  checkpoints.

This module knows nothing about augmentation, tokenizers or models.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from big_contrast.data import digits


def _builder(name_or_dir: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    if name_or_dir in digits.bundled_builders():
        return digits.ensure_built(name_or_dir, data_dir)
    if os.path.isdir(name_or_dir):
        return tfds.builder_from_directory(name_or_dir)
    try:
        return tfds.builder(name_or_dir, data_dir=data_dir or digits.default_data_dir())
    except Exception as e:  # tfds raises several types for unknown names.
        raise ValueError(
            f"data.name={name_or_dir!r} is neither a bundled dataset "
            f"{sorted(digits.bundled_builders())}, an existing TFDS dataset directory "
            "(the folder holding dataset_info.json), nor a prepared TFDS dataset "
            f"in data_dir={data_dir!r}."
        ) from e


def load_source(name_or_dir: str, split: str, data_dir: str | None = None):
    """A random-access source over one split of a TFDS ArrayRecord dataset.

    Image features are left encoded (``tfds.decode.SkipDecoding``): they are
    decoded with PIL inside the grain pipeline, where a bad one is skippable.
    ``name_or_dir`` is a bundled dataset (built on first use), a TFDS dataset
    directory (e.g. a converter's output) or a TFDS name prepared in ``data_dir``.
    """
    return open_split(name_or_dir, split, data_dir)[0]


def open_split(name_or_dir: str, split: str, data_dir: str | None):
    """(source, features) of one split; see ``load_source``."""
    builder = _builder(name_or_dir, data_dir)
    decoders = {
        key: tfds.decode.SkipDecoding()
        for key, feature in builder.info.features.items()
        if isinstance(feature, tfds.features.Image)
    }
    return builder.as_data_source(split, decoders=decoders), builder.info.features


def class_names(name_or_dir: str, data_dir: str | None = None,
                label_key: str = "label") -> list[str]:
    """The names of a dataset's classes, from its ``ClassLabel`` feature.

    For zero-shot prompts; underscores become spaces ("golden_retriever" ->
    "golden retriever").
    """
    features = _builder(name_or_dir, data_dir).info.features
    feature = features[label_key] if label_key in features else None
    if isinstance(feature, tfds.features.Sequence):
        feature = feature.feature
    if not isinstance(feature, tfds.features.ClassLabel):
        raise ValueError(
            f"data.name={name_or_dir!r} has no ClassLabel feature {label_key!r} to take "
            f"class names from; its features are {sorted(features)}.")
    return [n.replace("_", " ") for n in feature.names]


class PositionedSource:
    """Adds ``position`` (index in the split) to each record.

    A record that fails to deserialize becomes ``None`` (train: grain passes
    ``None`` through later ``MapDataset`` transforms and ``DropBad`` counts
    it, exactly like an image that fails to decode) or, with
    ``keep_unreadable``, a record with only its position (eval: it becomes a
    masked blank, so every host keeps the same example count).
    """

    def __init__(self, source, keep_unreadable: bool = False):
        self._source = source
        self._keep_unreadable = keep_unreadable

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int):
        try:
            record = dict(self._source[index])
        except Exception:  # noqa: BLE001 - any corrupt record is skipped.
            if not self._keep_unreadable:
                return None
            record = {}
        record["position"] = index
        return record


class DropBad(grain.IterDataset):
    """Drops ``None`` elements, recording how many in the next one's ``skipped``."""

    def __init__(self, parent: grain.IterDataset):
        super().__init__(parent)

    def __iter__(self):
        return _DropBadIterator(self._parent.__iter__())


class _DropBadIterator(grain.DatasetIterator):

    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)
        self._pending = 0

    def __next__(self):
        while True:
            element = next(self._parent)
            if element is None:
                self._pending += 1
                continue
            element["skipped"] = np.int32(self._pending)
            self._pending = 0
            return element

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "pending": self._pending}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._pending = int(state["pending"])
