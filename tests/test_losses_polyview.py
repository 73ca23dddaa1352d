"""Poly-view, MV-InfoNCE and MV-DHEL vs float64 ports of their sources."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_losses_support import GLOBAL_B, normalized

from big_contrast import losses

D = 8


# --- references (run in float64) ----------------------------------------------------


def _pairwise_cross_entropies(z, temperature):
  """[b, M(α), M(β)] ℓ_iαβ as the poly-view pseudo-code computes them (PVCLoss): for anchor α
  and target β a softmax over every view γ of every sample j, the anchor's own sample's views
  other than β masked out (`get_mask`), the target (j, γ) = (i, β). The loops over α and β
  are vectorised; diagonal (β = α) entries are unused."""
  b, m, _ = z.shape
  scores = jnp.einsum("imd,jnd->imnj", z, z) / temperature  # [b(i), m(α), m(γ), b(j)]
  mask = jnp.eye(b, dtype=bool)[:, None, None, :] & ~jnp.eye(m, dtype=bool)[None, :, :, None]
  logits = jnp.where(
    mask[:, None], -jnp.inf, scores[:, :, None]
  )  # [i, α, β, γ, j]; mask[i, β, γ, j]
  log_p = jax.nn.log_softmax(logits.reshape(b, m, m, m * b), axis=-1).reshape(b, m, m, m, b)
  target = jnp.diagonal(jnp.diagonal(log_p, axis1=2, axis2=3), axis1=0, axis2=2)  # [α, β, i]
  return -jnp.transpose(target, (2, 0, 1))


def polyview_equations_reference(z, temperature, variant):
  """Shidani et al. (2024): Geometric PVC = mean_β ℓ, Arithmetic PVC = -log mean_β e^{-ℓ}."""
  m = z.shape[1]
  ell = _pairwise_cross_entropies(z, temperature)
  off = ~jnp.eye(m, dtype=bool)[None]
  if variant == "geometric":
    per = jnp.sum(jnp.where(off, ell, 0.0), axis=-1) / (m - 1)
  else:
    per = -jnp.log(jnp.sum(jnp.where(off, jnp.exp(-ell), 0.0), axis=-1) / (m - 1))
  return jnp.mean(per)


def polyview_pseudocode_reference(z, temperature):
  """The paper's pseudo-code for 'arithmetic' as PVCLoss has it, per sample:
  logsumexp_β ℓ_iαβ - log k (k the batch size)."""
  b, m, _ = z.shape
  ell = _pairwise_cross_entropies(z, temperature)
  off = ~jnp.eye(m, dtype=bool)[None]
  per = jax.nn.logsumexp(jnp.where(off, ell, -jnp.inf), axis=-1) - jnp.log(b)
  return jnp.mean(per)


def polyview_numpy_loop(z, temperature, variant):
  """Value only, NumPy: ℓ_αβ = log(e^{s_αβ} + S_N) - s_αβ, one anchor view at a time."""
  b, m, _ = z.shape
  flat = z.reshape(b * m, -1)
  s = flat @ flat.T / temperature
  sample = np.repeat(np.arange(b), m)
  total = 0.0
  for a in range(b * m):
    s_n = np.exp(s[a, sample != sample[a]]).sum()
    sib = [c for c in range(b * m) if sample[c] == sample[a] and c != a]
    ell = np.array([np.log(np.exp(s[a, c]) + s_n) - s[a, c] for c in sib])
    total += ell.mean() if variant == "geometric" else -np.log(np.mean(np.exp(-ell)))
  return total / (b * m)


def sufficient_statistics_reference(z, temperature):
  b, m, _ = z.shape
  rest = (z.sum(axis=1, keepdims=True) - z) / (m - 1)  # [b, m, d]
  total = 0.0
  for alpha in range(m):
    logits = z[:, alpha] @ rest[:, alpha].T / temperature  # [b(i), b(j)]
    total = total + jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diag(logits))
  return total / m


def _view_major(z):
  """[b, M, d] -> [M·b, d] in the repository's order (all samples of view 0, then view 1, ...)."""
  return jnp.concatenate([z[:, v] for v in range(z.shape[1])], axis=0)


