r"""The engine every InfoNCE-family objective is written on: masked row statistics of the logits.

An objective is two things. Its *channels*: per-row reductions over a masked set
of columns of the logits :math:`s_{rc} = \langle x_r, y_c \rangle / \tau`,

* `Lse(where, scale)`: :math:`\log \sum_c [\mathrm{where}_{rc}]\, e^{\,\mathrm{scale} \cdot s_{rc}}`;
* `Sum(weight, fn, shift)`: :math:`\sum_c \mathrm{weight}_{rc}\, \mathrm{fn}(s_{rc} - u_r)`,
  fn one of ``"logit"`` (x), ``"count"`` (1), ``"softplus"``, ``"softplus_neg"``
  (softplus(-x)), and :math:`u_r` an optional per-row shift (an input with a gradient);

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

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from big_contrast.losses import _common, ring
from big_contrast.losses._common import AxisName

Meta = Mapping[str, jax.Array]
Mask = Callable[[Meta, Meta], jax.Array]  # (own rows [n], columns [k]) -> [n, k]

# fn and its derivative.
_FNS: dict[str, tuple[Callable, Callable | None]] = {
  "logit": (lambda x: x, lambda x: jnp.ones_like(x)),
  "count": (lambda x: jnp.ones_like(x), None),
  "softplus": (jax.nn.softplus, jax.nn.sigmoid),
  "softplus_neg": (lambda x: jax.nn.softplus(-x), lambda x: -jax.nn.sigmoid(-x)),
}


@dataclasses.dataclass(frozen=True)
class Lse:
  """log Σ_c [where(r, c)] exp(scale · s_rc); -inf for an empty set."""

  where: Mask
  scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class Sum:
  """Σ_c weight(r, c) · fn(s_rc - shift_r); `shift` names an entry of the rows' shifts."""

  weight: Mask
  fn: str = "logit"
  shift: str | None = None

  def __post_init__(self):
    if self.fn not in _FNS:
      raise ValueError(f"Sum fn={self.fn!r}: expected one of {sorted(_FNS)}")


Channel = Lse | Sum


# ------------------------------------------------------------------ one block ---


def _ref(m: jax.Array) -> jax.Array:
  """The shift of a partial log-sum-exp: its max, or 0 where the set is empty."""
  return jnp.where(jnp.isfinite(m), m, 0.0)


def _empty(channels, n: int, dtype):
  return tuple(
    (jnp.full((n,), -jnp.inf, dtype), jnp.zeros((n,), dtype))
    if isinstance(ch, Lse)
    else jnp.zeros((n,), dtype)
    for ch in channels
  )


def _merge(channels, a, b):
  """Combines two partial statistics (max-shifted (max, Σexp) pairs add as log-sum-exps)."""
  out = []
  for ch, x, y in zip(channels, a, b):
    if isinstance(ch, Lse):
      m = jnp.maximum(x[0], y[0])
      ref = _ref(m)
      out.append((m, x[1] * jnp.exp(x[0] - ref) + y[1] * jnp.exp(y[0] - ref)))
    else:
      out.append(x + y)
  return tuple(out)


def _finish(channels, partial):
  return tuple(
    p[0] + jnp.log(p[1]) if isinstance(ch, Lse) else p for ch, p in zip(channels, partial)
  )


def _weight(ch: Sum, own: Meta, other: Meta, valid, dtype) -> jax.Array:
  return jnp.where(valid, ch.weight(own, other), 0).astype(dtype)


def _reduce(channels, logits, own: Meta, other: Meta, shifts, valid):
  """Partial statistics of one [n, k] block; `valid` [k] marks real (unpadded) columns."""
  out = []
  for ch in channels:
    if isinstance(ch, Lse):
      x = jnp.where(ch.where(own, other) & valid, ch.scale * logits, -jnp.inf)
      m = jax.lax.stop_gradient(jnp.max(x, axis=1))
      out.append((m, jnp.sum(jnp.exp(x - _ref(m)[:, None]), axis=1)))
    else:
      w = _weight(ch, own, other, valid, logits.dtype)
      x = logits if ch.shift is None else logits - shifts[ch.shift][:, None]
      out.append(jnp.sum(jnp.where(w != 0, w * _FNS[ch.fn][0](x), 0.0), axis=1))
  return tuple(out)


