"""Data: bundled TFDS datasets, grain pipelines, augmentations, tokenizers.

from big_contrast.data import train_iterator, eval_batches, make_tokenizer
"""

from big_contrast.data.digits import DIGIT_NAMES, default_data_dir, ensure_built
from big_contrast.data.pipeline import eval_batches, load_source, train_dataset, train_iterator
from big_contrast.data.tokenizer import make_tokenizer

__all__ = [
  "DIGIT_NAMES",
  "default_data_dir",
  "ensure_built",
  "eval_batches",
  "load_source",
  "make_tokenizer",
  "train_dataset",
  "train_iterator",
]
