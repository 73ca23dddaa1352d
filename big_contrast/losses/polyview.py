r"""Objectives for M > 2 views of each sample: poly-view (Shidani et al.), MV-InfoNCE and MV-DHEL.

Inputs are ``z: [b, M, d]`` as in `multiview.py`; :math:`s_{i\alpha, j\beta} =
\langle z_{i\alpha}, z_{j\beta} \rangle / \tau`. Each is channels of the blockwise
engine plus a head over the views of a sample, which share a device.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from big_contrast.losses import _common, views
from big_contrast.losses._common import AxisName
from big_contrast.losses.blockwise import Lse, Sum, row_stats

PolyviewVariant = Literal["arithmetic", "geometric", "sufficient_statistics"]


def _same_view(own, other):
  return own["view"][:, None] == other["view"][None, :]


def _same_view_same_sample(own, other):
  return _same_view(own, other) & (own["sample"][:, None] == other["sample"][None, :])


def _sufficient_statistics(z, temperature, axis_name, block_size):
  b, m, d = z.shape
  rows, meta = views.flatten(z, axis_name)
  # T(X_{j,≠α}) = mean of sample j's other views (unnormalised, a sufficient statistic).
  rest = (jnp.sum(z, axis=1, keepdims=True) - z) / (m - 1)
  (lse, pos), _ = row_stats(
    rows,
    rest.reshape(b * m, d),
    temperature=temperature,
    row_meta=meta,
    col_meta=meta,
    row_channels=(Lse(_same_view), Sum(_same_view_same_sample)),
    axis_name=axis_name,
    block_size=block_size,
  )
  return _common.global_mean(lse - pos, axis_name)


def polyview_loss(
  z: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  variant: PolyviewVariant = "geometric",
  axis_name: AxisName = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Poly-view contrastive loss (Shidani et al., ICLR 2024, arXiv 2403.05490) for M >= 2 views.

  For anchor view :math:`\alpha` of sample i and each sibling :math:`\beta \neq
  \alpha`, the pairwise probability of picking :math:`x_{i\beta}` out of itself
  plus every view of every other sample (the paper's pseudo-code mask) is

  .. math::
    p_{i\alpha\beta} = \frac{e^{s_{i\alpha,i\beta}}}{e^{s_{i\alpha,i\beta}}
        + \sum_{j \neq i} \sum_{\gamma} e^{s_{i\alpha,j\gamma}}},
    \qquad \ell_{i\alpha\beta} = -\log p_{i\alpha\beta}.

  * ``"geometric"`` (Geometric PVC): :math:`L_{i\alpha} = \frac{1}{M-1}\sum_\beta
    \ell_{i\alpha\beta}`, the log of the geometric mean of the :math:`p`;
  * ``"arithmetic"`` (Arithmetic PVC): :math:`L_{i\alpha} = -\log \frac{1}{M-1}
    \sum_\beta p_{i\alpha\beta}`, the log of their arithmetic mean, as the
    paper's equations define it (a tighter bound than the geometric one, by
    Jensen: :math:`L^{arith} \le L^{geo}`). The paper's pseudo-code, reproduced
    in pakoromilas/Multi-View-CL models/losses.py (`PVCLoss`), instead takes
    ``logsumexp_β ℓ - log K``: a soft maximum of the *losses*, :math:`\ge
    L^{geo}`, which weights the hardest sibling where the equations weight the
    easiest; the two agree only at M = 2 (up to the constant log K). We follow
    the equations;
  * ``"sufficient_statistics"``: the paper's sufficient-statistics objective,
    one-vs-rest InfoNCE between each view and the mean of the other views,
    :math:`T_{j\alpha} = \frac{1}{M-1}\sum_{\beta\neq\alpha} z_{j\beta}`:
    :math:`L_{i\alpha} = -\log e^{\langle z_{i\alpha}, T_{i\alpha}\rangle/\tau} /
    \sum_j e^{\langle z_{i\alpha}, T_{j\alpha}\rangle/\tau}` (our reading of the
    paper's section; no released code to check it against).

  :math:`L = \frac{1}{BM}\sum_{i,\alpha} L_{i\alpha}`. For M = 2 the first two
  equal `ntxent_loss` (SimCLR).

  Args:
    z: [b, M, d] L2-normalised views, M >= 2.
    temperature: scalar (possibly learned).
    variant: "arithmetic", "geometric" or "sufficient_statistics".
    axis_name: None on one device, else the mesh axis the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.
  """
  if variant not in ("arithmetic", "geometric", "sufficient_statistics"):
    raise ValueError(
      f"variant must be 'arithmetic', 'geometric' or 'sufficient_statistics', got {variant!r}."
    )
  if variant == "sufficient_statistics":
    views.flatten(z, axis_name)  # checks the shape
    return _sufficient_statistics(z, temperature, axis_name, block_size)
  b, m, _ = z.shape
  lse_neg = views.row_lse(
    z, views.other_sample, temperature=temperature, axis_name=axis_name, block_size=block_size
  )
  sib = views.sibling_logits(z, temperature).reshape(b * m, m)
  per_pair = jax.nn.softplus(lse_neg[:, None] - sib)  # ℓ_{iαβ}
  sibling = jnp.tile(views.off_diagonal(m), (b, 1))
  if variant == "geometric":
    per_anchor = jnp.sum(jnp.where(sibling, per_pair, 0.0), axis=-1) / (m - 1)
  else:
    log_mean_p = jax.nn.logsumexp(jnp.where(sibling, -per_pair, -jnp.inf), axis=-1)
    per_anchor = jnp.log(jnp.asarray(m - 1, per_pair.dtype)) - log_mean_p
  return _common.global_mean(per_anchor, axis_name)


