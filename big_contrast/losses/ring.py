"""Blockwise ring InfoNCE / sigmoid loss: memory linear in the batch.

The all-gather path holds [b, B] logits per device (b local, B global rows),
quadratic in B overall. Here each device keeps its image rows and passes text
blocks around the device ring with `ppermute`; against each visiting block it
loops over sub-blocks of ``block_size = k`` columns, so at most [b, k] logits
exist at a time; a ``k`` that does not divide ``b`` pads the last sub-block,
whose columns are masked with ``jnp.where(..., -inf)``. CLIP's two softmax
directions are accumulated online as max-shifted log-sum-exps in float32 (or
float64 for float64 inputs): row statistics stay home, column statistics
travel with their text block and are home again after a full turn.

The backward pass (`jax.custom_vjp`) stores only per-row statistics ([b]
vectors) and recomputes every block in a second ring pass; text gradients
travel with their block and arrive home after a full turn. Both loops run with
``axis_name=None`` too (a ring of one device).

Layout of one ring step on device d (n devices, text sent to d+1):
``step r`` sees the text of device (d - r) mod n; after n shifts it is home.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from big_contrast.losses import _common
from big_contrast.losses._common import AxisName


def _shift(tree, axis_name: AxisName, n: int):
  """Sends every leaf to the next device on the ring."""
  if n == 1:
    return tree
  perm = [(i, (i + 1) % n) for i in range(n)]
  return jax.tree.map(lambda x: jax.lax.ppermute(x, axis_name, perm), tree)


def _varying(tree, axis_name: AxisName):
  """Loop carries must be per-device from the start (their updates are)."""
  return jax.tree.map(lambda x: _common.to_varying(x, axis_name), tree)


def _pad_rows(x: jax.Array, rows: int, value=0) -> jax.Array:
  pad = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
  return jnp.pad(x, pad, constant_values=value)


def _check_block_size(block_size) -> int:
  if not isinstance(block_size, int) or block_size < 1:
    raise ValueError(f"block_size must be a positive int, got {block_size!r}.")
  return block_size


def _ring(n: int, visit, home, travelling, axis_name: AxisName, return_home):
  """Runs `visit(home, travelling) -> (home, travelling)` once per device.

  After the last visit only the leaves named by `return_home(travelling)`
  make the final hop back to their owner.
  """

  def step(_, carry):
    home, travelling = visit(*carry)
    return home, _shift(travelling, axis_name, n)

  home, travelling = _varying((home, travelling), axis_name)
  home, travelling = jax.lax.fori_loop(0, n - 1, step, (home, travelling))
  home, travelling = visit(home, travelling)
  return home, _shift(return_home(travelling), axis_name, n)


def _sub_block(x: jax.Array, c, k: int) -> jax.Array:
  return jax.lax.dynamic_slice_in_dim(x, c * k, k, axis=0)


def _put_sub_block(x: jax.Array, update: jax.Array, c, k: int) -> jax.Array:
  return jax.lax.dynamic_update_slice_in_dim(x, update, c * k, axis=0)


# ----------------------------------------------------------------------------
# CLIP
# ----------------------------------------------------------------------------


class _Lse(NamedTuple):
  """Online log-sum-exp with target statistics, one entry per row/column."""

  max: jax.Array  # running max of the logits
  sum: jax.Array  # Σ exp(logit - max)
  pos: jax.Array  # Σ logit over positives
  count: jax.Array  # number of positives

  @classmethod
  def empty(cls, n: int, dtype) -> _Lse:
    return cls(
      jnp.full((n,), -jnp.inf, dtype),
      jnp.zeros((n,), dtype),
      jnp.zeros((n,), dtype),
      jnp.zeros((n,), dtype),
    )

  def update(self, logits: jax.Array, match: jax.Array, axis: int) -> _Lse:
    """Folds in [.., ..] logits (-inf where masked) reduced along `axis`."""
    new_max = jnp.maximum(self.max, jnp.max(logits, axis=axis))
    shifted = jnp.exp(logits - jnp.expand_dims(new_max, axis))
    total = self.sum * jnp.exp(self.max - new_max) + jnp.sum(shifted, axis=axis)
    pos = self.pos + jnp.sum(jnp.where(match, logits, 0.0), axis=axis)
    count = self.count + jnp.sum(match, axis=axis, dtype=self.count.dtype)
    return _Lse(new_max, total, pos, count)

  def lse(self) -> jax.Array:
    return self.max + jnp.log(self.sum)

  def loss(self) -> jax.Array:
    return self.lse() - self.pos / jnp.maximum(self.count, 1)


def _clip_forward(axis_name, k, zimg, ztxt, ids, temperature):
  b, _ = zimg.shape
  n = _common.axis_size(axis_name)
  n_blocks = -(-b // k)
  padded = n_blocks * k
  dtype = _common.compute_dtype(zimg, ztxt)
  inv_t = 1.0 / temperature.astype(dtype)
  valid = jnp.arange(padded) < b

  def visit(rows: _Lse, travelling):
    txt, txt_ids, cols = travelling

    def body(c, carry):
      rows, cols = carry
      t, t_ids, t_valid = (
        _sub_block(txt, c, k),
        _sub_block(txt_ids, c, k),
        _sub_block(valid, c, k),
      )
      logits = _common.similarity(zimg, t) * inv_t  # [b, k]
      match = (ids[:, None] == t_ids[None, :]) & t_valid[None, :]
      rows = rows.update(jnp.where(t_valid[None, :], logits, -jnp.inf), match, axis=1)
      block_cols = _Lse(*(_sub_block(x, c, k) for x in cols)).update(logits, match, axis=0)
      cols = _Lse(*(_put_sub_block(x, y, c, k) for x, y in zip(cols, block_cols)))
      return rows, cols

    rows, cols = jax.lax.fori_loop(0, n_blocks, body, (rows, cols))
    return rows, (txt, txt_ids, cols)

  travelling = (_pad_rows(ztxt, padded), _pad_rows(ids, padded, -1), _Lse.empty(padded, dtype))
  rows, cols = _ring(
    n, visit, _Lse.empty(b, dtype), travelling, axis_name, return_home=lambda t: t[2]
  )
  cols = _Lse(*(x[:b] for x in cols))
  local = jnp.sum(rows.loss()) + jnp.sum(cols.loss())
  residuals = (zimg, ztxt, ids, temperature, rows.lse(), rows.count, cols.lse(), cols.count)
  return local, residuals


def _clip_backward(axis_name, k, residuals, g):
  zimg, ztxt, ids, temperature, row_lse, row_count, col_lse, col_count = residuals
  b, d = zimg.shape
  n = _common.axis_size(axis_name)
  n_blocks = -(-b // k)
  padded = n_blocks * k
  dtype = _common.compute_dtype(zimg, ztxt)
  inv_t = 1.0 / temperature.astype(dtype)
  valid = jnp.arange(padded) < b
  row_inv_count = 1.0 / jnp.maximum(row_count, 1)

  def visit(home, travelling):
    dimg, dinv_t = home
    txt, txt_ids, lse, count, g_col, dtxt = travelling

    def body(c, carry):
      dimg, dinv_t, dtxt = carry
      t, t_ids, t_valid = (
        _sub_block(txt, c, k),
        _sub_block(txt_ids, c, k),
        _sub_block(valid, c, k),
      )
      cosine = _common.similarity(zimg, t)
      logits = cosine * inv_t
      match = (ids[:, None] == t_ids[None, :]) & t_valid[None, :]
      p_row = jnp.exp(logits - row_lse[:, None])
      p_col = jnp.exp(logits - _sub_block(lse, c, k)[None, :])
      col_inv_count = 1.0 / jnp.maximum(_sub_block(count, c, k), 1)
      # dL/dlogits: softmax minus target, for the row and the column softmax.
      grad = g * (p_row - jnp.where(match, row_inv_count[:, None], 0.0)) + g_col * (
        p_col - jnp.where(match, col_inv_count[None, :], 0.0)
      )
      grad = jnp.where(t_valid[None, :], grad, 0.0)
      dimg = dimg + _common.similarity(grad.astype(t.dtype), t.T) * inv_t
      dt = _common.similarity(grad.T.astype(zimg.dtype), zimg.T) * inv_t
      dtxt = _put_sub_block(dtxt, _sub_block(dtxt, c, k) + dt, c, k)
      return dimg, dinv_t + jnp.sum(grad * cosine), dtxt

    dimg, dinv_t, dtxt = jax.lax.fori_loop(0, n_blocks, body, (dimg, dinv_t, dtxt))
    return (dimg, dinv_t), (txt, txt_ids, lse, count, g_col, dtxt)

  travelling = (
    _pad_rows(ztxt, padded),
    _pad_rows(ids, padded, -1),
    _pad_rows(col_lse, padded),
    _pad_rows(col_count, padded),
    g,
    jnp.zeros((padded, d), dtype),
  )
  home = (jnp.zeros((b, d), dtype), jnp.zeros((), dtype))
  (dimg, dinv_t), dtxt = _ring(n, visit, home, travelling, axis_name, return_home=lambda t: t[5])
  dtemp = -dinv_t * inv_t * inv_t
  return (
    dimg.astype(zimg.dtype),
    dtxt[:b].astype(ztxt.dtype),
    None,
    dtemp.astype(temperature.dtype),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _ring_clip_local(axis_name, k, zimg, ztxt, ids, temperature):
  return _clip_forward(axis_name, k, zimg, ztxt, ids, temperature)[0]


_ring_clip_local.defvjp(_clip_forward, _clip_backward)


def ring_clip_loss(
  zimg: jax.Array,
  ztxt: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  axis_name: AxisName = None,
  block_size: int,
  pair_ids: jax.Array | None = None,
) -> jax.Array:
  """`clip_loss` computed blockwise around the device ring; same value and gradients.

  Args:
    zimg, ztxt: [b, d] L2-normalised local rows.
    temperature: scalar (possibly learned).
    axis_name: None on one device, else the mesh axis the batch is split over.
    block_size: columns per sub-block; any positive int (need not divide b).
    pair_ids: optional [b] ints; equal ids are mutual positives.
  """
  k = _check_block_size(block_size)
  b = zimg.shape[0]
  ids = _common.global_rows(b, axis_name) if pair_ids is None else jnp.asarray(pair_ids, jnp.int32)
  temperature = _common.to_varying(
    jnp.asarray(temperature, _common.compute_dtype(zimg, ztxt)), axis_name
  )
  local = _ring_clip_local(axis_name, k, zimg, ztxt, ids, temperature)
  return _common.global_sum(local, axis_name) / (2 * b * _common.axis_size(axis_name))


# ----------------------------------------------------------------------------
# SigLIP
# ----------------------------------------------------------------------------


def _siglip_forward(axis_name, k, zimg, ztxt, temperature, bias):
  b, _ = zimg.shape
  n = _common.axis_size(axis_name)
  n_blocks = -(-b // k)
  padded = n_blocks * k
  dtype = _common.compute_dtype(zimg, ztxt)
  inv_t = 1.0 / temperature.astype(dtype)
  bias_ = bias.astype(dtype)
  valid = jnp.arange(padded) < b
  ids = _common.global_rows(b, axis_name)

  def visit(total, travelling):
    txt, txt_ids = travelling

    def body(c, total):
      t, t_ids, t_valid = (
        _sub_block(txt, c, k),
        _sub_block(txt_ids, c, k),
        _sub_block(valid, c, k),
      )
      logits = _common.similarity(zimg, t) * inv_t + bias_
      signed = jnp.where(ids[:, None] == t_ids[None, :], logits, -logits)
      terms = jnp.where(t_valid[None, :], -jax.nn.log_sigmoid(signed), 0.0)
      return total + jnp.sum(terms)

    return jax.lax.fori_loop(0, n_blocks, body, total), travelling

  travelling = (_pad_rows(ztxt, padded), _pad_rows(ids, padded, -1))
  local, _ = _ring(n, visit, jnp.zeros((), dtype), travelling, axis_name, return_home=lambda t: ())
  return local, (zimg, ztxt, temperature, bias)


def _siglip_backward(axis_name, k, residuals, g):
  zimg, ztxt, temperature, bias = residuals
  b, d = zimg.shape
  n = _common.axis_size(axis_name)
  n_blocks = -(-b // k)
  padded = n_blocks * k
  dtype = _common.compute_dtype(zimg, ztxt)
  inv_t = 1.0 / temperature.astype(dtype)
  bias_ = bias.astype(dtype)
  valid = jnp.arange(padded) < b
  ids = _common.global_rows(b, axis_name)

  def visit(home, travelling):
    txt, txt_ids, dtxt = travelling

    def body(c, carry):
      dimg, dinv_t, dbias, dtxt = carry
      t, t_ids, t_valid = (
        _sub_block(txt, c, k),
        _sub_block(txt_ids, c, k),
        _sub_block(valid, c, k),
      )
      cosine = _common.similarity(zimg, t)
      logits = cosine * inv_t + bias_
      positive = (ids[:, None] == t_ids[None, :]).astype(dtype)
      # d/dz -log σ(y z) = σ(z) - [y = +1]
      grad = jnp.where(t_valid[None, :], g * (jax.nn.sigmoid(logits) - positive), 0.0)
      dimg = dimg + _common.similarity(grad.astype(t.dtype), t.T) * inv_t
      dt = _common.similarity(grad.T.astype(zimg.dtype), zimg.T) * inv_t
      dtxt = _put_sub_block(dtxt, _sub_block(dtxt, c, k) + dt, c, k)
      return dimg, dinv_t + jnp.sum(grad * cosine), dbias + jnp.sum(grad), dtxt

    dimg, dinv_t, dbias, dtxt = jax.lax.fori_loop(0, n_blocks, body, (*home, dtxt))
    return (dimg, dinv_t, dbias), (txt, txt_ids, dtxt)

  travelling = (_pad_rows(ztxt, padded), _pad_rows(ids, padded, -1), jnp.zeros((padded, d), dtype))
  zero = jnp.zeros((), dtype)
  (dimg, dinv_t, dbias), dtxt = _ring(
    n,
    visit,
    (jnp.zeros((b, d), dtype), zero, zero),
    travelling,
    axis_name,
    return_home=lambda t: t[2],
  )
  dtemp = -dinv_t * inv_t * inv_t
  return (
    dimg.astype(zimg.dtype),
    dtxt[:b].astype(ztxt.dtype),
    dtemp.astype(temperature.dtype),
    dbias.astype(bias.dtype),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _ring_siglip_local(axis_name, k, zimg, ztxt, temperature, bias):
  return _siglip_forward(axis_name, k, zimg, ztxt, temperature, bias)[0]


_ring_siglip_local.defvjp(_siglip_forward, _siglip_backward)


def ring_siglip_loss(
  zimg: jax.Array,
  ztxt: jax.Array,
  *,
  temperature: jax.typing.ArrayLike,
  bias: jax.typing.ArrayLike,
  axis_name: AxisName = None,
  block_size: int,
) -> jax.Array:
  """`siglip_loss` computed blockwise around the device ring; same value and gradients."""
  k = _check_block_size(block_size)
  dtype = _common.compute_dtype(zimg, ztxt)
  temperature = _common.to_varying(jnp.asarray(temperature, dtype), axis_name)
  bias = _common.to_varying(jnp.asarray(bias, dtype), axis_name)
  local = _ring_siglip_local(axis_name, k, zimg, ztxt, temperature, bias)
  b = zimg.shape[0]
  return _common.global_sum(local, axis_name) / (b * _common.axis_size(axis_name))
