"""The bundled text dataset: the Lee news corpus that gensim ships, as TFDS ArrayRecord.

Lee, Pincombe & Welsh (2005), "An empirical evaluation of models of text
document similarity": 50 short Australian news documents whose 1,225 pairs were
rated for similarity by human judges, plus 300 background documents from the
same source. gensim bundles all three files in its test data (offline):
``lee_background.cor`` (300 docs), ``lee.cor`` (50 docs) and
``similarities0-1.txt`` (the 50×50 mean human ratings, upper triangle).

``bc_lee`` has features ``text`` (one sentence), ``doc`` (its document's index
in the split) and ``index``. Split ``train`` = the sentences of the 300
background documents, ``test`` = the sentences of the 50 rated documents; a
document's embedding is the mean of its sentences' (see
``big_contrast.evaluate.standard.lee_similarity``). Sentences, not documents,
because the documents (~1,200 characters) are far longer than a small byte-level
text tower's context.

``sentencepiece_model()`` trains (once, then cached beside the TFDS data) a
small SentencePiece vocabulary on the sentences of the ``train`` split only, so
that the rated documents never shape the tokenizer. It is the bundled
vocabulary ``bc_lee`` (tokenizer spec ``"bc_lee:V"``, see ``bundled.py``); the
``simcse.py:tiny`` config uses it instead of bytes (sentences 3-4× shorter in tokens, so faster
training and token embeddings that are closer to words).

gensim is imported only when this data is built or read (``pip install
big_contrast[text]``); the digits datasets never need it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from big_contrast.data.builders import BundledBuilder, default_data_dir
from big_contrast.data.tokenizer import cached_sentencepiece

_FILES = {"train": "lee_background.cor", "test": "lee.cor"}
HUMAN_SIMILARITY_FILE = "similarities0-1.txt"
_MIN_SENTENCE_CHARS = 10
# A sentence ends at . ! or ? (optionally followed by a closing quote) before
# whitespace and an upper-case letter, digit or opening quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'A-Z0-9])")


def _datapath(name: str) -> str:
  try:
    from gensim.test.utils import datapath  # noqa: PLC0415 — optional dependency (the text extra)
  except ImportError as e:
    raise ImportError(
      "the bundled Lee corpus (data.name='bc_lee') ships with gensim: "
      "pip install 'big_contrast[text]' (or gensim)"
    ) from e
  return datapath(name)


def documents(split: str) -> list[str]:
  """The documents of a split: ``train`` (300 background) or ``test`` (50 rated)."""
  if split not in _FILES:
    raise ValueError(f"bc_lee has splits {sorted(_FILES)}, not {split!r}")
  with open(_datapath(_FILES[split]), encoding="latin-1") as f:
    docs = [line.strip() for line in f if line.strip()]
  return docs


def sentences(document: str) -> list[str]:
  """A document split into sentences (fragments shorter than 10 characters dropped)."""
  parts = [p.strip() for p in _SENTENCE_END.split(document)]
  kept = [p for p in parts if len(p) >= _MIN_SENTENCE_CHARS]
  return kept or [document.strip()]


def human_similarity() -> np.ndarray:
  """The 50×50 mean human similarity ratings in [0, 1], symmetrised (diagonal 1)."""
  upper = np.loadtxt(_datapath(HUMAN_SIMILARITY_FILE))
  return np.triu(upper) + np.triu(upper, 1).T


def train_sentences() -> list[str]:
  """The sentences of the 300 background documents (the ``train`` split's texts)."""
  return [s for d in documents("train") for s in sentences(d)]


def sentencepiece_model(vocab_size: int = 4000, data_dir: str | None = None) -> str:
  """Path of a SentencePiece model trained on the ``train`` split's sentences only.

  Built on first use (about a second) into ``<data_dir>/bc_lee_tokenizer/`` (default
  ``$BIG_CONTRAST_DATA_DIR`` or ``~/.cache/big_contrast/tensorflow_datasets``), then
  reused; written under a temporary name and renamed, so concurrent callers agree.
  Ids follow big_contrast's convention (0 pad, 1 unk, 2 eos).
  """
  folder = os.path.join(data_dir or default_data_dir(), "bc_lee_tokenizer")
  path = os.path.join(folder, f"train_unigram_{vocab_size}.model")
  return cached_sentencepiece(path, train_sentences, vocab_size, "unigram")


class BcLee(BundledBuilder):
  """Sentences of gensim's Lee corpus, with the index of their document."""

  name = "bc_lee"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=(
        "Lee et al. (2005) news corpus from gensim's test data, one "
        "record per sentence. train: 300 background documents, "
        "test: the 50 documents with human similarity ratings."
      ),
      features=tfds.features.FeaturesDict(
        {
          "text": tfds.features.Text(),
          "doc": np.int64,
          "index": np.int64,
        }
      ),
      disable_shuffling=True,
    )

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    i = 0
    for d, document in enumerate(documents(split)):
      for sentence in sentences(document):
        yield i, {"text": sentence, "doc": d, "index": i}
        i += 1


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {BcLee.name: BcLee}
