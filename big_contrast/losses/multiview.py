"""Self-supervised and supervised objectives over several views of each sample.

Inputs are ``z: [b, V, d]``: this device's ``b`` samples, ``V`` L2-normalised
views each. Views are flattened sample-major into ``B·V`` "anchors"; with
:math:`s_{ac} = \\langle z_a, z_c \rangle / \tau`, :math:`P(a)` the anchor's
positives and :math:`N(a)` the views of all *other* samples. Each device
computes the terms of its own anchors against the gathered global views.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from big_contrast.losses import _common
from big_contrast.losses._common import AxisName


class _ViewLogits(NamedTuple):
  logits: jax.Array  # [b·V, B·V]  s_ac for this device's anchors.
  is_self: jax.Array  # [b·V, B·V]  c is the anchor itself.
  same_sample: jax.Array  # [b·V, B·V]  c is a view of the anchor's sample (incl. itself).
  anchor_rows: jax.Array  # [b·V]       global sample index of each anchor.


def _view_logits(z: jax.Array, temperature, axis_name: AxisName) -> _ViewLogits:
  b, v, d = z.shape
  if v < 2:
    raise ValueError(f"Need at least 2 views per sample, got z of shape {z.shape}.")
  dtype = _common.compute_dtype(z)
  temperature = _common.as_temperature(temperature, dtype)
  cols = _common.gather_rows(z, axis_name).reshape(-1, d)
  logits = _common.similarity(z.reshape(b * v, d), cols) / temperature
  anchor_rows = jnp.repeat(_common.global_rows(b, axis_name), v)
  col_rows = jnp.repeat(jnp.arange(cols.shape[0] // v), v)
  anchor_flat = _common.axis_index(axis_name) * b * v + jnp.arange(b * v)
  is_self = anchor_flat[:, None] == jnp.arange(cols.shape[0])[None, :]
  same_sample = anchor_rows[:, None] == col_rows[None, :]
  return _ViewLogits(logits, is_self, same_sample, anchor_rows)


def _global_mean(per_anchor: jax.Array, valid: jax.Array, axis_name: AxisName):
  local = jnp.sum(jnp.where(valid, per_anchor, 0.0))
  count = jnp.sum(valid.astype(per_anchor.dtype))
  return _common.global_sum(local, axis_name) / _common.global_sum(count, axis_name)


def _logsumexp_where(logits: jax.Array, mask: jax.Array) -> jax.Array:
  return jax.nn.logsumexp(jnp.where(mask, logits, -jnp.inf), axis=-1)


def _mean_over_positives(logits: jax.Array, positive: jax.Array) -> jax.Array:
  count = jnp.sum(positive, axis=-1)
  total = jnp.sum(jnp.where(positive, logits, 0.0), axis=-1)
  return total / jnp.maximum(count, 1)


def _supervised_contrast(vl: _ViewLogits, positive: jax.Array, axis_name):
  lse = _logsumexp_where(vl.logits, ~vl.is_self)
  per_anchor = lse - _mean_over_positives(vl.logits, positive)
  return _global_mean(per_anchor, jnp.any(positive, axis=-1), axis_name)


def ntxent_loss(
  z: jax.Array, *, temperature: jax.typing.ArrayLike, axis_name: AxisName = None
) -> jax.Array:
  r"""NT-Xent of SimCLR (Chen et al., 2020) generalised to V views.

  Each anchor's positives are the other V-1 views of its sample; the
  denominator runs over every view but the anchor itself:

  .. math::
    L = \frac{1}{BV} \sum_a \frac{1}{V-1} \sum_{p \in P(a)}
        -\log \frac{e^{s_{ap}}}{\sum_{c \neq a} e^{s_{ac}}}.

  For V = 2 this is exactly SimCLR's loss over the 2B views.

  Args:
    z: [b, V, d] L2-normalised views, V >= 2.
    temperature: scalar (possibly learned).
    axis_name: None on one device, else the mesh axis the batch is split over.
  """
  vl = _view_logits(z, temperature, axis_name)
  return _supervised_contrast(vl, vl.same_sample & ~vl.is_self, axis_name)


def supcon_loss(
  z: jax.Array,
  labels: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  axis_name: AxisName = None,
) -> jax.Array:
  r"""Supervised contrastive loss :math:`L^{sup}_{out}` (Khosla et al., 2020, eq. 2).

  .. math::
    L = \frac{1}{|A|} \sum_{a \in A} \frac{1}{|P(a)|} \sum_{p \in P(a)}
        -\log \frac{e^{s_{ap}}}{\sum_{c \neq a} e^{s_{ac}}},

  where :math:`P(a)` holds the views :math:`p \neq a` that share a label with
  :math:`a` (for multi-hot labels: at least one common label) or belong to the
  same sample, and :math:`A` the anchors with a non-empty :math:`P(a)` (all of
  them when V >= 2). No :math:`\tau/\tau_{base}` factor. With all labels
  distinct this is `ntxent_loss`.

  Args:
    z: [b, V, d] L2-normalised views.
    labels: [b] integer class ids, or [b, C] multi-hot label sets.
    temperature: scalar (possibly learned).
    axis_name: None on one device, else the mesh axis the batch is split over.
  """
  vl = _view_logits(z, temperature, axis_name)
  v = z.shape[1]
  labels = jnp.asarray(labels)
  all_labels = _common.gather_rows(labels, axis_name)
  if labels.ndim == 1:
    shared = labels[:, None] == all_labels[None, :]
  elif labels.ndim == 2:
    overlap = jnp.einsum("nc,mc->nm", labels.astype(jnp.float32), all_labels.astype(jnp.float32))
    shared = overlap > 0
  else:
    raise ValueError(f"labels must be [b] ids or [b, C] multi-hot, got {labels.shape}.")
  shared = jnp.repeat(jnp.repeat(shared, v, axis=0), v, axis=1)
  return _supervised_contrast(vl, (shared | vl.same_sample) & ~vl.is_self, axis_name)


def dcl_loss(
  z: jax.Array, *, temperature: jax.typing.ArrayLike, axis_name: AxisName = None
) -> jax.Array:
  r"""Decoupled contrastive loss (Yeh et al., 2022): the positive leaves the denominator.

  .. math::
    L = \frac{1}{BV} \sum_a \Big[ -\frac{1}{V-1} \sum_{p \in P(a)} s_{ap}
        + \log \sum_{n \in N(a)} e^{s_{an}} \Big],

  :math:`P(a)` the other views of the anchor's sample, :math:`N(a)` every view
  of every other sample. For V = 2 this is the symmetric DCL of the paper
  (both views serve as anchors; negatives of both kinds).

  Args:
    z: [b, V, d] L2-normalised views, V >= 2.
    temperature: scalar (possibly learned).
    axis_name: None on one device, else the mesh axis the batch is split over.
  """
  vl = _view_logits(z, temperature, axis_name)
  positive = vl.same_sample & ~vl.is_self
  per_anchor = _logsumexp_where(vl.logits, ~vl.same_sample) - _mean_over_positives(
    vl.logits, positive
  )
  return _global_mean(per_anchor, jnp.ones_like(per_anchor, bool), axis_name)


def debiased_loss(
  z: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  tau_plus: float,
  beta: float = 0.0,
  axis_name: AxisName = None,
) -> jax.Array:
  r"""Debiased contrastive loss (Chuang et al., 2020) with hard negatives (Robinson et al., 2021).

  For anchor :math:`a`, positive :math:`p` and the :math:`N = (B-1)V`
  negatives :math:`n \in N(a)`, with importance weights
  :math:`w_n = e^{\beta s_{an}} / \frac{1}{N}\sum_{m} e^{\beta s_{am}}`:

  .. math::
    N g_{ap} = \max\Big( \frac{\sum_n w_n e^{s_{an}} - \tau^+ N e^{s_{ap}}}{1 - \tau^+},
                         N e^{-1/\tau} \Big), \qquad
    L = \frac{1}{BV} \sum_a \frac{1}{V-1} \sum_{p \in P(a)}
        -\log \frac{e^{s_{ap}}}{e^{s_{ap}} + N g_{ap}}.

  :math:`\tau^+` is the class prior (probability that a "negative" shares the
  anchor's class); :math:`\beta = 0` is plain debiased; :math:`\tau^+ = 0,
  \beta = 0` is NT-Xent (for V = 2). Everything is evaluated in log space, so
  1/τ = 100 does not overflow.

  Args:
    z: [b, V, d] L2-normalised views, V >= 2.
    temperature: scalar (possibly learned).
    tau_plus: class prior in [0, 1).
    beta: hard-negative concentration, >= 0.
    axis_name: None on one device, else the mesh axis the batch is split over.
  """
  if not 0.0 <= tau_plus < 1.0:
    raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}.")
  vl = _view_logits(z, temperature, axis_name)
  b, v, _ = z.shape
  n_neg = (b * _common.axis_size(axis_name) - 1) * v
  log_n = jnp.log(jnp.asarray(n_neg, vl.logits.dtype))
  negative = ~vl.same_sample
  # log Σ_n w_n e^{s_n} = log N + LSE((1+β) s) - LSE(β s)
  log_reweighted = (
    log_n
    + _logsumexp_where((1.0 + beta) * vl.logits, negative)
    - _logsumexp_where(beta * vl.logits, negative)
  )[:, None]
  # log(τ⁺ N e^{s_ap}) for every candidate positive column.
  log_bias = jnp.log(jnp.asarray(tau_plus, vl.logits.dtype)) + log_n + vl.logits
  gap = log_bias - log_reweighted
  ok = gap < 0
  safe_gap = jnp.where(ok, gap, -1.0)
  log_debiased = jnp.where(
    ok, log_reweighted + jnp.log(-jnp.expm1(safe_gap)) - jnp.log1p(-tau_plus), -jnp.inf
  )
  inv_t = 1.0 / _common.as_temperature(temperature, vl.logits.dtype)
  log_ng = jnp.maximum(log_debiased, log_n - inv_t)
  per_pair = jnp.logaddexp(vl.logits, log_ng) - vl.logits
  positive = vl.same_sample & ~vl.is_self
  per_anchor = _mean_over_positives(per_pair, positive)
  return _global_mean(per_anchor, jnp.ones_like(per_anchor, bool), axis_name)


def polyview_loss(
  z: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  variant: Literal["arithmetic", "geometric"] = "geometric",
  axis_name: AxisName = None,
) -> jax.Array:
  r"""Poly-view contrastive loss (Shidani et al., ICLR 2024) for M = V >= 2 views.

  For an anchor view :math:`a` (view :math:`\alpha` of sample i) and each sibling
  :math:`\beta \in P(a)` (the other M-1 views of sample i), the pairwise
  cross-entropy of picking :math:`\beta` out of itself plus every view of every
  *other* sample, :math:`N(a)`, is

  .. math::
    \ell_{a\beta} = \log\Big(e^{s_{a\beta}} + \sum_{n \in N(a)} e^{s_{an}}\Big) - s_{a\beta}
                = \operatorname{softplus}\big(\mathrm{LSE}_{n \in N(a)} s_{an} - s_{a\beta}\big).

  The M-1 pairwise terms of an anchor are aggregated as

  * ``"geometric"`` (Geometric PVC, geometric mean of the pairwise probabilities
    :math:`e^{-\ell_{a\beta}}`): :math:`L_a = \frac{1}{M-1} \sum_\beta \ell_{a\beta}`;
  * ``"arithmetic"`` (Arithmetic PVC, their arithmetic mean):
    :math:`L_a = -\log \frac{1}{M-1} \sum_\beta e^{-\ell_{a\beta}}`,

  and :math:`L = \frac{1}{BM} \sum_a L_a`. Both are log-sum-exp / softplus
  expressions in float32 (at least), so 1/τ = 100 does not overflow. For M = 2
  both variants equal `ntxent_loss` (SimCLR).

  Args:
    z: [b, V, d] L2-normalised views, V >= 2.
    temperature: scalar (possibly learned).
    variant: "arithmetic" or "geometric" aggregation of the pairwise terms.
    axis_name: None on one device, else the mesh axis the batch is split over.
  """
  if variant not in ("arithmetic", "geometric"):
    raise ValueError(f"variant must be 'arithmetic' or 'geometric', got {variant!r}.")
  vl = _view_logits(z, temperature, axis_name)
  b, v, _ = z.shape
  # LSE over N(a): every view of every other sample (global columns).
  log_neg = _logsumexp_where(vl.logits, ~vl.same_sample)  # [b·V]
  # s_{aβ} against all V views of the anchor's own sample; these are local.
  dtype = vl.logits.dtype
  sib = jnp.einsum("bvd,bwd->bvw", z, z, preferred_element_type=dtype).astype(dtype)
  sib = (sib / _common.as_temperature(temperature, dtype)).reshape(b * v, v)
  sibling = jnp.tile(~jnp.eye(v, dtype=bool), (b, 1))  # β ≠ α
  per_pair = jax.nn.softplus(log_neg[:, None] - sib)  # ℓ_{aβ}
  if variant == "geometric":
    per_anchor = jnp.sum(jnp.where(sibling, per_pair, 0.0), axis=-1) / (v - 1)
  else:
    per_anchor = jnp.log(jnp.asarray(v - 1, dtype)) - _logsumexp_where(-per_pair, sibling)
  return _global_mean(per_anchor, jnp.ones_like(per_anchor, bool), axis_name)
