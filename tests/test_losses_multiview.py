"""NT-Xent, SupCon, DCL/DCLW, debiased, SoftCon and diagnostics vs float64 ports of their sources."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_losses_support import (
  FAST_COMPILE,
  GLOBAL_B,
  assert_close_to_reference,
  assert_finite,
  normalized,
  reference_value_and_grads,
  sharded,
  value_and_grads,
)

from big_contrast import losses
from big_contrast.losses import soft

D = 8
LARGE_NUM = 1e9


# --- references, transcribed from each source (run in float64) ----------------------


def simclr_objective_reference(z, temperature):
  """google-research/simclr objective.py `add_contrastive_loss` (one replica): loss_a + loss_b."""
  h1, h2 = z[:, 0], z[:, 1]
  n = h1.shape[0]
  labels = jax.nn.one_hot(jnp.arange(n), 2 * n)
  masks = jax.nn.one_hot(jnp.arange(n), n)
  aa = h1 @ h1.T / temperature - masks * LARGE_NUM
  bb = h2 @ h2.T / temperature - masks * LARGE_NUM
  ab = h1 @ h2.T / temperature
  ba = h2 @ h1.T / temperature

  def ce(logits):  # tf.losses.softmax_cross_entropy, mean over the batch
    return jnp.mean(-jnp.sum(labels * jax.nn.log_softmax(logits, axis=1), axis=1))

  return ce(jnp.concatenate([ab, aa], 1)) + ce(jnp.concatenate([ba, bb], 1))


def supcon_reference(z, labels, temperature, base_temperature=0.07):
  """HobbitLong/SupContrast losses.py `SupConLoss` (contrast_mode='all'); multi-hot via `mask`."""
  bsz, n_views, _ = z.shape
  labels = jnp.asarray(labels)
  if labels.ndim == 1:
    mask = (labels[:, None] == labels[None, :]).astype(z.dtype)
  else:  # the `mask` argument: a shared label, or the sample itself
    mask = ((labels @ labels.T > 0) | jnp.eye(bsz, dtype=bool)).astype(z.dtype)
  contrast = jnp.concatenate([z[:, v] for v in range(n_views)], axis=0)  # view-major
  logits = contrast @ contrast.T / temperature
  logits = logits - jax.lax.stop_gradient(logits.max(axis=1, keepdims=True))
  mask = jnp.tile(mask, (n_views, n_views))
  logits_mask = 1.0 - jnp.eye(bsz * n_views)
  mask = mask * logits_mask
  log_prob = logits - jnp.log(jnp.sum(jnp.exp(logits) * logits_mask, axis=1, keepdims=True))
  mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
  scale = 1.0 if base_temperature is None else temperature / base_temperature
  return jnp.mean(-scale * mean_log_prob_pos)


def ntxent_reference(z, temperature):
  """V views, every other view of the sample a positive: SupCon with distinct labels, no factor."""
  return supcon_reference(z, jnp.arange(z.shape[0]), temperature, None)


def supcon_decoupled_reference(z, labels, temperature, base_temperature=0.07):
  """nilesh2797/DEXML losses.py 'decoupled-softmax' over SupCon's anchors and positives."""
  b, v, d = z.shape
  flat = z.reshape(b * v, d)
  s = flat @ flat.T / temperature
  labels = jnp.asarray(labels)
  shared = (labels[:, None] == labels[None, :]) if labels.ndim == 1 else (labels @ labels.T > 0)
  sample = jnp.repeat(jnp.arange(b), v)
  eye = jnp.eye(b * v, dtype=bool)
  pos = (jnp.repeat(jnp.repeat(shared, v, 0), v, 1) | (sample[:, None] == sample[None, :])) & ~eye
  neg = ~pos & ~eye
  log_denom = jax.nn.logsumexp(jnp.where(neg, s, -jnp.inf), axis=1)  # over the negatives
  log_prob = s - jnp.logaddexp(log_denom[:, None], s)  # each positive against them
  per_row = -jnp.sum(jnp.where(pos, log_prob, 0.0), axis=1) / pos.sum(1)
  return jnp.mean(per_row) * temperature / base_temperature


