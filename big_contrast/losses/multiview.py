r"""Self-supervised and supervised objectives over several views of each sample.

Inputs are ``z: [b, V, d]``: this device's b samples, V L2-normalised views each,
flattened sample-major into anchors (`views.py`); :math:`s_{ac} = \langle z_a,
z_c \rangle / \tau`, :math:`P(a)` the anchor's positives and :math:`N(a)` the views
of every other sample. Every loss is a few channels of the blockwise engine
(`blockwise.py`) plus a head, so ``block_size=None`` (all-gather, [bV, BV] logits)
and ``block_size=k`` (the device ring, [bV, k] logits at a time) give the same
values and gradients. Positives that are views of the anchor's own sample are on
the anchor's device, so their logits are computed locally.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from big_contrast.losses import _common, views
from big_contrast.losses._common import AxisName
from big_contrast.losses.blockwise import Lse, Sum, Then, row_stats


def _lse_neg(stats):
  """The second pass's shift: the first pass's log-sum-exp over the negatives."""
  return {"lse_neg": stats[0]}


def _views_scale(v: int, sum_over_views: bool) -> float:
  return float(v) if sum_over_views else 1.0


@functools.cache
def _view_is(beta: int):
  return lambda own, other: jnp.broadcast_to(
    other["view"][None, :] == beta, (own["view"].shape[0], other["view"].shape[0])
  )


@functools.cache
def _sibling_in_view(beta: int):
  return lambda own, other: (
    (own["sample"][:, None] == other["sample"][None, :]) & (other["view"][None, :] == beta)
  )


def _momentum_ntxent(z, keys, temperature, axis_name, block_size):
  """Per anchor, the mean over the other views β of InfoNCE against the keys of view β."""
  b, v, _ = z.shape
  if keys.shape != z.shape:
    raise ValueError(f"keys {keys.shape} must have the shape of the views {z.shape}.")
  rows, meta = views.flatten(z, axis_name)
  cols, _ = views.flatten(jax.lax.stop_gradient(keys), axis_name)
  channels = tuple(
    ch for beta in range(v) for ch in (Lse(_view_is(beta)), Sum(_sibling_in_view(beta)))
  )
  stats, _ = row_stats(
    rows,
    cols,
    temperature=temperature,
    row_meta=meta,
    col_meta=meta,
    row_channels=channels,
    axis_name=axis_name,
    block_size=block_size,
  )
  lse, pos = jnp.stack(stats[0::2], axis=1), jnp.stack(stats[1::2], axis=1)  # [bV, V]
  other_view = jnp.arange(v)[None, :] != meta["view"][:, None]
  return jnp.sum(jnp.where(other_view, lse - pos, 0.0), axis=1) / (v - 1)


def ntxent_loss(
  z: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  axis_name: AxisName = None,
  block_size: int | None = None,
  sum_over_views: bool = False,
  keys: jax.Array | None = None,
) -> jax.Array:
  r"""NT-Xent of SimCLR (Chen et al., 2020; google-research/simclr objective.py) over V views.

  Each anchor's positives are the other V-1 views of its sample; the
  denominator runs over every view but the anchor itself:

  .. math::
    L = \frac{c}{BV} \sum_a \frac{1}{V-1} \sum_{p \in P(a)}
        -\log \frac{e^{s_{ap}}}{\sum_{c \neq a} e^{s_{ac}}}.

  For V = 2 and c = 1 this is the mean over the 2B views; SimCLR's
  `add_contrastive_loss` returns ``loss_a + loss_b``, the sum of the two views'
  means, which is ``sum_over_views=True`` (c = V). Under LARS the parameters it
  excludes (biases, norms) take plain momentum steps, so the convention changes
  their step size.

  With ``keys`` (the same views through a momentum encoder, MoCo v3: Chen, Xie &
  He, 2021, moco/builder.py), anchor view α is contrasted with the keys of each
  other view β (its own sample's key the positive, the other samples' keys of
  view β the negatives) and the V-1 terms averaged; for V = 2 with
  ``sum_over_views`` this is MoCo v3's ``ctr(q1, k2) + ctr(q2, k1)`` (without its
  2τ factor). No gradient flows into the keys.

  Args:
    z: [b, V, d] L2-normalised views, V >= 2.
    temperature: scalar (possibly learned).
    axis_name: None on one device, else the mesh axis the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.
    sum_over_views: multiply by V (SimCLR's and MoCo v3's scale).
    keys: optional [b, V, d] momentum-encoder embeddings of the same views.
  """
  v = z.shape[1]
  if keys is not None:
    per_anchor = _momentum_ntxent(z, keys, temperature, axis_name, block_size)
    return _common.global_mean(per_anchor, axis_name) * _views_scale(v, sum_over_views)
  rows, meta = views.flatten(z, axis_name)
  (lse, pos), _ = row_stats(
    rows,
    temperature=temperature,
    row_meta=meta,
    row_channels=(Lse(views.not_self), Sum(views.sibling)),
    axis_name=axis_name,
    block_size=block_size,
  )
  per_anchor = lse - pos / (v - 1)
  return _common.global_mean(per_anchor, axis_name) * _views_scale(v, sum_over_views)


def supcon_loss(
  z: jax.Array,
  labels: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  base_temperature: float | None = 0.07,
  axis_name: AxisName = None,
  block_size: int | None = None,
  decoupled: bool = False,
) -> jax.Array:
  r"""Supervised contrastive loss :math:`L^{sup}_{out}` (Khosla et al., 2020, eq. 2).

  As HobbitLong/SupContrast losses.py (`SupConLoss`, contrast_mode='all'):

  .. math::
    L = \frac{\tau}{\tau_{base}} \frac{1}{|A|} \sum_{a \in A} \frac{1}{|P(a)|}
        \sum_{p \in P(a)} -\log \frac{e^{s_{ap}}}{\sum_{c \neq a} e^{s_{ac}}},

  :math:`P(a)` the views :math:`p \neq a` that share a label with :math:`a` (for
  multi-hot labels: at least one common label) or belong to the same sample,
  :math:`A` the anchors with a non-empty :math:`P(a)` (all of them when V >= 2).
  ``base_temperature`` is the official code's τ_base (0.07; None: no factor).
  With all labels distinct and no factor this is `ntxent_loss`.

  ``decoupled=True`` is the decoupled softmax of DEXML (Gupta et al., 2024,
  nilesh2797/DEXML losses.py, 'decoupled-softmax'): each positive is scored
  against the negatives :math:`N(a)` (neither positives nor the anchor) only,
  :math:`\frac{1}{|P(a)|}\sum_p -\log \frac{e^{s_{ap}}}{e^{s_{ap}} + \sum_{n \in N(a)} e^{s_{an}}}`,
  so positives do not compete with each other.

  Args:
    z: [b, V, d] L2-normalised views.
    labels: [b] integer class ids, or [b, C] multi-hot label sets.
    temperature: scalar (possibly learned).
    base_temperature: τ_base of the τ/τ_base factor, or None.
    axis_name: None on one device, else the mesh axis the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.
    decoupled: DEXML's decoupled softmax over the positives.
  """
  rows, meta = views.flatten(z, axis_name, labels, min_views=1)
  common = dict(temperature=temperature, row_meta=meta, axis_name=axis_name, block_size=block_size)
  if decoupled:
    # Two passes: the negatives' log-sum-exp, then each positive against it.
    then = Then(
      _lse_neg,
      (
        Sum(views.supervised_positive, "softplus_neg", "lse_neg"),
        Sum(views.supervised_positive, "count"),
      ),
    )
    _, ((total, count), _) = row_stats(
      rows, row_channels=(Lse(views.supervised_negative),), then=then, **common
    )
    per_anchor = total / jnp.maximum(count, 1)
  else:
    channels = (
      Lse(views.not_self),
      Sum(views.supervised_positive),
      Sum(views.supervised_positive, "count"),
    )
    (lse, pos, count), _ = row_stats(rows, row_channels=channels, **common)
    per_anchor = lse - pos / jnp.maximum(count, 1)
  loss = _common.global_mean(per_anchor, axis_name, where=count > 0)
  if base_temperature is None:
    return loss
  return loss * jnp.asarray(temperature, loss.dtype) / base_temperature


def dcl_loss(
  z: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  axis_name: AxisName = None,
  block_size: int | None = None,
  sum_over_views: bool = False,
  vmf_sigma: float | None = None,
) -> jax.Array:
  r"""Decoupled contrastive loss (Yeh et al., 2022, eq. 6): the positive leaves the denominator.

  .. math::
    L = \frac{c}{BV} \sum_a \Big[ -\frac{1}{V-1} \sum_{p \in P(a)} w_{ap}\, s_{ap}
        + \log \sum_{n \in N(a)} e^{s_{an}} \Big],

  :math:`P(a)` the other views of the anchor's sample, :math:`N(a)` every view of
  every other sample, :math:`w = 1`. For V = 2 both views serve as anchors, as in
  the reference implementation (raminnakhli/Decoupled-Contrastive-Learning
  loss/dcl.py, `DCL`), which returns the *sum* of the two directions' means:
  ``sum_over_views=True`` (c = V; the default c = 1 is their mean).

  ``vmf_sigma`` = σ is DCLW, the von Mises-Fisher weighting of the paper:
  :math:`w_{ap} = 2 - e^{\cos_{ap}/\sigma} / \mathbb{E}[e^{\cos/\sigma}]`, the
  expectation over all positive pairs of the global batch (weights average to
  1; the reference code's softmax over the batch omits the factor B, which
  leaves w ≈ 2). The weight is differentiated, as in that code.

  Args:
    z: [b, V, d] L2-normalised views, V >= 2.
    temperature: scalar (possibly learned).
    axis_name: None on one device, else the mesh axis the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.
    sum_over_views: multiply by V (the reference implementation's scale).
    vmf_sigma: None for DCL, σ > 0 for DCLW.
  """
  b, v, _ = z.shape
  lse_neg = views.row_lse(
    z, views.other_sample, temperature=temperature, axis_name=axis_name, block_size=block_size
  )
  sib = views.sibling_logits(z, temperature)  # [b, V, V]
  off = views.off_diagonal(v)[None]
  if vmf_sigma is None:
    weight = jnp.ones_like(sib)
  else:
    if vmf_sigma <= 0:
      raise ValueError(f"vmf_sigma must be > 0, got {vmf_sigma}.")
    e = jnp.exp(views.sibling_logits(z, vmf_sigma))  # e^{cos/σ}
    mean = _common.global_mean(e, axis_name, where=jnp.broadcast_to(off, e.shape))
    weight = 2.0 - e / mean
  pos = jnp.sum(jnp.where(off, weight * sib, 0.0), axis=-1).reshape(b * v) / (v - 1)
  return _common.global_mean(lse_neg - pos, axis_name) * _views_scale(v, sum_over_views)


def debiased_loss(
  z: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  tau_plus: float,
  beta: float = 0.0,
  axis_name: AxisName = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Debiased contrastive loss (Chuang et al., 2020) with hard negatives (Robinson et al., 2021).

  For anchor :math:`a`, positive :math:`p` and the :math:`N = (B-1)V`
  negatives :math:`n \in N(a)`, with importance weights
  :math:`w_n = e^{\beta s_{an}} / \frac{1}{N}\sum_{m} e^{\beta s_{am}}`:

  .. math::
    N g_{ap} = \max\Big( \frac{\sum_n w_n e^{s_{an}} - \tau^+ N e^{s_{ap}}}{1 - \tau^+},
                         N e^{-1/\tau} \Big), \qquad
    L = \frac{1}{BV} \sum_a \frac{1}{V-1} \sum_{p \in P(a)}
        -\log \frac{e^{s_{ap}}}{e^{s_{ap}} + N g_{ap}}

  (chingyaoc/DCL main.py, joshr17/HCL image/main.py). :math:`\tau^+` is the
  class prior; :math:`\beta = 0` is plain debiased; :math:`\tau^+ = 0, \beta = 0`
  is NT-Xent (for V = 2). Everything is evaluated in log space, so 1/τ = 100
  does not overflow.

  Args:
    z: [b, V, d] L2-normalised views, V >= 2.
    temperature: scalar (possibly learned).
    tau_plus: class prior in [0, 1).
    beta: hard-negative concentration, >= 0.
    axis_name: None on one device, else the mesh axis the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.
  """
  if not 0.0 <= tau_plus < 1.0:
    raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}.")
  b, v, _ = z.shape
  rows, meta = views.flatten(z, axis_name)
  (lse_hard, lse_beta), _ = row_stats(
    rows,
    temperature=temperature,
    row_meta=meta,
    row_channels=(Lse(views.other_sample, 1.0 + beta), Lse(views.other_sample, beta)),
    axis_name=axis_name,
    block_size=block_size,
  )
  sib = views.sibling_logits(z, temperature).reshape(b * v, v)
  dtype = sib.dtype
  log_n = jnp.log(jnp.asarray((b * _common.axis_size(axis_name) - 1) * v, dtype))
  # log Σ_n w_n e^{s_n} = log N + LSE((1+β) s) - LSE(β s)
  log_reweighted = (log_n + lse_hard - lse_beta)[:, None]
  log_bias = jnp.log(jnp.asarray(tau_plus, dtype)) + log_n + sib  # log(τ⁺ N e^{s_ap})
  gap = log_bias - log_reweighted
  ok = gap < 0
  safe_gap = jnp.where(ok, gap, -1.0)
  log_debiased = jnp.where(
    ok, log_reweighted + jnp.log(-jnp.expm1(safe_gap)) - jnp.log1p(-tau_plus), -jnp.inf
  )
  inv_t = 1.0 / jnp.asarray(temperature, dtype)
  log_ng = jnp.maximum(log_debiased, log_n - inv_t)
  per_pair = jnp.logaddexp(sib, log_ng) - sib
  off = jnp.tile(views.off_diagonal(v), (b, 1))
  per_anchor = jnp.sum(jnp.where(off, per_pair, 0.0), axis=-1) / (v - 1)
  return _common.global_mean(per_anchor, axis_name)