def _positive_lse(z, temperature, *, ordered: bool) -> jax.Array:
  """[b] log Σ e^{s_{il,il'}} over the pairs of a sample's views (l ≠ l', or l < l')."""
  m = z.shape[1]
  sib = views.sibling_logits(z, temperature)
  pairs = views.off_diagonal(m) if ordered else jnp.triu(jnp.ones((m, m), bool), k=1)
  return jax.nn.logsumexp(jnp.where(pairs[None], sib, -jnp.inf), axis=(1, 2))


def mv_infonce_loss(
  z: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  axis_name: AxisName = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""MV-InfoNCE (Koromilas et al., 2025, arXiv 2507.06979): one InfoNCE term per sample.

  As pakoromilas/Multi-View-CL models/losses.py (`MVINFONCE`):

  .. math::
    L = \frac{1}{B}\sum_i -\log \frac{\sum_{l \neq l'} e^{s_{il,il'}}}
        {\sum_l \sum_{(j,m) \neq (i,l)} e^{s_{il,jm}}},

  every view of every sample but the anchor itself in the denominator. (The
  repository's README writes the denominator over :math:`m \neq l` only, leaving
  out the same view of other samples; we follow the code the paper's results
  come from.)

  Args:
    z: [b, M, d] L2-normalised views, M >= 2.
    temperature: scalar (possibly learned).
    axis_name: None on one device, else the mesh axis the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.
  """
  b, m, _ = z.shape
  lse = views.row_lse(
    z, views.not_self, temperature=temperature, axis_name=axis_name, block_size=block_size
  )
  negatives = jax.nn.logsumexp(lse.reshape(b, m), axis=1)
  per_sample = negatives - _positive_lse(z, temperature, ordered=True)
  return _common.global_mean(per_sample, axis_name)


def mv_dhel_loss(
  z: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  axis_name: AxisName = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""MV-DHEL (Koromilas et al., 2025, arXiv 2507.06979): alignment decoupled from uniformity.

  As pakoromilas/Multi-View-CL models/losses.py (`MVDHEL`):

  .. math::
    L = \frac{1}{B}\sum_i \Big[ -\log \sum_{l < l'} e^{s_{il,il'}}
        + \sum_l \log \sum_{j \neq i} e^{s_{il,jl}} \Big]:

  each view's negatives are the same view of the other samples; the positives
  never enter a denominator. (The README's equation sums over :math:`l \neq l'`,
  a constant log 2, and over all j including i, a self-similarity term; we follow
  the code.)

  Args:
    z: [b, M, d] L2-normalised views, M >= 2.
    temperature: scalar (possibly learned).
    axis_name: None on one device, else the mesh axis the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.
  """
  b, m, _ = z.shape
  lse = views.row_lse(
    z,
    views.same_view_other_sample,
    temperature=temperature,
    axis_name=axis_name,
    block_size=block_size,
  )
  per_sample = jnp.sum(lse.reshape(b, m), axis=1) - _positive_lse(z, temperature, ordered=False)
  return _common.global_mean(per_sample, axis_name)
