"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018; DINO).

Knows nothing about models or datasets: feature arrays and integer labels in, numbers out.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from big_contrast.evaluate import _validate
from big_contrast.evaluate._chunked import map_row_chunks
from big_contrast.evaluate.metrics import accuracy_from_ranks, label_ranks


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_label_ranks(test_x, test_y, train_x, train_y, temperature, *, k, num_classes):
  sims, idx = jax.lax.top_k(test_x @ train_x.T, k)  # [b, k]
  # Shifting by the row maximum leaves the vote ratios unchanged and exp() finite at small T.
  weights = jnp.exp((sims - sims[:, :1]) / temperature)

  def add_votes(labels, w):
    return jnp.zeros(num_classes).at[labels].add(w)

  votes = jax.vmap(add_votes)(train_y[idx], weights)  # [b, C]
  return label_ranks(votes, test_y)


def knn_accuracy(
  train_x,
  train_y,
  test_x,
  test_y,
  *,
  k: int = 20,
  temperature: float = 0.07,
  num_classes: int | None = None,
  batch_size: int = 256,
) -> dict[str, float]:
  r"""Accuracy of a cosine-similarity kNN classifier with exponential vote weights.

  Features are L2-normalised. Each test point takes its `k` most similar train points j and
  scores class c by

  .. math:: s_c = \sum_{j \in N_k} \exp(\cos(x, x_j) / T)\, [y_j = c]

  predicting argmax_c s_c (ties to the lower class index). Test rows are processed
  `batch_size` at a time, so memory is O(batch_size * n_train).

  Args:
    train_x: [n, d] features; train_y: [n] int labels.
    test_x: [m, d] features; test_y: [m] int labels.
    k: neighbours (<= n).
    temperature: T > 0.
    num_classes: C; defaults to 1 + the largest label.

  Returns:
    {"top1", "top5" (only when C >= 10), "mean_per_class"} in [0, 1].
  """
  train_x, train_y, test_x, test_y, num_classes = _validate.train_test_classes(
    train_x, train_y, test_x, test_y, num_classes
  )
  if not 1 <= k <= train_x.shape[0]:
    raise ValueError(
      f"k={k} must be between 1 and the number of train points ({train_x.shape[0]})."
    )
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")

  train_x_dev = jnp.asarray(_validate.l2_normalize(train_x))
  train_y_dev = jnp.asarray(train_y)
  ranks = map_row_chunks(
    lambda x, y: _knn_label_ranks(
      x, y, train_x_dev, train_y_dev, temperature, k=k, num_classes=num_classes
    ),
    (_validate.l2_normalize(test_x), test_y),
    batch_size,
  )
  return accuracy_from_ranks(ranks, test_y, num_classes)
