"""Multi-view, supervised, soft and diagnostic losses vs dense float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_losses_support import (
  DEVICE_COUNTS,
  GLOBAL_B,
  assert_close_to_reference,
  assert_finite,
  normalized,
  sharded,
)

from big_contrast import losses
from big_contrast.losses import soft

D = 8


# --- plain dense references over the global batch (run in float64) ---------
# Views are flattened sample-major: row i*V + v is view v of sample i.


def _flat(z, temperature):
  b, v, d = z.shape
  flat = z.reshape(b * v, d)
  sample = jnp.repeat(jnp.arange(b), v)
  same = sample[:, None] == sample[None, :]
  eye = jnp.eye(b * v, dtype=bool)
  return flat @ flat.T / temperature, same & ~eye, ~same, eye


def _masked_lse(s, mask):
  return jnp.log(jnp.sum(jnp.where(mask, jnp.exp(s), 0.0), axis=1))


def _mean_where(s, mask):
  return jnp.sum(jnp.where(mask, s, 0.0), axis=1) / mask.sum(axis=1)


def supcon_reference(z, labels, temperature):
  s, _, _, eye = _flat(z, temperature)
  v = z.shape[1]
  labels = jnp.asarray(labels)
  if labels.ndim == 1:
    shared = labels[:, None] == labels[None, :]
  else:
    shared = (labels @ labels.T) > 0
  sample = jnp.repeat(jnp.arange(z.shape[0]), v)
  positive = (
    jnp.repeat(jnp.repeat(shared, v, 0), v, 1) | (sample[:, None] == sample[None, :])
  ) & ~eye
  log_prob = s - _masked_lse(s, ~eye)[:, None]
  return jnp.mean(-_mean_where(log_prob, positive))


def ntxent_reference(z, temperature):
  return supcon_reference(z, jnp.arange(z.shape[0]), temperature)


def simclr_numpy_loop(z1, z2, temperature):
  """Value only, textbook SimCLR over 2N views: positive of k is k ± N."""
  views = np.concatenate([z1, z2])
  n = len(z1)
  s = views @ views.T / temperature
  total = 0.0
  for k in range(2 * n):
    others = [c for c in range(2 * n) if c != k]
    total += -s[k, (k + n) % (2 * n)] + np.log(np.exp(s[k, others]).sum())
  return total / (2 * n)


def dcl_reference(z, temperature):
  s, positive, negative, _ = _flat(z, temperature)
  return jnp.mean(-_mean_where(s, positive) + _masked_lse(s, negative))


def debiased_reference(z, temperature, tau_plus, beta):
  """Robinson et al.'s estimator written in linear space (fine at moderate 1/τ)."""
  s, positive, negative, _ = _flat(z, temperature)
  n = negative.sum(axis=1, keepdims=True)
  neg = jnp.where(negative, jnp.exp(s), 0.0)
  imp = jnp.where(negative, jnp.exp(beta * s), 0.0)
  reweighted = (imp * neg).sum(axis=1, keepdims=True) / (imp.sum(axis=1, keepdims=True) / n)
  pos = jnp.exp(s)
  ng = (reweighted - tau_plus * n * pos) / (1 - tau_plus)
  ng = jnp.maximum(ng, n * jnp.exp(-1 / temperature))
  per_pair = -jnp.log(pos / (pos + ng))
  return jnp.mean(_mean_where(per_pair, positive))


def polyview_reference(z, temperature, variant):
  """The paper's pseudo-code, literally: for each anchor view α and sibling β ≠ α a
  cross-entropy over all views of all samples, the anchor's own sample's views
  other than β masked out; aggregated over β by arithmetic or geometric mean."""
  b, m, _ = z.shape
  s = jnp.einsum("imd,jnd->imnj", z, z) / temperature  # [b, m, m, b]
  eye = jnp.eye(b, dtype=bool)
  per_alpha = []
  for alpha in range(m):
    per_beta = []
    for beta in range(m):
      if beta == alpha:
        continue
      drop = eye[:, None, :] & (jnp.arange(m) != beta)[None, :, None]  # [b, m, b]
      logits = jnp.where(drop, -jnp.inf, s[:, alpha]).reshape(b, m * b)
      target = beta * b + jnp.arange(b)
      log_p = jax.nn.log_softmax(logits, axis=-1)[jnp.arange(b), target]
      per_beta.append(-log_p)
    losses_ab = jnp.stack(per_beta, axis=-1)  # [b, m-1]
    if variant == "arithmetic":
      per_alpha.append(-jnp.log(jnp.mean(jnp.exp(-losses_ab), axis=-1)))
    else:
      per_alpha.append(jnp.mean(losses_ab, axis=-1))
  return jnp.mean(jnp.stack(per_alpha))


