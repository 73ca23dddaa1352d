"""The device ring: the schedule the blockwise engine (`blockwise.py`) runs on.

Every device keeps its own rows ("home") and passes a block of rows around the
ring with `ppermute` ("travelling"); at each stop `visit` folds the travelling
block into the home rows' accumulators and into accumulators that travel with
the block and return to its owner at the end. Device d at step r holds the
block of device (d - r) mod n.

Two schedules:

* ``paired`` (two sets, e.g. images and texts): every block visits every device,
  n stops, each for "both": the home rows' statistics against the block, and the
  block's rows' statistics against the home rows (the transposed logits).
* ``symmetric`` (one set, e.g. the views of a multi-view batch): the logits
  between devices d and e are the transpose of those between e and d, so each
  device pair is computed once: stop 0 is the own block (home statistics only),
  stops 1 .. (n-1)//2 are "both", and for even n a last stop n/2 has the two
  devices of a pair each compute their own rows. n//2 + 1 stops, about half of
  ``paired``'s.

Both run with ``axis_name=None`` too (a ring of one device).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from big_contrast.losses import _common
from big_contrast.losses._common import AxisName


def check_block_size(block_size) -> int:
  if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
    raise ValueError(
      f"block_size must be a positive int (or None for all-gather), got {block_size!r}."
    )
  return block_size


def shift(tree, axis_name: AxisName, n: int, by: int = 1):
  """Sends every leaf `by` devices along the ring (device i to device i + by).

  Per-row vectors of one dtype and length (ids, masks, statistics) travel
  stacked, as one collective, so a step costs a few permutes however many
  statistics an objective keeps.
  """
  by %= n
  if by == 0:
    return tree
  perm = [(i, (i + by) % n) for i in range(n)]
  leaves, treedef = jax.tree.flatten(tree)
  groups: dict = {}
  for i, x in enumerate(leaves):
    if x.ndim == 1:
      groups.setdefault((x.dtype, x.shape), []).append(i)
    else:
      leaves[i] = jax.lax.ppermute(x, axis_name, perm)
  for members in groups.values():
    if len(members) == 1:
      leaves[members[0]] = jax.lax.ppermute(leaves[members[0]], axis_name, perm)
      continue
    moved = jax.lax.ppermute(jnp.stack([leaves[i] for i in members]), axis_name, perm)
    for row, i in enumerate(members):
      leaves[i] = moved[row]
  return jax.tree.unflatten(treedef, leaves)


def varying(tree, axis_name: AxisName):
  """Loop carries must be per-device from the start (their updates are)."""
  return jax.tree.map(lambda x: _common.to_varying(x, axis_name), tree)


def pad_rows(x: jax.Array, rows: int, value=0) -> jax.Array:
  pad = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
  return jnp.pad(x, pad, constant_values=value)


def sub_block(tree, c, k: int):
  """Rows [c·k, (c+1)·k) of every leaf."""
  return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, c * k, k, axis=0), tree)


def put_sub_block(tree, update, c, k: int):
  return jax.tree.map(
    lambda x, u: jax.lax.dynamic_update_slice_in_dim(x, u, c * k, axis=0), tree, update
  )


Visit = Callable[[object, object, object, object], tuple[object, object]]


def sweep(axis_name: AxisName, *, symmetric: bool, visit: Visit, home, travelling, acc):
  """Runs `visit(both, home, travelling, acc) -> (home, acc)` at every stop of the schedule.

  `both` says whether the block's own statistics (`acc`) take part at this stop:
  always in the paired schedule; in the symmetric one a traced bool, True at
  stops 1 .. (n-1)//2 (one visit body, so one copy of it in the program).
  `travelling` (read-only) and `acc` move together; at the end `acc` is back on
  the block's owner. Returns (home, acc).
  """
  n = _common.axis_size(axis_name)
  stops = n // 2 + 1 if symmetric else n

  def step(r, carry):
    home, travelling, acc = carry
    both = ((r >= 1) & (r <= (n - 1) // 2)) if symmetric else True
    home, acc = visit(both, home, travelling, acc)
    travelling, acc = shift((travelling, acc), axis_name, n)
    return home, travelling, acc

  carry = varying((home, travelling, acc), axis_name)
  home, _, acc = jax.lax.fori_loop(0, stops, step, carry)
  return home, shift(acc, axis_name, n, by=-stops)