def dcl_reference(z, temperature, sigma=None):
  """raminnakhli/Decoupled-Contrastive-Learning loss/dcl.py: DCL()(z1, z2), both directions summed.

  DCLW's weight with the paper's expectation, 2 - exp(cos/σ) / mean(exp(cos/σ)), where the
  code's softmax over the batch leaves out the factor B.
  """
  z1, z2 = z[:, 0], z[:, 1]

  def weight(a, b):
    e = jnp.exp(jnp.sum(a * b, axis=1) / sigma)
    return 2.0 - e / jnp.mean(e)

  def one_way(a, b):
    positive = -jnp.sum(a * b, axis=1) / temperature
    if sigma is not None:
      positive = positive * weight(a, b)
    neg = jnp.concatenate([a @ a.T, a @ b.T], axis=1) / temperature
    neg_mask = jnp.tile(jnp.eye(a.shape[0]), (1, 2))
    negative = jax.nn.logsumexp(neg + neg_mask * np.log(1e-45), axis=1)
    return jnp.mean(positive + negative)

  return one_way(z1, z2) + one_way(z2, z1)


def debiased_reference(z, temperature, tau_plus, beta):
  """chingyaoc/DCL / joshr17/HCL's estimator in linear space (fine at moderate 1/τ), V views."""
  b, v, d = z.shape
  flat = z.reshape(b * v, d)
  s = flat @ flat.T / temperature
  sample = jnp.repeat(jnp.arange(b), v)
  same = sample[:, None] == sample[None, :]
  positive, negative = same & ~jnp.eye(b * v, dtype=bool), ~same
  n = negative.sum(axis=1, keepdims=True)
  neg = jnp.where(negative, jnp.exp(s), 0.0)
  imp = jnp.where(negative, jnp.exp(beta * s), 0.0)
  reweighted = (imp * neg).sum(axis=1, keepdims=True) / (imp.sum(axis=1, keepdims=True) / n)
  pos = jnp.exp(s)
  ng = (reweighted - tau_plus * n * pos) / (1 - tau_plus)
  ng = jnp.maximum(ng, n * jnp.exp(-1 / temperature))
  per_pair = -jnp.log(pos / (pos + ng))
  return jnp.mean(jnp.sum(jnp.where(positive, per_pair, 0.0), axis=1) / positive.sum(1))


def soft_reference(za, zb, labels, temperature, similarity, soft_weight=0.5):
  labels = np.asarray(labels, np.float64)
  inter = labels @ labels.T
  sizes = labels.sum(1)
  if similarity == "cosine":
    denom = np.sqrt(np.outer(sizes, sizes))
  else:
    denom = sizes[:, None] + sizes[None, :] - inter
  sim = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
  np.fill_diagonal(sim, 1.0)
  targets = (1 - soft_weight) * np.eye(len(sim)) + soft_weight * sim / sim.sum(1, keepdims=True)
  s = za @ zb.T / temperature
  a2b = jax.nn.logsumexp(s, axis=1) - (targets * s).sum(1)
  b2a = jax.nn.logsumexp(s, axis=0) - (targets.T * s).sum(0)  # row j of b: targets[j]
  return (a2b.mean() + b2a.mean()) / 2


def simclr_numpy_loop(z1, z2, temperature):
  """Value only, textbook SimCLR over 2N views: positive of k is k ± N; mean over views."""
  views = np.concatenate([z1, z2])
  n = len(z1)
  s = views @ views.T / temperature
  total = 0.0
  for k in range(2 * n):
    others = [c for c in range(2 * n) if c != k]
    total += -s[k, (k + n) % (2 * n)] + np.log(np.exp(s[k, others]).sum())
  return total / (2 * n)


# --- inputs -----------------------------------------------------------------------


def _views(seed, v=2, b=GLOBAL_B):
  return normalized(np.random.default_rng(seed), b, v, D)


INT_LABELS = np.arange(GLOBAL_B) % 5
MULTI_HOT = (np.random.default_rng(42).random((GLOBAL_B, 6)) < 0.3).astype(np.float32)
MULTI_HOT[3] = 0  # a sample without labels
T = np.float32(0.2)


def _f32(x):
  return jnp.asarray(x, jnp.float32)


# --- sharded cases (run by test_losses_sharded.py) ----------------------------------
# name: (loss(*args, axis_name, block_size), reference(*args), args, argnums, batch args)

