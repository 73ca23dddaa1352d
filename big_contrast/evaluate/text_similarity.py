"""Text-similarity baselines and scores: document similarity against human ratings.

Pure functions of arrays and strings (no model): Spearman's ρ over the pairs of
two similarity matrices, cosine matrices, per-document mean pooling, and the
TF-IDF / LSA bag-of-words baselines the `lee_similarity` evaluator reports
beside a text model's score.
"""

from __future__ import annotations

import numpy as np


def upper_spearman(similarity: np.ndarray, human: np.ndarray) -> float:
  """Spearman's ρ between two [n, n] similarity matrices over the pairs i < j."""
  iu = np.triu_indices(len(human), 1)
  from scipy import stats  # noqa: PLC0415 — SciPy off the trainer's start-up

  return float(stats.spearmanr(similarity[iu], human[iu]).statistic)


def cosine_matrix(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return x @ x.T


def mean_by_doc(features: np.ndarray, doc: np.ndarray) -> np.ndarray:
  """Document embeddings [D, d]: the mean of each document's (normalised) sentence rows."""
  n = int(doc.max()) + 1
  out = np.zeros((n, features.shape[1]), np.float64)
  np.add.at(out, doc, features)
  counts = np.bincount(doc, minlength=n)
  if (counts == 0).any():
    raise ValueError(f"documents {np.flatnonzero(counts == 0).tolist()} have no sentences")
  return out / counts[:, None]


def tfidf_similarity(
  background: list[str],
  documents: list[str],
  *,
  doc: np.ndarray | None = None,
  dim: int | None = None,
) -> np.ndarray:
  """Cosine similarity of TF-IDF bag-of-words vectors (vocabulary and IDF from `background`).

  With `doc`, `documents` are sentences and `doc[i]` the document of sentence i: each
  document is the mean of its L2-normalised sentence vectors, as `lee_similarity` pools
  the model's. With `dim`, the vectors are first reduced to `dim` dense dimensions by a
  truncated SVD fitted on `background` (LSA, ARPACK from a fixed start: the same for
  every run): a dense baseline of the embedding's size.
  """
  from sklearn.decomposition import TruncatedSVD  # noqa: PLC0415 — scikit-learn off the start-up
  from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415

  vec = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit(background)
  x = vec.transform(documents)
  if dim is not None:
    svd = TruncatedSVD(dim, algorithm="arpack", random_state=0)
    x = svd.fit(vec.transform(background)).transform(x)
  else:
    x = x.toarray()
  if doc is not None:
    x = mean_by_doc(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12), doc)
  return cosine_matrix(x)