def mv_infonce_reference(z, temperature):
  """pakoromilas/Multi-View-CL models/losses.py `MVINFONCE.forward` (one process)."""
  n_real, k_views = z.shape[0], z.shape[1]
  flat = _view_major(z)
  n = flat.shape[0]
  neg_sim = jnp.exp(flat @ flat.T / temperature)
  # masked_select(off-diagonal).view(n, n-1), split into the views' row blocks, cat, sum:
  neg_sim = jnp.sum(jnp.where(jnp.eye(n, dtype=bool), 0.0, neg_sim), axis=1)  # [n]
  neg_sim = neg_sim.reshape(k_views, n_real).sum(axis=0)
  views = jnp.stack([flat[i * n_real : (i + 1) * n_real] for i in range(k_views)])
  iu = np.triu_indices(k_views, k=1)
  pos = jnp.exp(jnp.sum(views[iu[0]] * views[iu[1]], axis=-1) / temperature)  # [pairs, n]
  pos_sim = 2 * pos.sum(axis=0)
  return -jnp.mean(jnp.log(pos_sim / neg_sim))


def mv_dhel_reference(z, temperature):
  """pakoromilas/Multi-View-CL models/losses.py `MVDHEL.forward` (one process)."""
  n_real, k_views = z.shape[0], z.shape[1]
  neg = []
  for v in range(k_views):
    sim = jnp.exp(z[:, v] @ z[:, v].T / temperature)
    neg.append(jnp.sum(jnp.where(jnp.eye(n_real, dtype=bool), 0.0, sim), axis=-1))  # self removed
  neg = jnp.stack(neg)
  iu = np.triu_indices(k_views, k=1)
  pos = jnp.exp(jnp.sum(z[:, iu[0]] * z[:, iu[1]], axis=-1) / temperature).sum(axis=-1)
  return -jnp.mean(jnp.log(pos / jnp.prod(neg, axis=0)))


# --- inputs and sharded cases (run by test_losses_sharded.py) ------------------------


def _views(seed, v, b=GLOBAL_B):
  return normalized(np.random.default_rng(seed), b, v, D)


T = np.float32(0.2)


def _poly(variant):
  return lambda z, t, axis_name, block_size: losses.polyview_loss(
    z, temperature=t, variant=variant, axis_name=axis_name, block_size=block_size
  )


CASES = {
  "polyview_arithmetic_4_views": (
    _poly("arithmetic"),
    lambda z, t: polyview_equations_reference(z, t, "arithmetic"),
    (_views(20, 4), T),
    (0, 1),
    1,
  ),
  "polyview_geometric_3_views": (
    _poly("geometric"),
    lambda z, t: polyview_equations_reference(z, t, "geometric"),
    (_views(21, 3), T),
    (0, 1),
    1,
  ),
  "polyview_sufficient_statistics": (
    _poly("sufficient_statistics"),
    sufficient_statistics_reference,
    (_views(22, 3), T),
    (0, 1),
    1,
  ),
  "mv_infonce": (
    lambda z, t, axis_name, block_size: losses.mv_infonce_loss(
      z, temperature=t, axis_name=axis_name, block_size=block_size
    ),
    mv_infonce_reference,
    (_views(23, 3), T),
    (0, 1),
    1,
  ),
  "mv_dhel": (
    lambda z, t, axis_name, block_size: losses.mv_dhel_loss(
      z, temperature=t, axis_name=axis_name, block_size=block_size
    ),
    mv_dhel_reference,
    (_views(24, 4), T),
    (0, 1),
    1,
  ),
}


# --- the paper's equations vs its pseudo-code ----------------------------------------