CASES = {
  "ntxent_3_views": (
    lambda z, t, axis_name, block_size: losses.ntxent_loss(
      z, temperature=t, axis_name=axis_name, block_size=block_size
    ),
    ntxent_reference,
    (_views(0, v=3), T),
    (0, 1),
    1,
  ),
  "ntxent_simclr_sum": (
    lambda z, t, axis_name, block_size: losses.ntxent_loss(
      z, temperature=t, axis_name=axis_name, block_size=block_size, sum_over_views=True
    ),
    simclr_objective_reference,
    (_views(1), T),
    (0, 1),
    1,
  ),
  "supcon_int": (
    lambda z, y, t, axis_name, block_size: losses.supcon_loss(
      z, y, temperature=t, axis_name=axis_name, block_size=block_size
    ),
    supcon_reference,
    (_views(2), INT_LABELS, T),
    (0, 2),
    2,
  ),
  "supcon_multi_hot": (
    lambda z, y, t, axis_name, block_size: losses.supcon_loss(
      z, y, temperature=t, axis_name=axis_name, block_size=block_size
    ),
    supcon_reference,
    (_views(3), MULTI_HOT, T),
    (0, 2),
    2,
  ),
  "supcon_decoupled": (
    lambda z, y, t, axis_name, block_size: losses.supcon_loss(
      z, y, temperature=t, axis_name=axis_name, block_size=block_size, decoupled=True
    ),
    supcon_decoupled_reference,
    (_views(4), MULTI_HOT, T),
    (0, 2),
    2,
  ),
  "dcl": (
    lambda z, t, axis_name, block_size: losses.dcl_loss(
      z, temperature=t, axis_name=axis_name, block_size=block_size, sum_over_views=True
    ),
    dcl_reference,
    (_views(5), T),
    (0, 1),
    1,
  ),
  "dclw": (
    lambda z, t, axis_name, block_size: losses.dcl_loss(
      z,
      temperature=t,
      axis_name=axis_name,
      block_size=block_size,
      sum_over_views=True,
      vmf_sigma=0.5,
    ),
    lambda z, t: dcl_reference(z, t, sigma=0.5),
    (_views(6), T),
    (0, 1),
    1,
  ),
  "debiased_hard": (
    lambda z, t, axis_name, block_size: losses.debiased_loss(
      z, temperature=t, tau_plus=0.1, beta=1.0, axis_name=axis_name, block_size=block_size
    ),
    lambda z, t: debiased_reference(z, t, 0.1, 1.0),
    (_views(7, v=3), np.float32(0.5)),
    (0, 1),
    1,
  ),
  "softcon": (
    lambda a, b, y, t, axis_name, block_size: losses.soft_contrastive_loss(
      a, b, y, temperature=t, similarity="jaccard", axis_name=axis_name, block_size=block_size
    ),
    lambda a, b, y, t: soft_reference(a, b, MULTI_HOT, t, "jaccard"),
    (_views(8)[:, 0], _views(8)[:, 1], MULTI_HOT, T),
    (0, 1, 3),
    3,
  ),
}


# --- the references themselves, and reductions ---------------------------------------


def test_references_match_textbook_simclr_and_each_other():
  z = _views(9)
  with jax.enable_x64(True):
    z64 = jnp.asarray(z)
    simclr = float(simclr_objective_reference(z64, 0.1))
    np.testing.assert_allclose(simclr / 2, simclr_numpy_loop(z[:, 0], z[:, 1], 0.1), rtol=1e-10)
    np.testing.assert_allclose(float(ntxent_reference(z64, 0.1)), simclr / 2, rtol=1e-10)
  with jax.default_matmul_precision("highest"):
    got = losses.ntxent_loss(_f32(z), temperature=0.1)
    got_sum = losses.ntxent_loss(_f32(z), temperature=0.1, sum_over_views=True)
  np.testing.assert_allclose(got, simclr / 2, rtol=2e-6)
  np.testing.assert_allclose(got_sum, simclr, rtol=2e-6)


def test_supcon_base_temperature_scales_by_tau_over_base():
  z = _f32(_views(10, v=3))
  plain = losses.supcon_loss(z, INT_LABELS, temperature=0.1, base_temperature=None)
  official = losses.supcon_loss(z, INT_LABELS, temperature=0.1)  # τ_base 0.07
  np.testing.assert_allclose(official, plain * 0.1 / 0.07, rtol=1e-6)