def _grad(channels, logits, own: Meta, other: Meta, shifts, valid, stats, cts):
  """d(Σ_r ct_r · stat_r)/d logits [n, k] for one block, and the shifts' gradients [n]."""
  g = jnp.zeros_like(logits)
  dshift = {name: jnp.zeros(logits.shape[:1], logits.dtype) for name in shifts}
  for ch, stat, ct in zip(channels, stats, cts):
    if isinstance(ch, Lse):
      mask = ch.where(own, other) & valid
      p = jnp.exp(ch.scale * logits - _ref(stat)[:, None])
      g = g + jnp.where(mask, (ct * ch.scale)[:, None] * p, 0.0)
    elif _FNS[ch.fn][1] is not None:
      w = _weight(ch, own, other, valid, logits.dtype)
      x = logits if ch.shift is None else logits - shifts[ch.shift][:, None]
      term = jnp.where(w != 0, ct[:, None] * w * _FNS[ch.fn][1](x), 0.0)
      g = g + term
      if ch.shift is not None:
        dshift[ch.shift] = dshift[ch.shift] - jnp.sum(term, axis=1)
  return g, dshift


# ---------------------------------------------------------------- all-gather ---


def _dense(rows, cols, inv_t, row_meta, col_meta, row_ch, col_ch, row_shifts, col_shifts, axis):
  gather = functools.partial(_common.gather_rows, axis_name=axis)
  other, other_meta = (rows, row_meta) if cols is None else (cols, col_meta)
  all_other, all_meta = gather(other), jax.tree.map(gather, dict(other_meta))
  valid = jnp.ones((all_other.shape[0],), bool)
  logits = _common.similarity(rows, all_other) * inv_t
  row_out = _finish(row_ch, _reduce(row_ch, logits, row_meta, all_meta, row_shifts, valid))
  if cols is None or not col_ch:
    return row_out, ()
  all_rows, all_row_meta = gather(rows), jax.tree.map(gather, dict(row_meta))
  logits = _common.similarity(cols, all_rows) * inv_t
  valid = jnp.ones((all_rows.shape[0],), bool)
  return row_out, _finish(
    col_ch, _reduce(col_ch, logits, col_meta, all_row_meta, col_shifts, valid)
  )


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
  symmetric: bool


def _side(static: _Static, rows, cols, row_meta, col_meta, row_shifts, col_shifts):
  """(travelling z, meta, shifts, channels) of the ring: the columns, or the rows again."""
  if static.symmetric:
    return rows, row_meta, row_shifts, static.row_channels
  return cols, col_meta, col_shifts, static.col_channels


