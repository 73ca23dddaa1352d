"""Classification metrics from class scores, shared by the probe, kNN and zero-shot evaluators.

A prediction is summarised by the *rank* of the true label among the class scores, with ties
broken towards the lower class index (the order `jnp.argmax` and `jax.lax.top_k` use). Top-k
accuracy is then `mean(rank < k)`, so every evaluator agrees on ties: a class that merely ties
with the true label never turns a miss into a hit.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def label_ranks(scores, labels):
  r"""Rank of each true label among its row of scores (0 = predicted class).

  .. math:: r_i = |\{c : s_{ic} > s_{iy_i}\}| + |\{c < y_i : s_{ic} = s_{iy_i}\}|

  Args:
    scores: [n, C] class scores (logits, similarities, votes), numpy or jax.
    labels: [n] integer labels in [0, C).

  Returns:
    [n] int32 ranks, on the same kind of array as `scores` (jax in, jax out).
  """
  xp = jnp if not isinstance(scores, np.ndarray) else np
  true = xp.take_along_axis(scores, labels[:, None].astype(xp.int32), axis=1)
  before = xp.arange(scores.shape[1])[None, :] < labels[:, None]
  ahead = (scores > true) | ((scores == true) & before)
  return ahead.sum(axis=1).astype(xp.int32)


def accuracy_from_ranks(
  ranks: np.ndarray, labels: np.ndarray, num_classes: int
) -> dict[str, float]:
  """`top1`, `top5` (only when num_classes >= 10) and `mean_per_class` accuracy.

  `mean_per_class` is the mean over the classes present in `labels` of that class's top-1
  recall, i.e. balanced accuracy.
  """
  ranks, labels = np.asarray(ranks), np.asarray(labels)
  out = {"top1": float(np.mean(ranks < 1))}
  if num_classes >= 10:
    out["top5"] = float(np.mean(ranks < 5))
  hits = np.bincount(labels, weights=(ranks < 1), minlength=num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  present = counts > 0
  out["mean_per_class"] = float(np.mean(hits[present] / counts[present]))
  return out