@pytest.mark.parametrize("views", [2, 3])
def test_supcon_with_distinct_labels_is_ntxent(views):
  z = _f32(_views(11, v=views))
  ntxent = losses.ntxent_loss(z, temperature=0.1)
  for labels in (jnp.arange(GLOBAL_B) * 7, jax.nn.one_hot(jnp.arange(GLOBAL_B), GLOBAL_B)):
    got = losses.supcon_loss(z, labels, temperature=0.1, base_temperature=None)
    np.testing.assert_allclose(got, ntxent, rtol=1e-6)
    decoupled = losses.supcon_loss(
      z, labels, temperature=0.1, base_temperature=None, decoupled=True
    )
    if views == 2:  # one positive per anchor: decoupling changes nothing
      np.testing.assert_allclose(decoupled, ntxent, rtol=1e-6)


def test_debiased_without_prior_or_hardness_is_ntxent():
  z = _f32(_views(12))
  v, g = jax.jit(
    jax.value_and_grad(lambda z: losses.debiased_loss(z, temperature=0.1, tau_plus=0.0))
  )(z)
  w, h = jax.jit(jax.value_and_grad(lambda z: losses.ntxent_loss(z, temperature=0.1)))(z)
  np.testing.assert_allclose(v, w, rtol=1e-6)
  np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-6)


def test_dclw_weights_average_to_one():
  """With σ → ∞ every weight is 1: DCLW is DCL."""
  z = _f32(_views(13))
  np.testing.assert_allclose(
    losses.dcl_loss(z, temperature=0.1, vmf_sigma=1e6),
    losses.dcl_loss(z, temperature=0.1),
    rtol=1e-5,
  )


@pytest.mark.parametrize("similarity", ["cosine", "jaccard"])
def test_soft_contrastive_with_disjoint_labels_is_clip(similarity):
  z = _f32(_views(14))
  labels = jax.nn.one_hot(jnp.arange(GLOBAL_B) % 30, 30)
  labels = labels.at[5].set(0.0)  # an empty label set is disjoint from all
  np.testing.assert_allclose(
    losses.soft_contrastive_loss(z[:, 0], z[:, 1], labels, temperature=0.1, similarity=similarity),
    losses.clip_loss(z[:, 0], z[:, 1], temperature=0.1),
    rtol=1e-6,
  )


def test_soft_targets_keep_the_own_view_a_positive():
  """Heavily overlapping label sets: the own view keeps >= 1 - λ of the row mass."""
  labels = np.ones((GLOBAL_B, 4), np.float32)
  labels[::2, 0] = 0
  t = soft.soft_targets(labels, labels, jnp.arange(GLOBAL_B), soft_weight=0.5)
  np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
  assert np.all(np.diag(t) >= 0.5)
  t1 = soft.soft_targets(labels, labels, jnp.arange(GLOBAL_B), soft_weight=1.0)
  assert np.all(np.diag(t1) < 0.1)  # label similarity alone: the own view drowns


def uniformity_reference(z, t):
  n = len(z)
  i, j = np.triu_indices(n, k=1)
  sq = jnp.sum((z[i] - z[j]) ** 2, axis=-1)
  return jnp.log(jnp.mean(jnp.exp(-t * sq)))


def alignment_reference(z1, z2, alpha):
  return jnp.mean(jnp.linalg.norm(z1 - z2, axis=-1) ** alpha)


@pytest.mark.parametrize("devices", [1, 4])
def test_sharded_uniformity_and_alignment_match_dense(devices):
  z = _views(15)
  fn = sharded(
    lambda z, axis_name: losses.uniformity(z, t=2, axis_name=axis_name), devices, batch_args=1
  )
  assert_close_to_reference(fn, lambda z: uniformity_reference(z, 2), (z[:, 0],), (0,))
  for alpha in (2, 1.5):
    fn = sharded(
      lambda a, b, axis_name, alpha=alpha: losses.alignment(a, b, alpha, axis_name=axis_name),
      devices,
      batch_args=2,
    )
    assert_close_to_reference(
      fn, lambda a, b, alpha=alpha: alignment_reference(a, b, alpha), (z[:, 0], z[:, 1]), (0, 1)
    )


# --- numerics -----------------------------------------------------------------------