def _padded(x, meta, shifts, k):
  """Pads the travelling rows to whole sub-blocks; `_valid` marks the real ones."""
  n = x.shape[0]
  rows = -(-n // k) * k
  meta = {key: ring.pad_rows(v, rows) for key, v in meta.items()}
  meta["_valid"] = ring.pad_rows(jnp.ones((n,), bool), rows, False)
  return ring.pad_rows(x, rows), meta, {key: ring.pad_rows(v, rows) for key, v in shifts.items()}


def _ring_forward(
  static: _Static, rows, cols, temperature, row_shifts, col_shifts, row_meta, col_meta
):
  k = static.block_size
  dtype = _common.compute_dtype(rows, *(() if cols is None else (cols,)))
  inv_t = 1.0 / temperature.astype(dtype)
  t_z, t_meta, t_shifts, t_ch = _side(
    static, rows, cols, row_meta, col_meta, row_shifts, col_shifts
  )
  t_z, t_meta, t_shifts = _padded(t_z, t_meta, t_shifts, k)
  n_blocks = t_z.shape[0] // k
  home_valid = jnp.ones((rows.shape[0],), bool)

  def visit(both, home, travelling, acc):
    z, meta, shifts = travelling

    def body(c, carry):
      home, acc = carry
      tz, tm, ts = ring.sub_block((z, meta, shifts), c, k)
      logits = _common.similarity(rows, tz) * inv_t  # [n, k]
      part = _reduce(static.row_channels, logits, row_meta, tm, row_shifts, tm["_valid"])
      home = _merge(static.row_channels, home, part)
      if t_ch:

        def fold(acc):
          block = ring.sub_block(acc, c, k)
          part = _reduce(t_ch, logits.T, tm, row_meta, ts, home_valid)
          return ring.put_sub_block(acc, _merge(t_ch, block, part), c, k)

        acc = _when(both, fold, acc)
      return home, acc

    return jax.lax.fori_loop(0, n_blocks, body, (home, acc))

  home, acc = ring.sweep(
    static.axis_name,
    symmetric=static.symmetric,
    visit=visit,
    home=_empty(static.row_channels, rows.shape[0], dtype),
    travelling=(t_z, t_meta, t_shifts),
    acc=_empty(t_ch, t_z.shape[0], dtype),
  )
  n_t = rows.shape[0] if static.symmetric else cols.shape[0]
  acc = jax.tree.map(lambda x: x[:n_t], acc)
  if static.symmetric:
    out = (_finish(static.row_channels, _merge(static.row_channels, home, acc)), ())
  else:
    out = (_finish(static.row_channels, home), _finish(t_ch, acc))
  residuals = (rows, cols, temperature, row_shifts, col_shifts, row_meta, col_meta, out)
  return out, residuals


def _ring_backward(static: _Static, residuals, cts):
  rows, cols, temperature, row_shifts, col_shifts, row_meta, col_meta, out = residuals
  k = static.block_size
  dtype = _common.compute_dtype(rows, *(() if cols is None else (cols,)))
  inv_t = 1.0 / temperature.astype(dtype)
  row_stats, row_cts = out[0], tuple(jnp.asarray(c, dtype) for c in cts[0])
  if static.symmetric:
    t_stats, t_cts = row_stats, row_cts
  else:
    t_stats, t_cts = out[1], tuple(jnp.asarray(c, dtype) for c in cts[1])
  t_z, t_meta, t_shifts, t_ch = _side(
    static, rows, cols, row_meta, col_meta, row_shifts, col_shifts
  )
  n_t = t_z.shape[0]
  t_z, t_meta, t_shifts = _padded(t_z, t_meta, t_shifts, k)
  pad = lambda x: ring.pad_rows(x, t_z.shape[0])
  t_stats, t_cts = jax.tree.map(pad, (t_stats, t_cts))
  n_blocks = t_z.shape[0] // k
  home_valid = jnp.ones((rows.shape[0],), bool)

  def visit(both, home, travelling, acc):
    z, meta, shifts, stats, cot = travelling

    def body(c, carry):
      (dz, dshift, dinv_t), (tdz, tdshift) = carry
      tz, tm, ts, tst, tct = ring.sub_block((z, meta, shifts, stats, cot), c, k)
      cosine = _common.similarity(rows, tz)
      logits = cosine * inv_t
      g, ds = _grad(
        static.row_channels, logits, row_meta, tm, row_shifts, tm["_valid"], row_stats, row_cts
      )
      dshift = {key: dshift[key] + ds[key] for key in dshift}
      tds = jax.tree.map(jnp.zeros_like, ring.sub_block(tdshift, c, k))
      if t_ch:

        def add_block_rows(g_tds):
          g, _ = g_tds
          gt, tds = _grad(t_ch, logits.T, tm, row_meta, ts, home_valid, tst, tct)
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

  zero_shifts = lambda s, n: {key: jnp.zeros((n,), dtype) for key in s}
  home = (
    jnp.zeros(rows.shape, dtype),
    zero_shifts(row_shifts, rows.shape[0]),
    jnp.zeros((), dtype),
  )
  acc = (jnp.zeros(t_z.shape, dtype), zero_shifts(t_shifts, t_z.shape[0]))
  (drows, drow_shifts, dinv_t), (dt, dt_shifts) = ring.sweep(
    static.axis_name,
    symmetric=static.symmetric,
    visit=visit,
    home=home,
    travelling=(t_z, t_meta, t_shifts, t_stats, t_cts),
    acc=acc,
  )
  dt, dt_shifts = jax.tree.map(lambda x: x[:n_t], (dt, dt_shifts))
  dtemp = (-dinv_t * inv_t * inv_t).astype(temperature.dtype)
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
  axis_name: AxisName = None,
  block_size: int | None = None,
) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
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
    axis_name: None on one device, else the mesh axis (or axes) the batch is split over.
    block_size: None for the all-gather path, k for the blockwise ring path.

  Returns:
    (row statistics, column statistics): one [n] (or [m]) array per channel.
  """
  row_shifts, col_shifts = dict(row_shifts or {}), dict(col_shifts or {})
  row_meta = dict(row_meta)
  col_meta = None if col_meta is None else dict(col_meta)
  if cols is None and col_channels:
    raise ValueError("col_channels need a paired layout (cols); the symmetric one has none.")
  dtype = _common.compute_dtype(rows, *(() if cols is None else (cols,)))
  temperature = jnp.asarray(temperature, dtype)
  if block_size is None:
    return _dense(
      rows,
      cols,
      1.0 / temperature,
      row_meta,
      col_meta,
      tuple(row_channels),
      tuple(col_channels),
      row_shifts,
      col_shifts,
      axis_name,
    )
  static = _Static(
    tuple(axis_name) if isinstance(axis_name, list) else axis_name,
    ring.check_block_size(block_size),
    tuple(row_channels),
    tuple(col_channels),
    cols is None,
  )
  vary = functools.partial(ring.varying, axis_name=axis_name)
  return _ring_stats(
    static,
    rows,
    cols,
    vary(temperature),
    vary(row_shifts),
    None if cols is None else vary(col_shifts),
    row_meta,
    col_meta,
  )
