r"""Objectives between two aligned sets (row i of one pairs with row i of the other).

CLIP (softmax InfoNCE, both directions; multi-positive, label-smoothed or
decoupled), SigLIP (pairwise sigmoid) and SimCSE (InfoNCE between two dropout
views, one direction). Each is channels of the blockwise engine (`blockwise.py`)
in its paired layout: ``block_size=None`` gathers the other side and holds
[b, B] logits, ``block_size=k`` passes column blocks around the device ring and
never holds more than about [b, k]; both give the same values and gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from big_contrast.losses import _common
from big_contrast.losses._common import AxisName
from big_contrast.losses.blockwise import Lse, Sum, Then, row_stats


def _everything(own, other):
  return jnp.ones((own["id"].shape[0], other["id"].shape[0]), bool)


def _match(own, other):
  return own["id"][:, None] == other["id"][None, :]


def _mismatch(own, other):
  return own["id"][:, None] != other["id"][None, :]


def _lse_neg(stats):
  """The second pass's shift: the first pass's log-sum-exp over the negatives."""
  return {"lse_neg": stats[0]}


def _ids(b: int, pair_ids, axis_name):
  if pair_ids is None:
    return _common.global_rows(b, axis_name)
  return jnp.asarray(pair_ids, jnp.int32)


def _infonce(
  rows, cols, ids, temperature, *, both, label_smoothing, decoupled, axis_name, block_size
):
  """Per-row (and, with `both`, per-column) InfoNCE losses of rows against all columns."""
  meta = {"id": ids}
  common = dict(
    temperature=temperature,
    row_meta=meta,
    col_meta=meta,
    axis_name=axis_name,
    block_size=block_size,
  )
  side = lambda chans: dict(row_channels=chans, col_channels=chans if both else ())
  if decoupled:
    # Two passes: each row's log-sum-exp over its negatives, then each positive against it.
    second = (Sum(_match, "softplus_neg", "lse_neg"), Sum(_match, "count"))
    then = Then(_lse_neg, second, second if both else ())
    _, (rows_out, cols_out) = row_stats(rows, cols, **common, **side((Lse(_mismatch),)), then=then)
    mean_over_positives = lambda s: s[0] / jnp.maximum(s[1], 1)
    return mean_over_positives(rows_out), (mean_over_positives(cols_out) if both else None)
  channels = (Lse(_everything), Sum(_match), Sum(_match, "count"))
  if label_smoothing:
    channels += (Sum(_everything),)
  rows_out, cols_out = row_stats(rows, cols, **common, **side(channels))
  n_cols = cols.shape[0] * _common.axis_size(axis_name)
  n_rows = rows.shape[0] * _common.axis_size(axis_name)

  def loss(stats, n):
    lse, pos, count = stats[:3]
    out = lse - (1.0 - label_smoothing) * pos / jnp.maximum(count, 1)
    if label_smoothing:
      out = out - label_smoothing * stats[3] / n
    return out

  return loss(rows_out, n_cols), (loss(cols_out, n_rows) if both else None)


def clip_loss(
  zimg: jax.Array,
  ztxt: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  axis_name: AxisName = None,
  block_size: int | None = None,
  pair_ids: jax.Array | None = None,
  label_smoothing: float = 0.0,
  decoupled: bool = False,
  keys: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
  r"""Symmetric InfoNCE of CLIP (Radford et al., 2021), optionally multi-positive.

  With :math:`s_{ij} = \langle x_i, y_j \rangle / \tau` over the global batch of
  :math:`B` pairs,

  .. math::
    L = \frac{1}{2B} \sum_i \Big[\log\sum_j e^{s_{ij}} - \sum_j t_{ij} s_{ij}\Big]
      + \frac{1}{2B} \sum_j \Big[\log\sum_i e^{s_{ij}} - \sum_i t_{ji} s_{ij}\Big],

  :math:`t_{ij} = (1 - \varepsilon)\,[\mathrm{id}_i = \mathrm{id}_j] / |\{k :
  \mathrm{id}_k = \mathrm{id}_i\}| + \varepsilon / B`: uniform over the samples
  with the same ``pair_ids`` (e.g. several captions of one image; without
  ``pair_ids`` every sample is its own id), smoothed with ``label_smoothing`` =
  ε as `torch.nn.functional.cross_entropy(label_smoothing=ε)`, which the
  improved CLIP baseline of Fini et al., 2023 (facebookresearch/clip-rocket
  losses.py, `CL2LLoss`) uses. ε = 0 and no ``pair_ids``: plain CLIP.

  ``decoupled=True``: DEXML's decoupled softmax (Gupta et al., 2024,
  nilesh2797/DEXML losses.py): each positive of a row against that row's
  negatives only, :math:`\frac{1}{|P_i|}\sum_{p \in P_i} -\log \frac{e^{s_{ip}}}
  {e^{s_{ip}} + \sum_{j \notin P_i} e^{s_{ij}}}`, in both directions; with
  distinct ids it is plain CLIP.

  ``keys`` = (image keys, text keys) from a momentum encoder: the images are
  contrasted with the text keys and the texts with the image keys (MoCo v3's
  query/key split, Chen, Xie & He, 2021); no gradient flows into the keys.

  Args:
    zimg: [b, d] L2-normalised image embeddings (this device's rows).
    ztxt: [b, d] L2-normalised text embeddings, row i pairs with ``zimg[i]``.
    temperature: scalar; logits are cosine / temperature. May be a traced,
      learned value: its gradient is exact.
    axis_name: None on one device; inside `jax.shard_map` over the batch, the
      mesh axis (or tuple of axes) the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path
      (at most [b, k] logits at a time, no gathered batch).
    pair_ids: optional [b] integer ids; equal ids are mutual positives.
    label_smoothing: ε in [0, 1).
    decoupled: DEXML's decoupled softmax over the positives.
    keys: optional momentum-encoder (zimg, ztxt) embeddings of the same pairs.

  Returns:
    The global scalar loss, identical on every device.
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
  if decoupled and label_smoothing:
    raise ValueError("decoupled=True and label_smoothing > 0 do not combine.")
  ids = _ids(zimg.shape[0], pair_ids, axis_name)
  opts = dict(
    label_smoothing=label_smoothing,
    decoupled=decoupled,
    axis_name=axis_name,
    block_size=block_size,
  )
  if keys is None:
    i2t, t2i = _infonce(zimg, ztxt, ids, temperature, both=True, **opts)
  else:
    kimg, ktxt = (jax.lax.stop_gradient(k) for k in keys)
    i2t, _ = _infonce(zimg, ktxt, ids, temperature, both=False, **opts)
    t2i, _ = _infonce(ztxt, kimg, ids, temperature, both=False, **opts)
  return (_common.global_mean(i2t, axis_name) + _common.global_mean(t2i, axis_name)) / 2


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
    block_size: None for the all-gather path, k for the blockwise ring path.

  Returns:
    The global scalar loss, identical on every device.
  """
  b = zimg.shape[0]
  meta = {"id": _common.global_rows(b, axis_name)}
  dtype = _common.compute_dtype(zimg, ztxt)
  # -log σ(s + b) = softplus(-(s - u)), -log σ(-(s + b)) = softplus(s - u), u = -b.
  shift = jnp.full((b,), -jnp.asarray(bias, dtype))
  (pos, neg), _ = row_stats(
    zimg,
    ztxt,
    temperature=temperature,
    row_meta=meta,
    col_meta=meta,
    row_channels=(Sum(_match, "softplus_neg", "u"), Sum(_mismatch, "softplus", "u")),
    row_shifts={"u": shift},
    axis_name=axis_name,
    block_size=block_size,
  )
  return _common.global_mean(pos + neg, axis_name)


def simcse_loss(
  z: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  symmetric: bool = False,
  axis_name: AxisName = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Unsupervised SimCSE (Gao, Yao & Chen, 2021, eq. 1): view 1 → view 2.

  As princeton-nlp/SimCSE simcse/models.py (`cl_forward`): the cross-entropy of
  picking sentence i's second dropout view among the second views of the
  global batch, from its first view,

  .. math:: L = \frac{1}{B}\sum_i -\log \frac{e^{s(z_i, z_i^+)}}{\sum_j e^{s(z_i, z_j^+)}}.

  ``symmetric=True`` adds the other direction and averages (`clip_loss` at a
  fixed temperature).

  Args:
    z: [b, 2, d] L2-normalised views (view 0 the anchors, view 1 the targets).
    temperature: scalar (0.05 in the paper).
    symmetric: average with the view 2 → view 1 direction.
    axis_name: None on one device, else the mesh axis the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.
  """
  if z.ndim != 3 or z.shape[1] != 2:
    raise ValueError(f"SimCSE needs z of shape [b, 2, d], got {z.shape}.")
  ids = _common.global_rows(z.shape[0], axis_name)
  fwd, bwd = _infonce(
    z[:, 0],
    z[:, 1],
    ids,
    temperature,
    both=symmetric,
    label_smoothing=0.0,
    decoupled=False,
    axis_name=axis_name,
    block_size=block_size,
  )
  loss = _common.global_mean(fwd, axis_name)
  return (loss + _common.global_mean(bwd, axis_name)) / 2 if symmetric else loss
