"""Image-text objectives: CLIP (InfoNCE, both directions) and SigLIP (sigmoid).

Each has two implementations with the same value and gradients:
the all-gather path here (each device gathers the other side's embeddings and
holds [b, B] logits) and, with ``block_size``, the blockwise ring path in
`ring.py` (never more than about [b, block_size] logits, no all-gather).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from big_contrast.losses import _common, ring
from big_contrast.losses._common import AxisName


def _pair_targets(row_ids: jax.Array, col_ids: jax.Array) -> jax.Array:
  """[b], [B] ids -> [b, B] rows uniform over the columns sharing the row's id."""
  match = (row_ids[:, None] == col_ids[None, :]).astype(jnp.float32)
  return match / jnp.sum(match, axis=-1, keepdims=True)


def clip_loss(
  zimg: jax.Array,
  ztxt: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  axis_name: AxisName = None,
  block_size: int | None = None,
  pair_ids: jax.Array | None = None,
) -> jax.Array:
  r"""Symmetric InfoNCE of CLIP (Radford et al., 2021), optionally multi-positive.

  With :math:`s_{ij} = \langle x_i, y_j \rangle / \tau` over the global batch
  of :math:`B` pairs,

  .. math::
    L = \frac{1}{2B} \sum_i \Big[\log\sum_j e^{s_{ij}} - \sum_j t_{ij} s_{ij}\Big]
      + \frac{1}{2B} \sum_j \Big[\log\sum_i e^{s_{ij}} - \sum_i t_{ji} s_{ij}\Big],

  where :math:`t_{ij} = [\mathrm{id}_i = \mathrm{id}_j] / |\{k : \mathrm{id}_k =
  \mathrm{id}_i\}|`: the target of each row (and of each column) is uniform
  over the samples with the same ``pair_ids`` (e.g. several captions of one
  image). Without ``pair_ids`` every sample is its own id and ``t`` is the
  identity: plain CLIP.

  Args:
    zimg: [b, d] L2-normalised image embeddings (this device's rows).
    ztxt: [b, d] L2-normalised text embeddings, row i pairs with ``zimg[i]``.
    temperature: scalar; logits are cosine / temperature. May be a traced,
      learned value: its gradient is exact.
    axis_name: None on one device; inside `jax.shard_map` over the batch, the
      mesh axis (or tuple of axes) the batch is split over.
    block_size: if set, the blockwise ring path (`ring.ring_clip_loss`), which
      holds at most [b, block_size] logits at a time and no gathered batch.
    pair_ids: optional [b] integer ids; equal ids are mutual positives.

  Returns:
    The global scalar loss, identical on every device.
  """
  if block_size is not None:
    return ring.ring_clip_loss(
      zimg,
      ztxt,
      temperature=temperature,
      axis_name=axis_name,
      block_size=block_size,
      pair_ids=pair_ids,
    )
  b = zimg.shape[0]
  dtype = _common.compute_dtype(zimg, ztxt)
  temperature = _common.as_temperature(temperature, dtype)
  if pair_ids is None:
    row_ids = _common.global_rows(b, axis_name)
  else:
    row_ids = jnp.asarray(pair_ids)
  col_ids = _common.gather_rows(row_ids, axis_name)
  targets = _pair_targets(row_ids, col_ids)
  # Each device owns the image->text rows of its images and the text->image
  # rows of its texts, so every global term is computed exactly once.
  i2t = _common.similarity(zimg, _common.gather_rows(ztxt, axis_name)) / temperature
  t2i = _common.similarity(ztxt, _common.gather_rows(zimg, axis_name)) / temperature
  local = jnp.sum(_common.soft_cross_entropy(i2t, targets)) + jnp.sum(
    _common.soft_cross_entropy(t2i, targets)
  )
  global_b = b * _common.axis_size(axis_name)
  return _common.global_sum(local, axis_name) / (2 * global_b)


def siglip_loss(
  zimg: jax.Array,
  ztxt: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  bias: jax.typing.ArrayLike,
  axis_name: AxisName = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Pairwise sigmoid loss of SigLIP (Zhai et al., 2023).

  .. math::
    L = -\frac{1}{B} \sum_{i=1}^{B} \sum_{j=1}^{B}
        \log \sigma\big(y_{ij} (\langle x_i, y_j \rangle / \tau + b)\big),
    \qquad y_{ij} = +1 \text{ if } i = j \text{ else } -1.

  Args:
    zimg: [b, d] L2-normalised image embeddings (this device's rows).
    ztxt: [b, d] L2-normalised text embeddings, row i pairs with ``zimg[i]``.
    temperature: scalar; logits are cosine / temperature + bias.
    bias: scalar logit bias (SigLIP initialises it at -10).
    axis_name: as in `clip_loss`.
    block_size: if set, the blockwise ring path (`ring.ring_siglip_loss`).

  Returns:
    The global scalar loss, identical on every device.
  """
  if block_size is not None:
    return ring.ring_siglip_loss(
      zimg, ztxt, temperature=temperature, bias=bias, axis_name=axis_name, block_size=block_size
    )
  b = zimg.shape[0]
  dtype = _common.compute_dtype(zimg, ztxt)
  temperature = _common.as_temperature(temperature, dtype)
  bias = jnp.asarray(bias).astype(dtype)
  all_txt = _common.gather_rows(ztxt, axis_name)
  logits = _common.similarity(zimg, all_txt) / temperature + bias
  rows = _common.global_rows(b, axis_name)
  cols = jnp.arange(all_txt.shape[0])
  signs = jnp.where(rows[:, None] == cols[None, :], 1.0, -1.0).astype(dtype)
  local = -jnp.sum(jax.nn.log_sigmoid(signs * logits))
  return _common.global_sum(local, axis_name) / (b * _common.axis_size(axis_name))