@pytest.mark.parametrize("views", [2, 3, 4, 8])
def test_polyview_arithmetic_follows_the_equations_not_the_pseudocode(views):
  """Ours = the equations (−log of the mean sibling probability) at every M; the pseudo-code's
  log-sum-exp of the sibling losses agrees only at M = 2 (up to its constant −log k)."""
  z = _views(25, views)

  def references(z):  # one compile, not one per operation
    return (
      polyview_equations_reference(z, 0.2, "arithmetic"),
      polyview_pseudocode_reference(z, 0.2),
      polyview_equations_reference(z, 0.2, "geometric"),
    )

  with jax.enable_x64(True), jax.default_matmul_precision("highest"):
    equations, pseudocode, geometric = map(float, jax.jit(references)(jnp.asarray(z)))
  np.testing.assert_allclose(equations, polyview_numpy_loop(z, 0.2, "arithmetic"), rtol=1e-10)
  np.testing.assert_allclose(geometric, polyview_numpy_loop(z, 0.2, "geometric"), rtol=1e-10)
  with jax.default_matmul_precision("highest"):
    ours = float(
      jax.jit(lambda z: losses.polyview_loss(z, temperature=0.2, variant="arithmetic"))(
        jnp.asarray(z, jnp.float32)
      )
    )
  np.testing.assert_allclose(ours, equations, rtol=2e-6)
  shifted = pseudocode + np.log(GLOBAL_B)
  if views == 2:
    np.testing.assert_allclose(shifted, equations, rtol=1e-10)
    np.testing.assert_allclose(geometric, equations, rtol=1e-10)
  else:
    # Jensen both ways: the equations' arithmetic ≤ geometric ≤ the pseudo-code's.
    assert equations < geometric - 1e-3 < shifted - 2e-3


@pytest.mark.parametrize("variant", ["arithmetic", "geometric"])
def test_polyview_with_two_views_is_ntxent(variant):
  z = jnp.asarray(_views(26, 2), jnp.float32)
  poly, ntxent = jax.jit(
    lambda z: (
      losses.polyview_loss(z, temperature=0.1, variant=variant),
      losses.ntxent_loss(z, temperature=0.1),
    )
  )(z)
  np.testing.assert_allclose(poly, ntxent, rtol=1e-6)


def test_mv_losses_at_two_views_reduce_to_pairwise_forms():
  """M = 2: MV-InfoNCE's per-sample term is the two views' NT-Xent terms combined in one
  log; MV-DHEL is DHEL: positive out of the denominators, same-view negatives."""
  z = _views(27, 2)

  def values(z):  # one compile, not one per operation
    s = z[:, 0] @ z[:, 1].T / 0.2
    off = ~jnp.eye(GLOBAL_B, dtype=bool)
    same_view = [jnp.where(off, z[:, v] @ z[:, v].T / 0.2, -jnp.inf) for v in (0, 1)]
    dhel = jnp.mean(-jnp.diag(s) + sum(jax.nn.logsumexp(x, axis=1) for x in same_view))
    return (
      losses.mv_dhel_loss(z, temperature=0.2),
      mv_dhel_reference(z, 0.2),
      losses.mv_infonce_loss(z, temperature=0.2),
      mv_infonce_reference(z, 0.2),
      dhel,
    )

  with jax.enable_x64(True), jax.default_matmul_precision("highest"):
    ours_dhel, ref_dhel, ours_infonce, ref_infonce, dhel = jax.jit(values)(jnp.asarray(z))
  np.testing.assert_allclose(ours_dhel, ref_dhel, rtol=1e-10)
  np.testing.assert_allclose(ours_infonce, ref_infonce, rtol=1e-10)
  np.testing.assert_allclose(ref_dhel, dhel, rtol=1e-10)


def test_polyview_rejects_unknown_variant():
  with pytest.raises(ValueError, match="variant"):
    losses.polyview_loss(
      jnp.asarray(_views(28, 3), jnp.float32), temperature=0.1, variant="harmonic"
    )
