"""Data: bundled TFDS datasets, grain pipelines, augmentations, tokenizers.

from big_contrast.data import train_iterator, eval_batches, make_tokenizer

Modules, each importing only ones before it: ``builders`` (the offline TFDS
builder base, build on first use), ``tokenizer``, ``bpe`` (CLIP's and
Hugging Face's byte-level BPE), ``allocator``, ``augment``;
``digits``, ``lee`` (the bundled datasets); ``bundled`` (them and the bundled
vocabularies by name); ``sources`` (reading splits); ``examples`` (record ->
example); ``pipeline`` (grain train streams, eval passes); ``device_augment``
(the photometric ops in JAX). ``convert_writer`` and ``convert`` (dataset
converters) stand apart from the rest.
"""

from big_contrast.data.builders import default_data_dir
from big_contrast.data.bundled import ensure_built, make_tokenizer
from big_contrast.data.digits import DIGIT_NAMES
from big_contrast.data.pipeline import eval_batches, load_source, train_dataset, train_iterator
from big_contrast.data.sources import DataError

__all__ = [
  "DIGIT_NAMES",
  "DataError",
  "default_data_dir",
  "ensure_built",
  "eval_batches",
  "load_source",
  "make_tokenizer",
  "train_dataset",
  "train_iterator",
]