def _extreme_views():
  rng = np.random.default_rng(16)
  z = normalized(rng, GLOBAL_B, 1, D).repeat(3, axis=1)
  z[:, 1:] += 1e-3 * rng.normal(size=z[:, 1:].shape)  # positives at cosine ~1
  z[1::2] = -z[0::2]  # negatives at cosine -1
  return z / np.linalg.norm(z, axis=-1, keepdims=True)


EXTREME = {
  "ntxent": lambda z, t, k: losses.ntxent_loss(z, temperature=t, block_size=k),
  "supcon": lambda z, t, k: losses.supcon_loss(z, INT_LABELS, temperature=t, block_size=k),
  "supcon_decoupled": lambda z, t, k: losses.supcon_loss(
    z, MULTI_HOT, temperature=t, block_size=k, decoupled=True
  ),
  "dclw": lambda z, t, k: losses.dcl_loss(z, temperature=t, block_size=k, vmf_sigma=0.5),
  "debiased": lambda z, t, k: losses.debiased_loss(
    z, temperature=t, tau_plus=0.1, beta=1.0, block_size=k
  ),
  "soft": lambda z, t, k: losses.soft_contrastive_loss(
    z[:, 0], z[:, 1], MULTI_HOT, temperature=t, block_size=k
  ),
  "uniformity": lambda z, t, k: losses.uniformity(z[:, 0]),
}


@pytest.mark.parametrize("block_size", [None, 7])
@pytest.mark.parametrize("name", list(EXTREME))
def test_multiview_losses_at_extreme_logits_and_bf16_are_finite(name, block_size):
  loss = EXTREME[name]
  z = _extreme_views()
  grad = jax.jit(
    jax.value_and_grad(lambda z, t: loss(z, t, block_size), argnums=(0, 1)),
    compiler_options=FAST_COMPILE,
  )
  for dtype in (jnp.float32, jnp.bfloat16):
    v, g = grad(jnp.asarray(z, dtype), jnp.float32(0.01))
    assert_finite(v, g)


def test_ntxent_at_extreme_logits_matches_dense():
  """Value and embedding gradients to 1e-4 at 1/τ = 100. dL/dτ = -Σ g·cos / τ² cancels terms
  of order 1 (Σ|g·cos| ≈ 1 here) whose float32 rounding, ~2^-24 each, 1/τ² = 10^4 magnifies
  to ~6e-4 (the blockwise path's error; the reference's value is -1.8e-6), so it is held to
  atol 1e-3, what float32 can give at this temperature."""
  z = _extreme_views()
  t = np.float32(0.01)
  (rv, (rgz, rgt)) = reference_value_and_grads(ntxent_reference, (z, t), (0, 1))
  for k in (None, 7):
    fn = lambda z, t, k=k: losses.ntxent_loss(z, temperature=t, block_size=k)
    v, (gz, gt) = value_and_grads(fn, (z, t), (0, 1))
    np.testing.assert_allclose(v, rv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gz, rgz, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gt, rgt, atol=1e-3)


def test_debiased_at_extreme_logits_is_close_to_log_space_float64():
  """1/τ = 100 overflows the linear-space estimator in float32, not ours."""
  z = _extreme_views()[:, :2]
  with jax.enable_x64(True):
    want = debiased_reference(jnp.asarray(z), 0.01, 0.1, 1.0)
  with jax.default_matmul_precision("highest"):
    got = losses.debiased_loss(_f32(z), temperature=0.01, tau_plus=0.1, beta=1.0)
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_multiview_losses_reject_bad_arguments():
  z = _f32(_views(17))
  with pytest.raises(ValueError, match="2 views"):
    losses.ntxent_loss(z[:, :1], temperature=0.1)
  with pytest.raises(ValueError, match="tau_plus"):
    losses.debiased_loss(z, temperature=0.1, tau_plus=1.0)
  with pytest.raises(ValueError, match="soft_weight"):
    losses.soft_contrastive_loss(z[:, 0], z[:, 1], MULTI_HOT, temperature=0.1, soft_weight=1.5)
  with pytest.raises(ValueError, match="vmf_sigma"):
    losses.dcl_loss(z, temperature=0.1, vmf_sigma=0.0)
  with pytest.raises(ValueError, match="block_size"):
    losses.supcon_loss(z, INT_LABELS, temperature=0.1, block_size=0)
