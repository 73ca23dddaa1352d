"""Multi-label soft contrastive objective: targets from label-set similarity."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from big_contrast.losses import _common
from big_contrast.losses._common import AxisName


def label_similarity(
    a: jax.Array, b: jax.Array, similarity: Literal["cosine", "jaccard"] = "cosine"
) -> jax.Array:
  r"""[n, C], [m, C] multi-hot label sets -> [n, m] similarities in [0, 1].

  cosine: :math:`|A \cap B| / \sqrt{|A||B|}`; jaccard: :math:`|A \cap B| / |A \cup B|`;
  0 where a set is empty.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  inter = a @ b.T
  na, nb = jnp.sum(a, -1)[:, None], jnp.sum(b, -1)[None, :]
  if similarity == "cosine":
    denom = jnp.sqrt(na * nb)
  elif similarity == "jaccard":
    denom = na + nb - inter
  else:
    raise ValueError(f"similarity must be 'cosine' or 'jaccard', got {similarity!r}.")
  return jnp.where(denom > 0, inter / jnp.where(denom > 0, denom, 1.0), 0.0)


def soft_contrastive_loss(
    za: jax.Array,
    zb: jax.Array,
    labels: jax.Array,
    *,
    temperature: jax.typing.ArrayLike,
    similarity: Literal["cosine", "jaccard"] = "cosine",
    axis_name: AxisName = None,
) -> jax.Array:
  r"""Symmetric soft cross-entropy against label-set similarity targets.

  With :math:`S_{ij}` the label similarity of samples i and j
  (`label_similarity`, and :math:`S_{ii} = 1`),
  :math:`t_{ij} = S_{ij} / \sum_k S_{ik}` and
  :math:`s_{ij} = \langle a_i, b_j \rangle / \tau`:

  .. math::
    L = \frac{1}{2B} \sum_i \Big[\log\sum_j e^{s_{ij}} - \sum_j t_{ij} s_{ij}\Big]
      + \frac{1}{2B} \sum_j \Big[\log\sum_i e^{s_{ij}} - \sum_i t_{ji} s_{ij}\Big].

  With pairwise-disjoint label sets :math:`t` is the identity and this is
  `clip_loss`.

  Args:
    za: [b, d] L2-normalised embeddings of the first modality / view.
    zb: [b, d] L2-normalised embeddings of the second, row i pairs with ``za[i]``.
    labels: [b, C] multi-hot label sets (bool, int or float 0/1).
    temperature: scalar (possibly learned).
    similarity: "cosine" or "jaccard" label-set similarity.
    axis_name: None on one device, else the mesh axis the batch is split over.
  """
  b = za.shape[0]
  dtype = _common.compute_dtype(za, zb)
  temperature = _common.as_temperature(temperature, dtype)
  all_labels = _common.gather_rows(jnp.asarray(labels), axis_name)
  sim = label_similarity(labels, all_labels, similarity)
  rows = _common.global_rows(b, axis_name)
  is_self = rows[:, None] == jnp.arange(all_labels.shape[0])[None, :]
  sim = jnp.where(is_self, 1.0, sim)
  targets = (sim / jnp.sum(sim, axis=-1, keepdims=True)).astype(dtype)
  a2b = _common.similarity(za, _common.gather_rows(zb, axis_name)) / temperature
  b2a = _common.similarity(zb, _common.gather_rows(za, axis_name)) / temperature
  local = (jnp.sum(_common.soft_cross_entropy(a2b, targets))
           + jnp.sum(_common.soft_cross_entropy(b2a, targets)))
  return _common.global_sum(local, axis_name) / (2 * b * _common.axis_size(axis_name))
