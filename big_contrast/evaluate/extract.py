"""Frozen-encoder features over a dataset split, sharded over the mesh.

Every example is counted exactly once: the data side pads the last batch and
marks padding with `mask`; here padding rows are dropped after the global
batch's features are gathered back to the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

from big_contrast import sharding


def extract(
  encode: Callable[[dict], jax.Array],
  batches: Iterable[Mapping[str, np.ndarray]],
  mesh,
  *,
  inputs: tuple[str, ...],
  keep: tuple[str, ...] = ("label",),
) -> dict[str, np.ndarray]:
  """Runs `encode` (global batch dict → [B, d]) over host batches.

  Returns {'features': [N, d], 'index': [N], and each key of `keep` found in the
  batches}, rows ordered by example index, padding removed.
  """
  out: dict[str, list[np.ndarray]] = {}
  for host_batch in batches:
    fields = {k: host_batch[k] for k in inputs}
    feats = encode(sharding.host_batch_to_global(fields, mesh))
    feats = np.asarray(multihost_utils.process_allgather(feats, tiled=True))
    meta = {k: host_batch[k] for k in ("mask", "index") + keep if k in host_batch}
    if jax.process_count() > 1:
      meta = {
        k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in meta.items()
      }
    valid = meta.pop("mask").astype(bool)
    out.setdefault("features", []).append(feats[valid])
    for k, v in meta.items():
      out.setdefault(k, []).append(np.asarray(v)[valid])
  if not out:
    raise ValueError("feature extraction got no batches: is the split empty?")
  result = {k: np.concatenate(v) for k, v in out.items()}
  order = np.argsort(result["index"], kind="stable")
  result = {k: v[order] for k, v in result.items()}
  if len(np.unique(result["index"])) != len(result["index"]):
    raise RuntimeError(
      "feature extraction saw an example twice; the eval pipeline's per-process split overlaps"
    )
  return result
