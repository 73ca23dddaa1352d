r"""Channels: the per-row reductions the blockwise engine computes, and their math on one block.

A channel reduces one row of the logits :math:`s_{rc}` over the columns its mask
selects:

* `Lse(where, scale)`: :math:`\log \sum_c [\mathrm{where}_{rc}]\, e^{\,\mathrm{scale} \cdot s_{rc}}`,
  kept as a max-shifted (max, Σexp) pair while blocks arrive;
* `Sum(weight, fn, shift)`: :math:`\sum_c \mathrm{weight}_{rc}\, \mathrm{fn}(s_{rc} - u_r)`,
  fn one of ``"logit"`` (x), ``"count"`` (1), ``"softplus"``, ``"softplus_neg"``
  (softplus(-x)), :math:`u_r` an optional per-row shift.

Masks and weights are functions ``(own rows' metadata [n], columns' metadata [k])
-> [n, k]``. `Then` describes a second pass whose shifts are functions of the
first pass's statistics (DEXML's decoupled softmax: softplus(LSE_neg - s_rp)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

Meta = Mapping[str, jax.Array]
Mask = Callable[[Meta, Meta], jax.Array]

# fn: (value, derivative, the fn whose sum is the derivative's sum)
_FNS: dict[str, tuple[Callable, Callable | None, str | None]] = {
  "logit": (lambda x: x, lambda x: jnp.ones_like(x), "count"),
  "count": (lambda x: jnp.ones_like(x), None, None),
  "softplus": (jax.nn.softplus, jax.nn.sigmoid, "sigmoid"),
  "softplus_neg": (lambda x: jax.nn.softplus(-x), lambda x: -jax.nn.sigmoid(-x), "neg_sigmoid_neg"),
  # Derivative sums only (never differentiated).
  "sigmoid": (jax.nn.sigmoid, None, None),
  "neg_sigmoid_neg": (lambda x: -jax.nn.sigmoid(-x), None, None),
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


@dataclasses.dataclass(frozen=True)
class Then:
  """A second pass over the columns, after the first pass's statistics are complete.

  shifts: first-pass statistics of a row (one [n] array per channel) -> {name: [n]}
    shifts, which the second pass's `Sum` channels name;
  row_channels, col_channels: the second pass's channels.
  """

  shifts: Callable[[tuple], Mapping[str, jax.Array]]
  row_channels: tuple[Channel, ...]
  col_channels: tuple[Channel, ...] = ()


def derivative_sums(channels, internal: frozenset) -> tuple[Channel, ...]:
  """For each `Sum` shifted by one of `internal`, the Sum of its derivative (∂/∂shift = -it)."""
  return tuple(
    Sum(ch.weight, _FNS[ch.fn][2], ch.shift)
    for ch in channels
    if isinstance(ch, Sum) and ch.shift in internal
  )


def shift_cotangents(channels, internal: frozenset, cts, derivatives, n: int, dtype) -> dict:
  """d loss / d internal shift: -Σ_channels ct · Σ_c w fn'(s - u), from the derivative sums."""
  out = {name: jnp.zeros((n,), dtype) for name in internal}
  it = iter(derivatives)
  for ch, ct in zip(channels, cts):
    if isinstance(ch, Sum) and ch.shift in internal:
      out[ch.shift] = out[ch.shift] - ct * next(it)
  return out


# ------------------------------------------------------------------ one block ---


def _ref(m: jax.Array) -> jax.Array:
  """The shift of a partial log-sum-exp: its max, or 0 where the set is empty."""
  return jnp.where(jnp.isfinite(m), m, 0.0)


def empty(channels, n: int, dtype):
  return tuple(
    (jnp.full((n,), -jnp.inf, dtype), jnp.zeros((n,), dtype))
    if isinstance(ch, Lse)
    else jnp.zeros((n,), dtype)
    for ch in channels
  )


def merge(channels, a, b):
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


def _lse(m, total):
  # An empty set is -inf, with a zero (not NaN) gradient through log(0).
  nonempty = total > 0
  return jnp.where(nonempty, m + jnp.log(jnp.where(nonempty, total, 1.0)), -jnp.inf)


def finish(channels, partial):
  return tuple(_lse(*p) if isinstance(ch, Lse) else p for ch, p in zip(channels, partial))


def _weight(ch: Sum, own: Meta, other: Meta, valid, dtype) -> jax.Array:
  return jnp.where(valid, ch.weight(own, other), 0).astype(dtype)


def reduce(channels, logits, own: Meta, other: Meta, shifts, valid):
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


def grad(channels, logits, own: Meta, other: Meta, shifts, valid, stats, cts):
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