def polyview_numpy_loop(z, temperature, variant):
  """Value only, float64 NumPy: ℓ_αβ = log(e^{s_αβ} + S_N) - s_αβ per anchor view."""
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


def soft_numpy_loop(za, zb, labels, temperature, similarity, soft_weight):
  """Value only, float64 NumPy, one pair at a time."""
  n = len(za)
  labels = np.asarray(labels, np.float64)

  def label_sim(i, j):
    if i == j:
      return 1.0
    inter, a, b = labels[i] @ labels[j], labels[i].sum(), labels[j].sum()
    denom = np.sqrt(a * b) if similarity == "cosine" else a + b - inter
    return inter / denom if denom > 0 else 0.0

  sim = np.array([[label_sim(i, j) for j in range(n)] for i in range(n)])
  total = 0.0
  for i in range(n):
    t = soft_weight * sim[i] / sim[i].sum()
    t[i] += 1 - soft_weight
    for x, y in ((za, zb), (zb, za)):
      s = np.array([x[i] @ y[j] for j in range(n)]) / temperature
      total += np.log(np.exp(s).sum()) - (t * s).sum()
  return total / (2 * n)


def uniformity_reference(z, t):
  n = len(z)
  i, j = np.triu_indices(n, k=1)
  sq = jnp.sum((z[i] - z[j]) ** 2, axis=-1)
  return jnp.log(jnp.mean(jnp.exp(-t * sq)))


def alignment_reference(z1, z2, alpha):
  return jnp.mean(jnp.linalg.norm(z1 - z2, axis=-1) ** alpha)


# --- inputs -----------------------------------------------------------------------


def _views(seed, v=2, b=GLOBAL_B):
  return normalized(np.random.default_rng(seed), b, v, D)


INT_LABELS = np.arange(GLOBAL_B) % 5
MULTI_HOT = (np.random.default_rng(42).random((GLOBAL_B, 6)) < 0.3).astype(np.float32)
MULTI_HOT[3] = 0  # a sample without labels


# --- every loss, sharded, vs its dense reference -------------------------------------


@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_ntxent_loss_matches_dense(devices):
  fn = sharded(
    lambda z, t, axis_name: losses.ntxent_loss(z, temperature=t, axis_name=axis_name),
    devices,
    batch_args=1,
    replicated_args=1,
  )
  assert_close_to_reference(fn, ntxent_reference, (_views(0, v=3), np.float32(0.1)), (0, 1))


@pytest.mark.parametrize("labels", [INT_LABELS, MULTI_HOT], ids=["int", "multi_hot"])
@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_supcon_loss_matches_dense(devices, labels):
  fn = sharded(
    lambda z, y, t, axis_name: losses.supcon_loss(z, y, temperature=t, axis_name=axis_name),
    devices,
    batch_args=2,
    replicated_args=1,
  )
  assert_close_to_reference(fn, supcon_reference, (_views(1), labels, np.float32(0.1)), (0, 2))


@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_dcl_loss_matches_dense(devices):
  fn = sharded(
    lambda z, t, axis_name: losses.dcl_loss(z, temperature=t, axis_name=axis_name),
    devices,
    batch_args=1,
    replicated_args=1,
  )
  assert_close_to_reference(fn, dcl_reference, (_views(2), np.float32(0.1)), (0, 1))


@pytest.mark.parametrize("tau_plus,beta", [(0.1, 0.0), (0.1, 1.0)])
@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_debiased_loss_matches_dense(devices, tau_plus, beta):
  fn = sharded(
    lambda z, t, axis_name: losses.debiased_loss(
      z, temperature=t, tau_plus=tau_plus, beta=beta, axis_name=axis_name
    ),
    devices,
    batch_args=1,
    replicated_args=1,
  )
  ref = lambda z, t: debiased_reference(z, t, tau_plus, beta)
  assert_close_to_reference(fn, ref, (_views(3), np.float32(0.5)), (0, 1))


@pytest.mark.parametrize("views", [2, 4, 8])
@pytest.mark.parametrize("variant", ["arithmetic", "geometric"])
@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_polyview_loss_matches_dense(devices, variant, views):
  fn = sharded(
    lambda z, t, axis_name: losses.polyview_loss(
      z, temperature=t, variant=variant, axis_name=axis_name
    ),
    devices,
    batch_args=1,
    replicated_args=1,
  )
  ref = lambda z, t: polyview_reference(z, t, variant)
  assert_close_to_reference(fn, ref, (_views(4, v=views), np.float32(0.2)), (0, 1))


