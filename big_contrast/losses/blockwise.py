r"""The engine every InfoNCE-family objective is written on: masked row statistics of the logits.

An objective is two things. Its *channels*: per-row reductions over a masked set
of columns of the logits :math:`s_{rc} = \langle x_r, y_c \rangle / \tau`,

* `Lse(where, scale)`: :math:`\log \sum_c [\mathrm{where}_{rc}]\, e^{\,\mathrm{scale} \cdot s_{rc}}`;
* `Sum(weight, fn, shift)`: :math:`\sum_c \mathrm{weight}_{rc}\, \mathrm{fn}(s_{rc} - u_r)`,
  fn one of ``"logit"`` (x), ``"count"`` (1), ``"softplus"``, ``"softplus_neg"``
  (softplus(-x)), and :math:`u_r` an optional per-row shift (an input with a gradient,
  or, with `Then`, a function of a first pass's statistics: two passes forward,
  one backward);

where ``where`` / ``weight`` are functions of the rows' and the columns' metadata
(sample and view ids, labels, ...: dicts of per-row arrays). And its *head*: plain
JAX on those [n] statistics, and on anything local, that gives the loss.

`row_stats` evaluates the channels in one of two ways, with the same values and
gradients:

* ``block_size=None`` (all-gather): every device gathers the columns and holds
  [n, N] logits; plain autodiff;
* ``block_size=k`` (blockwise): column blocks travel the device ring (`ring.py`)
  and are consumed in sub-blocks of k columns, so at most [n, k] logits exist at
  a time; log-sum-exps are accumulated online, max-shifted, in float32 (float64
  for float64 inputs); a `jax.custom_vjp` keeps only [n] statistics and
  recomputes every block in a second ring pass, whose column gradients travel
  with their block and arrive home after the sweep.

Two layouts: *paired* (rows and columns are two sets split alike over the devices,
e.g. images and texts; `col_channels` are the columns' statistics over the rows,
computed from the same blocks) and *symmetric* (``cols=None``: one set against
itself, e.g. all views of a multi-view batch, each device pair computed once).
Knows nothing about models, data or the trainer.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from big_contrast.losses import _common, channels, ring
from big_contrast.losses._common import AxisName
from big_contrast.losses.channels import Channel, Lse, Meta, Sum, Then

__all__ = ["Channel", "Lse", "Sum", "Then", "row_stats"]


# ---------------------------------------------------------------- all-gather ---


def _dense_pass(
  rows, cols, inv_t, row_meta, col_meta, row_ch, col_ch, row_shifts, col_shifts, axis
):
  gather = functools.partial(_common.gather_rows, axis_name=axis)
  other, other_meta = (rows, row_meta) if cols is None else (cols, col_meta)
  all_other, all_meta = gather(other), jax.tree.map(gather, dict(other_meta))
  valid = jnp.ones((all_other.shape[0],), bool)
  logits = _common.similarity(rows, all_other) * inv_t
  part = channels.reduce(row_ch, logits, row_meta, all_meta, row_shifts, valid)
  row_out = channels.finish(row_ch, part)
  if cols is None or not col_ch:
    return row_out, ()
  all_rows, all_row_meta = gather(rows), jax.tree.map(gather, dict(row_meta))
  logits = _common.similarity(cols, all_rows) * inv_t
  valid = jnp.ones((all_rows.shape[0],), bool)
  part = channels.reduce(col_ch, logits, col_meta, all_row_meta, col_shifts, valid)
  return row_out, channels.finish(col_ch, part)


# ------------------------------------------------------------------ the ring ---


def _when(flag, fn, x):
  """fn(x) if flag else x; `flag` a Python bool or a traced scalar (then a `lax.cond`)."""
  if isinstance(flag, bool):
    return fn(x) if flag else x
  return jax.lax.cond(flag, fn, lambda x: x, x)


class _Static(NamedTuple):
  axis_name: Any
  block_size: int
  row_channels: tuple
  col_channels: tuple
  then: Then | None
  symmetric: bool


class _Ring(NamedTuple):
  """What every sweep reads: the home rows and the padded travelling block."""

  static: _Static
  rows: jax.Array  # [n, d] home rows
  row_meta: dict
  t_z: jax.Array  # [P, d] travelling rows, padded to whole sub-blocks
  t_meta: dict  # their metadata, with `_valid`
  n_t: int  # real travelling rows
  inv_t: jax.Array
  dtype: Any


def _prepare(static: _Static, rows, cols, temperature, row_meta, col_meta) -> _Ring:
  k = static.block_size
  dtype = _common.compute_dtype(rows, *(() if cols is None else (cols,)))
  z, meta = (rows, row_meta) if static.symmetric else (cols, col_meta)
  n_t = z.shape[0]
  padded = -(-n_t // k) * k
  t_meta = {key: ring.pad_rows(v, padded) for key, v in meta.items()}
  t_meta["_valid"] = ring.pad_rows(jnp.ones((n_t,), bool), padded, False)
  inv_t = 1.0 / temperature.astype(dtype)
  return _Ring(static, rows, row_meta, ring.pad_rows(z, padded), t_meta, n_t, inv_t, dtype)


def _pad(ctx: _Ring, tree):
  return jax.tree.map(lambda x: ring.pad_rows(x, ctx.t_z.shape[0]), tree)


def _forward_sweep(ctx: _Ring, row_ch, t_ch, row_shifts, t_shifts):
  """Statistics of the home rows (and of the travelling block's rows) over all columns."""
  k, rows, row_meta = ctx.static.block_size, ctx.rows, ctx.row_meta
  home_valid = jnp.ones((rows.shape[0],), bool)
  n_blocks = ctx.t_z.shape[0] // k

  def visit(both, home, travelling, acc):
    z, meta, shifts = travelling

    def body(c, carry):
      home, acc = carry
      tz, tm, ts = ring.sub_block((z, meta, shifts), c, k)
      logits = _common.similarity(rows, tz) * ctx.inv_t  # [n, k]
      part = channels.reduce(row_ch, logits, row_meta, tm, row_shifts, tm["_valid"])
      home = channels.merge(row_ch, home, part)
      if t_ch:

        def fold(acc):
          block = ring.sub_block(acc, c, k)
          part = channels.reduce(t_ch, logits.T, tm, row_meta, ts, home_valid)
          return ring.put_sub_block(acc, channels.merge(t_ch, block, part), c, k)

        acc = _when(both, fold, acc)
      return home, acc

    return jax.lax.fori_loop(0, n_blocks, body, (home, acc))

  home, acc = ring.sweep(
    ctx.static.axis_name,
    symmetric=ctx.static.symmetric,
    visit=visit,
    home=channels.empty(row_ch, rows.shape[0], ctx.dtype),
    travelling=(ctx.t_z, ctx.t_meta, _pad(ctx, t_shifts)),
    acc=channels.empty(t_ch, ctx.t_z.shape[0], ctx.dtype),
  )
  acc = jax.tree.map(lambda x: x[: ctx.n_t], acc)
  if ctx.static.symmetric:
    return channels.finish(row_ch, channels.merge(row_ch, home, acc)), ()
  return channels.finish(row_ch, home), channels.finish(t_ch, acc)


def _backward_sweep(
  ctx: _Ring, row_ch, t_ch, row_shifts, t_shifts, row_stats, row_cts, t_stats, t_cts
):
  """(d rows, d row shifts, d travelling rows, d their shifts, d 1/τ) for the cotangents."""
  k, rows, row_meta, inv_t, dtype = (
    ctx.static.block_size,
    ctx.rows,
    ctx.row_meta,
    ctx.inv_t,
    ctx.dtype,
  )
  home_valid = jnp.ones((rows.shape[0],), bool)
  n_blocks = ctx.t_z.shape[0] // k

  def visit(both, home, travelling, acc):
    z, meta, shifts, stats, cot = travelling

    def body(c, carry):
      (dz, dshift, dinv_t), (tdz, tdshift) = carry
      tz, tm, ts, tst, tct = ring.sub_block((z, meta, shifts, stats, cot), c, k)
      cosine = _common.similarity(rows, tz)
      logits = cosine * inv_t
      g, ds = channels.grad(
        row_ch, logits, row_meta, tm, row_shifts, tm["_valid"], row_stats, row_cts
      )
      dshift = {key: dshift[key] + ds[key] for key in dshift}
      tds = jax.tree.map(jnp.zeros_like, ring.sub_block(tdshift, c, k))
      if t_ch:

        def add_block_rows(g_tds):
          g, _ = g_tds
          gt, tds = channels.grad(t_ch, logits.T, tm, row_meta, ts, home_valid, tst, tct)
          return g + gt.T, tds

        g, tds = _when(both, add_block_rows, (g, tds))
      g = jnp.where(tm["_valid"][None, :], g, 0.0)
      dz = dz + _common.similarity(g.astype(tz.dtype), tz.T) * inv_t
      block_dz = _common.similarity(g.T.astype(rows.dtype), rows.T) * inv_t
      tdz = ring.put_sub_block(tdz, ring.sub_block(tdz, c, k) + block_dz, c, k)
      tdshift = ring.put_sub_block(
        tdshift, jax.tree.map(jnp.add, ring.sub_block(tdshift, c, k), tds), c, k
      )
      return (dz, dshift, dinv_t + jnp.sum(g * cosine)), (tdz, tdshift)

    return jax.lax.fori_loop(0, n_blocks, body, (home, acc))

  zeros = lambda names, n: {key: jnp.zeros((n,), dtype) for key in names}
  p = ctx.t_z.shape[0]
  home = (jnp.zeros(rows.shape, dtype), zeros(row_shifts, rows.shape[0]), jnp.zeros((), dtype))
  (drows, drow_shifts, dinv_t), (dt, dt_shifts) = ring.sweep(
    ctx.static.axis_name,
    symmetric=ctx.static.symmetric,
    visit=visit,
    home=home,
    travelling=(ctx.t_z, ctx.t_meta, _pad(ctx, t_shifts), _pad(ctx, t_stats), _pad(ctx, t_cts)),
    acc=(jnp.zeros(ctx.t_z.shape, dtype), zeros(t_shifts, p)),
  )
  dt, dt_shifts = jax.tree.map(lambda x: x[: ctx.n_t], (dt, dt_shifts))
  return drows, drow_shifts, dt, dt_shifts, dinv_t


def _shift_names(then: Then | None) -> frozenset:
  """The shifts a second pass's channels name (their derivative sums are kept)."""
  if then is None:
    return frozenset()
  chans = then.row_channels + then.col_channels
  return frozenset(ch.shift for ch in chans if isinstance(ch, Sum) and ch.shift is not None)


def _ring_forward(
  static: _Static, rows, cols, temperature, row_shifts, col_shifts, row_meta, col_meta
):
  ctx = _prepare(static, rows, cols, temperature, row_meta, col_meta)
  sym, then = static.symmetric, static.then
  t_ch = static.row_channels if sym else static.col_channels
  t_shifts = row_shifts if sym else col_shifts
  first = _forward_sweep(ctx, static.row_channels, t_ch, row_shifts, t_shifts)
  second, internal = ((), ()), ({}, {})
  if then is not None:
    names = _shift_names(then)
    row_ch2 = then.row_channels + channels.derivative_sums(then.row_channels, names)
    col_ch2 = then.col_channels + channels.derivative_sums(then.col_channels, names)
    u_rows = dict(then.shifts(first[0]))
    u_t = u_rows if sym else (dict(then.shifts(first[1])) if col_ch2 else {})
    internal = (u_rows, u_t)
    t_ch2 = row_ch2 if sym else col_ch2
    second = _forward_sweep(ctx, row_ch2, t_ch2, {**row_shifts, **u_rows}, {**t_shifts, **u_t})
  n_rows2 = len(then.row_channels) if then else 0
  n_cols2 = len(then.col_channels) if then and not sym else 0
  out = (first, (second[0][:n_rows2], second[1][:n_cols2]))
  inputs = (rows, cols, temperature, row_shifts, col_shifts, row_meta, col_meta)
  return out, (inputs, first, second, internal)


class _Side(NamedTuple):
  """One side's channels, final statistics, their cotangents and shifts, for the backward sweep."""

  channels: tuple
  stats: tuple
  cts: tuple
  shifts: dict


def _backward_side(then, chans, stats, cts, shifts, chans2, second, cts2, u, n, dtype) -> _Side:
  """Folds a second pass into one side: its shifts' cotangents, from the derivative sums
  taken in that pass, flow through `then.shifts` into the first pass's statistics, so a
  single backward sweep differentiates both passes."""
  if then is None or not chans2:
    return _Side(chans, stats, cts, shifts)
  n2 = len(chans2)
  du = channels.shift_cotangents(chans2, _shift_names(then), cts2, second[n2:], n, dtype)
  _, pull = jax.vjp(lambda s: dict(then.shifts(s)), stats)
  (extra,) = pull({key: du[key] for key in u})
  cts = tuple(a + b for a, b in zip(cts, extra))
  return _Side(chans + chans2, stats + second[:n2], cts + cts2, {**shifts, **u})


def _ring_backward(static: _Static, saved, cts):
  inputs, first, second, internal = saved
  rows, cols, temperature, row_shifts, col_shifts, row_meta, col_meta = inputs
  ctx = _prepare(static, rows, cols, temperature, row_meta, col_meta)
  as_dtype = lambda tree: tuple(jnp.asarray(c, ctx.dtype) for c in tree)
  (g_rows, g_cols), (g_rows2, g_cols2) = (tuple(map(as_dtype, pair)) for pair in cts)
  then = static.then
  rows_side = _backward_side(
    then,
    static.row_channels,
    first[0],
    g_rows,
    row_shifts,
    then.row_channels if then else (),
    second[0] if then else (),
    g_rows2,
    internal[0],
    rows.shape[0],
    ctx.dtype,
  )
  if static.symmetric:
    t_side = rows_side
  else:
    t_side = _backward_side(
      then,
      static.col_channels,
      first[1],
      g_cols,
      col_shifts,
      then.col_channels if then else (),
      second[1] if then else (),
      g_cols2,
      internal[1],
      ctx.n_t,
      ctx.dtype,
    )
  drows, drow_shifts, dt, dt_shifts, dinv_t = _backward_sweep(
    ctx,
    rows_side.channels,
    t_side.channels,
    rows_side.shifts,
    t_side.shifts,
    rows_side.stats,
    rows_side.cts,
    t_side.stats,
    t_side.cts,
  )
  t_shifts = row_shifts if static.symmetric else col_shifts
  drow_shifts = {key: drow_shifts[key] for key in row_shifts}  # the inputs', not the internal
  dt_shifts = {key: dt_shifts[key] for key in t_shifts}
  dtemp = (-dinv_t * ctx.inv_t * ctx.inv_t).astype(temperature.dtype)
  cast = lambda tree, like: jax.tree.map(lambda g, x: g.astype(x.dtype), tree, like)
  if static.symmetric:
    drows = drows + dt
    drow_shifts = {key: drow_shifts[key] + dt_shifts[key] for key in drow_shifts}
    return cast(drows, rows), None, dtemp, cast(drow_shifts, row_shifts), None, None, None
  return (
    cast(drows, rows),
    cast(dt, cols),
    dtemp,
    cast(drow_shifts, row_shifts),
    cast(dt_shifts, col_shifts),
    None,
    None,
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ring_stats(static, rows, cols, temperature, row_shifts, col_shifts, row_meta, col_meta):
  return _ring_forward(static, rows, cols, temperature, row_shifts, col_shifts, row_meta, col_meta)[
    0
  ]


_ring_stats.defvjp(_ring_forward, _ring_backward)


# ------------------------------------------------------------------- the API ---


def row_stats(
  rows: jax.Array,
  cols: jax.Array | None = None,
  *,
  temperature: jax.typing.ArrayLike,
  row_meta: Meta,
  col_meta: Meta | None = None,
  row_channels: tuple[Channel, ...],
  col_channels: tuple[Channel, ...] = (),
  row_shifts: Mapping[str, jax.Array] | None = None,
  col_shifts: Mapping[str, jax.Array] | None = None,
  then: Then | None = None,
  axis_name: AxisName = None,
  block_size: int | None = None,
):
  """The channels' [n] statistics of this device's rows (and [m] of its columns).

  Args:
    rows: [n, d] this device's rows (L2-normalised embeddings).
    cols: [m, d] this device's columns (paired layout), or None: the rows are
      their own columns (symmetric layout; `col_channels` must be empty).
    temperature: scalar; logits are dot products / temperature.
    row_meta, col_meta: dicts of [n, ...] / [m, ...] arrays the masks read.
    row_channels: the rows' statistics over all (global) columns.
    col_channels: the columns' statistics over all (global) rows (paired only).
    row_shifts, col_shifts: per-row shifts [n] / [m] that `Sum` channels name.
    then: an optional second pass, whose shifts are functions of this pass's
      statistics (`channels.Then`).
    axis_name: None on one device, else the mesh axis (or axes) the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.

  Returns:
    (row statistics, column statistics), one [n] (or [m]) array per channel; with
    `then`, ((row, column statistics), (the second pass's row, column statistics)).
  """
  row_shifts, col_shifts = dict(row_shifts or {}), dict(col_shifts or {})
  row_meta = dict(row_meta)
  col_meta = None if col_meta is None else dict(col_meta)
  if cols is None and (col_channels or (then is not None and then.col_channels)):
    raise ValueError("col_channels need a paired layout (cols); the symmetric one has none.")
  dtype = _common.compute_dtype(rows, *(() if cols is None else (cols,)))
  temperature = jnp.asarray(temperature, dtype)
  if block_size is None:
    args = (rows, cols, 1.0 / temperature, row_meta, col_meta)
    first = _dense_pass(
      *args, tuple(row_channels), tuple(col_channels), row_shifts, col_shifts, axis_name
    )
    if then is None:
      return first
    u_rows = dict(then.shifts(first[0]))
    u_cols = dict(then.shifts(first[1])) if then.col_channels else {}
    second = _dense_pass(
      *args,
      tuple(then.row_channels),
      tuple(then.col_channels),
      {**row_shifts, **u_rows},
      {**col_shifts, **u_cols},
      axis_name,
    )
    return first, second
  static = _Static(
    tuple(axis_name) if isinstance(axis_name, list) else axis_name,
    ring.check_block_size(block_size),
    tuple(row_channels),
    tuple(col_channels),
    then,
    cols is None,
  )
  vary = functools.partial(ring.varying, axis_name=axis_name)
  out = _ring_stats(
    static,
    rows,
    cols,
    vary(temperature),
    vary(row_shifts),
    None if cols is None else vary(col_shifts),
    row_meta,
    col_meta,
  )
  return out if then is not None else out[0]
