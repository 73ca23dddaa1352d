"""Wang & Isola (2020) representation diagnostics: alignment and uniformity."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from big_contrast.losses import _common
from big_contrast.losses._common import AxisName


def alignment(
  z1: jax.Array, z2: jax.Array, alpha: float = 2, *, axis_name: AxisName = None
) -> jax.Array:
  r"""Mean distance between positive pairs.

  .. math:: \mathcal{L}_{align} = \frac{1}{B} \sum_i \lVert x_i - y_i \rVert_2^{\alpha}

  Args:
    z1: [b, d] L2-normalised embeddings.
    z2: [b, d] their positives.
    alpha: exponent (> 0).
    axis_name: None on one device, else the mesh axis the batch is split over.
  """
  diff = (z1 - z2).astype(_common.compute_dtype(z1, z2))
  sq = jnp.sum(diff * diff, axis=-1)
  if alpha == 2:
    dist = sq
  else:
    # Gradient-safe power at zero distance.
    dist = jnp.where(sq > 0, jnp.where(sq > 0, sq, 1.0) ** (alpha / 2), 0.0)
  local = jnp.sum(dist)
  return _common.global_sum(local, axis_name) / (z1.shape[0] * _common.axis_size(axis_name))


def uniformity(z: jax.Array, t: float = 2, axis_name: AxisName = None) -> jax.Array:
  r"""Log of the mean Gaussian potential over all distinct global pairs.

  .. math:: \mathcal{L}_{uniform} = \log \frac{1}{B(B-1)} \sum_{i \neq j}
            e^{-t \lVert z_i - z_j \rVert_2^2}

  (equal to the mean over unordered pairs i < j).

  Args:
    z: [b, d] L2-normalised embeddings.
    t: potential scale (> 0).
    axis_name: None on one device, else the mesh axis the batch is split over.
  """
  b = z.shape[0]
  dtype = _common.compute_dtype(z)
  all_z = _common.gather_rows(z, axis_name)
  zz = z.astype(dtype)
  sq = (
    jnp.sum(zz * zz, -1)[:, None]
    + jnp.sum(all_z.astype(dtype) ** 2, -1)[None, :]
    - 2.0 * _common.similarity(z, all_z)
  )
  rows = _common.global_rows(b, axis_name)
  is_self = rows[:, None] == jnp.arange(all_z.shape[0])[None, :]
  x = jnp.where(is_self, -jnp.inf, -t * jnp.maximum(sq, 0.0))
  # Global log-sum-exp: shift by the global max (a constant for gradients).
  local_max = jax.lax.stop_gradient(jnp.max(x))
  shift = local_max if axis_name is None else jax.lax.pmax(local_max, axis_name)
  total = _common.global_sum(jnp.sum(jnp.exp(x - shift)), axis_name)
  big_b = all_z.shape[0]
  return shift + jnp.log(total) - jnp.log(big_b * (big_b - 1.0))