@pytest.mark.parametrize("views", [2, 4, 8])
@pytest.mark.parametrize("variant", ["arithmetic", "geometric"])
def test_polyview_reference_is_the_paper_formula(variant, views):
  z = _views(14, v=views)
  with jax.enable_x64(True):
    want = polyview_numpy_loop(z, 0.2, variant)
    np.testing.assert_allclose(polyview_reference(jnp.asarray(z), 0.2, variant), want, rtol=1e-10)
  with jax.default_matmul_precision("highest"):
    got = losses.polyview_loss(_f32(z), temperature=0.2, variant=variant)
  np.testing.assert_allclose(got, want, rtol=2e-6)


def test_polyview_variants_differ_and_are_ordered():
  """Jensen: -log(mean p) <= mean(-log p), equal only when the pairwise terms agree."""
  z = _f32(_views(15, v=4))
  arith = losses.polyview_loss(z, temperature=0.2, variant="arithmetic")
  geo = losses.polyview_loss(z, temperature=0.2, variant="geometric")
  assert arith < geo - 1e-3


@pytest.mark.parametrize("soft_weight", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("similarity", ["cosine", "jaccard"])
@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_soft_contrastive_loss_matches_dense(devices, similarity, soft_weight):
  fn = sharded(
    lambda a, b, y, t, axis_name: losses.soft_contrastive_loss(
      a, b, y, temperature=t, similarity=similarity, soft_weight=soft_weight, axis_name=axis_name
    ),
    devices,
    batch_args=3,
    replicated_args=1,
  )
  z = _views(5)
  ref = lambda a, b, y, t: soft_reference(a, b, MULTI_HOT, t, similarity, soft_weight)
  assert_close_to_reference(fn, ref, (z[:, 0], z[:, 1], MULTI_HOT, np.float32(0.1)), (0, 1, 3))


@pytest.mark.parametrize("soft_weight", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("similarity", ["cosine", "jaccard"])
def test_soft_reference_matches_pairwise_numpy_loop(similarity, soft_weight):
  z = _views(16)
  want = soft_numpy_loop(z[:, 0], z[:, 1], MULTI_HOT, 0.1, similarity, soft_weight)
  with jax.enable_x64(True):
    ref = soft_reference(
      jnp.asarray(z[:, 0]), jnp.asarray(z[:, 1]), MULTI_HOT, 0.1, similarity, soft_weight
    )
  np.testing.assert_allclose(ref, want, rtol=1e-10)
  with jax.default_matmul_precision("highest"):
    got = losses.soft_contrastive_loss(
      _f32(z[:, 0]),
      _f32(z[:, 1]),
      MULTI_HOT,
      temperature=0.1,
      similarity=similarity,
      soft_weight=soft_weight,
    )
  np.testing.assert_allclose(got, want, rtol=2e-6)


def test_soft_targets_keep_the_own_view_a_positive():
  """Heavily overlapping label sets: the own view keeps >= 1 - λ of the row mass."""
  labels = np.ones((GLOBAL_B, 4), np.float32)
  labels[::2, 0] = 0
  t = soft.soft_targets(labels, labels, jnp.arange(GLOBAL_B), soft_weight=0.5)
  np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
  assert np.all(np.diag(t) >= 0.5)
  t1 = soft.soft_targets(labels, labels, jnp.arange(GLOBAL_B), soft_weight=1.0)
  assert np.all(np.diag(t1) < 0.1)  # label similarity alone: the own view drowns


@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_uniformity_and_alignment_match_dense(devices):
  z = _views(6)
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


# --- reductions ----------------------------------------------------------------------


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def test_ntxent_with_two_views_is_simclr():
  z = _views(7)
  got = losses.ntxent_loss(_f32(z), temperature=0.1)
  np.testing.assert_allclose(got, simclr_numpy_loop(z[:, 0], z[:, 1], 0.1), rtol=1e-5)


@pytest.mark.parametrize("views", [2, 3])
def test_supcon_with_distinct_labels_is_ntxent(views):
  z = _f32(_views(8, v=views))
  np.testing.assert_allclose(
    losses.supcon_loss(z, jnp.arange(GLOBAL_B) * 7, temperature=0.1),
    losses.ntxent_loss(z, temperature=0.1),
    rtol=1e-6,
  )
  one_hot = jax.nn.one_hot(jnp.arange(GLOBAL_B), GLOBAL_B)
  np.testing.assert_allclose(
    losses.supcon_loss(z, one_hot, temperature=0.1),
    losses.ntxent_loss(z, temperature=0.1),
    rtol=1e-6,
  )


def test_debiased_without_prior_or_hardness_is_ntxent():
  z = _f32(_views(9))
  v, g = jax.jit(
    jax.value_and_grad(lambda z: losses.debiased_loss(z, temperature=0.1, tau_plus=0.0))
  )(z)
  w, h = jax.jit(jax.value_and_grad(lambda z: losses.ntxent_loss(z, temperature=0.1)))(z)
  np.testing.assert_allclose(v, w, rtol=1e-6)
  np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["arithmetic", "geometric"])
def test_polyview_with_two_views_is_ntxent(variant):
  z = _f32(_views(10))
  np.testing.assert_allclose(
    losses.polyview_loss(z, temperature=0.1, variant=variant),
    losses.ntxent_loss(z, temperature=0.1),
    rtol=1e-6,
  )


@pytest.mark.parametrize("similarity", ["cosine", "jaccard"])
def test_soft_contrastive_with_disjoint_labels_is_clip(similarity):
  z = _f32(_views(11))
  labels = jax.nn.one_hot(jnp.arange(GLOBAL_B) % 30, 30)
  labels = labels.at[5].set(0.0)  # an empty label set is disjoint from all
  np.testing.assert_allclose(
    losses.soft_contrastive_loss(z[:, 0], z[:, 1], labels, temperature=0.1, similarity=similarity),
    losses.clip_loss(z[:, 0], z[:, 1], temperature=0.1),
    rtol=1e-6,
  )


# --- numerics -----------------------------------------------------------------------


def _all_multiview_losses():
  return {
    "ntxent": lambda z, t: losses.ntxent_loss(z, temperature=t),
    "supcon": lambda z, t: losses.supcon_loss(z, INT_LABELS, temperature=t),
    "dcl": lambda z, t: losses.dcl_loss(z, temperature=t),
    "debiased": lambda z, t: losses.debiased_loss(z, temperature=t, tau_plus=0.1, beta=1.0),
    "polyview_arithmetic": lambda z, t: losses.polyview_loss(
      z, temperature=t, variant="arithmetic"
    ),
    "polyview_geometric": lambda z, t: losses.polyview_loss(z, temperature=t),
    "soft": lambda z, t: losses.soft_contrastive_loss(z[:, 0], z[:, 1], MULTI_HOT, temperature=t),
    "uniformity": lambda z, t: losses.uniformity(z[:, 0]),
  }


def _extreme_views():
  rng = np.random.default_rng(12)
  z = normalized(rng, GLOBAL_B, 1, D).repeat(3, axis=1)
  z[:, 1:] += 1e-3 * rng.normal(size=z[:, 1:].shape)  # positives at cosine ~1
  z[1::2] = -z[0::2]  # negatives at cosine -1
  return z / np.linalg.norm(z, axis=-1, keepdims=True)


@pytest.mark.parametrize("name", list(_all_multiview_losses()))
def test_multiview_losses_at_extreme_logits_and_bf16_are_finite(name):
  loss = _all_multiview_losses()[name]
  z = _extreme_views()
  for dtype in (jnp.float32, jnp.bfloat16):
    v, g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(
      jnp.asarray(z, dtype), jnp.float32(0.01)
    )
    assert_finite(v, g)


def test_ntxent_at_extreme_logits_matches_dense():
  z = _extreme_views()
  fn = lambda z, t: losses.ntxent_loss(z, temperature=t)
  assert_close_to_reference(
    fn, ntxent_reference, (z, np.float32(0.01)), (0, 1), rtol=1e-4, atol=1e-4
  )


def test_debiased_at_extreme_logits_is_close_to_log_space_float64():
  """1/τ = 100 overflows the linear-space estimator in float32, not ours."""
  z = _extreme_views()[:, :2]
  with jax.enable_x64(True):
    want = debiased_reference(jnp.asarray(z), 0.01, 0.1, 1.0)
  with jax.default_matmul_precision("highest"):
    got = losses.debiased_loss(_f32(z), temperature=0.01, tau_plus=0.1, beta=1.0)
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_multiview_losses_reject_bad_arguments():
  z = _f32(_views(13))
  with pytest.raises(ValueError, match="2 views"):
    losses.ntxent_loss(z[:, :1], temperature=0.1)
  with pytest.raises(ValueError, match="variant"):
    losses.polyview_loss(z, temperature=0.1, variant="harmonic")
  with pytest.raises(ValueError, match="tau_plus"):
    losses.debiased_loss(z, temperature=0.1, tau_plus=1.0)
  with pytest.raises(ValueError, match="soft_weight"):
    losses.soft_contrastive_loss(z[:, 0], z[:, 1], MULTI_HOT, temperature=0.1, soft_weight=1.5)
