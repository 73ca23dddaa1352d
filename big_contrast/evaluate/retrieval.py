"""Image<->text retrieval Recall@k with any number of positives per query.

Knows nothing about models or datasets: two embedding matrices and the matching between them in,
numbers out.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from big_contrast.evaluate import _validate
from big_contrast.evaluate._chunked import map_row_chunks


@functools.partial(jax.jit, static_argnames="k")
def _top_k_indices(queries, targets, *, k):
  return jax.lax.top_k(queries @ targets.T, k)[1]


def _recall_at(hits: np.ndarray, has_positive: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
  """hits: [q, k_max] whether the j-th retrieved item is a positive of query q."""
  first_hit = np.where(hits.any(1), hits.argmax(1), np.iinfo(np.int32).max)[has_positive]
  return {k: float(np.mean(first_hit < k)) for k in ks}


def retrieval_recall(
  image_features,
  text_features,
  *,
  text_to_image,
  ks: Sequence[int] = (1, 5, 10),
  batch_size: int = 1024,
) -> dict[str, float]:
  """Recall@k of image->text and text->image retrieval by cosine similarity.

  A query is a hit at k when ANY of its positives is among its k most similar targets (ties
  ranked by lower index, as `jax.lax.top_k` does). Recall@k is the fraction of hits over the
  queries that have at least one positive; queries without any (e.g. an image no text
  describes) are left out. Queries are processed `batch_size` at a time, so memory is
  O(batch_size * n_targets) and n can be tens of thousands.

  Args:
    image_features: [n_image, d]; text_features: [n_text, d] (L2-normalised here).
    text_to_image: either an int array [n_text] giving the image each text describes
      (several texts may share an image, as in COCO's five captions), or a boolean array
      [n_text, n_image] with True where text t and image i match (any many-to-many relation).
    ks: cut-offs; a k larger than the number of targets counts every positive as retrieved.

  Returns:
    {"i2t_R@k": ..., "t2i_R@k": ...} for each k in `ks`, in [0, 1].
  """
  image_features = _validate.as_features(image_features, "image_features")
  text_features = _validate.as_features(text_features, "text_features")
  _validate.check_same_dim(image_features, text_features, "image_features", "text_features")
  n_image, n_text = image_features.shape[0], text_features.shape[0]
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1:
    raise ValueError(f"ks must be positive cut-offs, got {ks}.")

  matching = np.asarray(text_to_image)
  if matching.ndim == 1:
    matching = _validate.as_labels(matching, "text_to_image", n_text, n_image)
  elif matching.shape != (n_text, n_image) or not np.isin(matching, (0, 1)).all():
    raise ValueError(
      f"text_to_image must be int [n_text={n_text}] or boolean [n_text={n_text}, "
      f"n_image={n_image}], got {matching.dtype} {matching.shape}."
    )
  else:
    matching = matching.astype(bool)

  images = _validate.l2_normalize(image_features)
  texts = _validate.l2_normalize(text_features)
  k_t2i, k_i2t = min(max(ks), n_image), min(max(ks), n_text)
  texts_dev, images_dev = jnp.asarray(texts), jnp.asarray(images)
  t2i_top = map_row_chunks(lambda q: _top_k_indices(q, images_dev, k=k_t2i), (texts,), batch_size)
  i2t_top = map_row_chunks(lambda q: _top_k_indices(q, texts_dev, k=k_i2t), (images,), batch_size)

  if matching.ndim == 1:
    t2i_hits = t2i_top == matching[:, None]
    i2t_hits = matching[i2t_top] == np.arange(n_image)[:, None]
    text_has_pos = np.ones(n_text, bool)
    image_has_pos = np.bincount(matching, minlength=n_image) > 0
  else:
    t2i_hits = np.take_along_axis(matching, t2i_top, axis=1)
    i2t_hits = np.take_along_axis(matching.T, i2t_top, axis=1)
    text_has_pos, image_has_pos = matching.any(1), matching.any(0)
  if not text_has_pos.any():
    raise ValueError("text_to_image matches no text with any image; nothing to retrieve.")

  i2t = _recall_at(i2t_hits, image_has_pos, ks)
  t2i = _recall_at(t2i_hits, text_has_pos, ks)
  return {**{f"i2t_R@{k}": v for k, v in i2t.items()}, **{f"t2i_R@{k}": v for k, v in t2i.items()}}
