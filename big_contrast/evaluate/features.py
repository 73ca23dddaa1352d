"""Frozen-encoder features over a dataset split, sharded over the mesh.

Every example is counted exactly once: the data side pads the last batch and
marks padding with `mask`; here padding rows are dropped after the global
batch's features are gathered back to the host. Results are dicts of host
arrays ordered by example index: `features` [N, d], `index` [N] and the batch
fields asked for (`label`, `labels`, `text_id`, `doc`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import einops
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from big_contrast import sharding
from big_contrast.data import augment, pipeline
from big_contrast.evaluate.encoder import Encoder


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
    meta = {k: host_batch[k] for k in ("mask", "index", *keep) if k in host_batch}
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


def eval_batches(config: ml_collections.ConfigDict, split: str, kind: str, tokenizer=None):
  """This process's share of `split` in batches of `config.eval.batch_size` over all processes."""
  n_proc = jax.process_count()
  if config.eval.batch_size % n_proc:
    raise ValueError(
      f"config.eval.batch_size={config.eval.batch_size} must be divisible by the {n_proc} processes"
    )
  text_max_len = config.text.max_len if tokenizer is not None else 0
  return pipeline.eval_batches(
    config.data,
    split,
    kind=kind,
    batch_size=config.eval.batch_size // n_proc,
    tokenizer=tokenizer,
    text_max_len=text_max_len,
    process_index=jax.process_index(),
    process_count=n_proc,
  )


def image_features(
  config: ml_collections.ConfigDict,
  encoder: Encoder,
  split: str,
  *,
  projected: bool = False,
  last_blocks: int = 0,
) -> dict[str, np.ndarray]:
  """{'features', 'label'/'labels', 'index'} over `split`: backbone (or projected) features,
  or with `last_blocks` > 0 the last blocks' pooled features [N, last_blocks, width]."""
  if last_blocks:
    fn = encoder.fn("image_block_features", last_blocks=last_blocks)
  else:
    fn = encoder.fn("encode_image" if projected else "image_features")
  return extract(
    lambda b: fn(b["image"]),
    eval_batches(config, split, "image"),
    encoder.mesh,
    inputs=("image",),
    keep=("label", "labels"),
  )


def text_embeddings(
  config: ml_collections.ConfigDict, encoder: Encoder, split: str
) -> dict[str, np.ndarray]:
  """{'features' [N, D] (projected, L2-normalised), 'index'[, 'doc']} of a text split."""
  fn = encoder.fn("encode_text")
  return extract(
    lambda b: fn(b["text"]),
    eval_batches(config, split, "text", encoder.tokenizer),
    encoder.mesh,
    inputs=("text",),
    keep=("doc",),
  )


def image_text_embeddings(config: ml_collections.ConfigDict, encoder: Encoder, split: str):
  """Projected (image, caption) embeddings of `split`; row i of each comes from example i."""
  fi, ft = encoder.fn("encode_image"), encoder.fn("encode_text")
  batches = eval_batches(config, split, "image_text", encoder.tokenizer)
  img = extract(lambda b: fi(b["image"]), batches, encoder.mesh, inputs=("image",))
  txt = extract(lambda b: ft(b["text"]), batches, encoder.mesh, inputs=("text",), keep=("text_id",))
  return img, txt


def raw_pixels(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  """Flattened eval images: the raw-pixel baseline's features.

  Images are average-pooled to `config.eval.raw_pixels_size` on a side (when
  set), e.g. 8 for the digits, whose native resolution is 8×8: the probe then
  sees the original pixels instead of 48× redundant upsampled copies.
  """
  size = config.eval.raw_pixels_size
  rows, index, meta = [], [], {}
  for b in pipeline.eval_batches(
    config.data, split, kind="image", batch_size=config.eval.batch_size
  ):
    m = b["mask"].astype(bool)
    images = augment.to_unit_range(b["image"][m])  # the models' [-1, 1] input range
    if size:
      h, w = images.shape[1:3]
      if h % size or w % size:
        raise ValueError(
          f"config.eval.raw_pixels_size={size} does not divide the {h}x{w} eval images"
        )
      images = einops.reduce(images, "n (h a) (w b) c -> n h w c", "mean", h=size, w=size)
    rows.append(images.reshape(len(images), -1))
    index.append(b["index"][m])
    for key in ("label", "labels"):
      if key in b:
        meta.setdefault(key, []).append(b[key][m])
  order = np.argsort(np.concatenate(index))
  return dict(
    features=np.concatenate(rows)[order], **{k: np.concatenate(v)[order] for k, v in meta.items()}
  )
