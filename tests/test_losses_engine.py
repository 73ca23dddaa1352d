"""The blockwise engine itself: every channel kind against NumPy, both layouts, both paths."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from test_losses_support import normalized

from big_contrast.losses import blockwise
from big_contrast.losses.blockwise import Lse, Sum, Then

N, M, D = 7, 9, 4


def _group_mask(own, other):
  """An irregular mask; row 0 (group 5) selects nothing: its log-sum-exp is -inf."""
  return ((own["g"][:, None] + other["g"][None, :]) % 3 == 0) & (own["g"][:, None] != 5)


def _weight(own, other):
  return own["w"][:, None] * other["w"][None, :]


CHANNELS = (
  Lse(_group_mask, 0.7),
  Sum(_weight),
  Sum(_group_mask, "count"),
  Sum(_weight, "softplus", "u"),
  Sum(_group_mask, "softplus_neg", "u"),
)


def _numpy_stats(x, y, t, own, other, u):
  s = x @ y.T / t
  mask = ((own["g"][:, None] + other["g"][None, :]) % 3 == 0) & (own["g"][:, None] != 5)
  w = own["w"][:, None] * other["w"][None, :]
  with np.errstate(divide="ignore"):
    lse = np.log(np.sum(np.where(mask, np.exp(0.7 * s), 0.0), axis=1))
  softplus = lambda v: np.logaddexp(0.0, v)
  return (
    lse,
    np.sum(w * s, axis=1),
    mask.sum(1).astype(float),
    np.sum(w * softplus(s - u[:, None]), axis=1),
    np.sum(np.where(mask, softplus(-(s - u[:, None])), 0.0), axis=1),
  )


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  x, y = normalized(rng, N, D), normalized(rng, M, D)
  own = {"g": np.array([5, 1, 2, 3, 4, 0, 1]), "w": rng.random(N)}
  other = {"g": rng.integers(0, 5, M), "w": rng.random(M)}
  return x, y, own, other, rng.normal(size=N)


@pytest.mark.parametrize("block_size", [None, 4])  # 4 divides neither 7 rows nor 9 columns
def test_paired_channels_match_numpy_and_empty_sets_stay_finite(block_size):
  x, y, own, other, u = _inputs()
  want_rows = _numpy_stats(x, y, 0.3, own, other, u)
  want_cols = _numpy_stats(y, x, 0.3, other, own, np.zeros(M))
  with jax.enable_x64(True):
    args = [jnp.asarray(a) for a in (x, y, 0.3, u)]

    def stats(x, y, t, u):
      return blockwise.row_stats(
        x,
        y,
        temperature=t,
        row_meta=own,
        col_meta=other,
        row_channels=CHANNELS,
        col_channels=CHANNELS,
        row_shifts={"u": u},
        col_shifts={"u": jnp.zeros(M)},
        block_size=block_size,
      )

    rows, cols = jax.jit(stats)(*args)
    for got, want in zip(rows + cols, want_rows + want_cols):
      np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isneginf(rows[0][0])  # the empty set

    @jax.jit
    def loss(x, y, t, u):  # every statistic, the empty log-sum-exp left out
      rows, cols = stats(x, y, t, u)
      return jnp.sum(rows[0][1:]) + sum(jnp.sum(r) for r in rows[1:] + cols)

    jax.test_util.check_grads(loss, args, order=1, modes=["rev"], eps=1e-6)
    assert all(np.all(np.isfinite(g)) for g in jax.grad(loss, argnums=(0, 1, 2, 3))(*args))


def _lse_shift(stats):
  return {"v": stats[0]}


@pytest.mark.parametrize("block_size", [None, 3])
def test_symmetric_layout_and_second_pass_match_numpy(block_size):
  """One set against itself; a second pass shifted by the first pass's log-sum-exp."""
  x, _, own, _, _ = _inputs(1)
  own = {"g": np.arange(N) % 4, "w": own["w"]}
  ring_mask = lambda a, b: a["g"][:, None] != b["g"][None, :]
  second = (Sum(_weight, "softplus_neg", "v"),)
  with jax.enable_x64(True):

    def stats(x, t):
      (first, _), (then, _) = blockwise.row_stats(
        x,
        temperature=t,
        row_meta=own,
        row_channels=(Lse(ring_mask),),
        then=Then(_lse_shift, second),
        block_size=block_size,
      )
      return first[0], then[0]

    lse, total = jax.jit(stats)(jnp.asarray(x), 0.5)
    s = x @ x.T / 0.5
    mask = own["g"][:, None] != own["g"][None, :]
    want_lse = np.log(np.sum(np.where(mask, np.exp(s), 0.0), axis=1))
    w = own["w"][:, None] * own["w"][None, :]
    want_total = np.sum(w * np.logaddexp(0.0, want_lse[:, None] - s), axis=1)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-12)
    np.testing.assert_allclose(total, want_total, rtol=1e-12)
    jax.test_util.check_grads(
      jax.jit(lambda x, t: sum(jnp.sum(v) for v in stats(x, t))),
      (jnp.asarray(x), jnp.float64(0.5)),
      order=1,
      modes=["rev"],
    )


def test_engine_rejects_columns_channels_without_columns():
  x, *_ = _inputs()
  with pytest.raises(ValueError, match="paired layout"):
    blockwise.row_stats(
      jnp.asarray(x, jnp.float32),
      temperature=0.1,
      row_meta={"g": jnp.zeros(N)},
      row_channels=CHANNELS[:1],
      col_channels=CHANNELS[:1],
    )
  with pytest.raises(ValueError, match="Sum fn"):
    Sum(_weight, "square")
