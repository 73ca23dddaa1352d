"""CLIP (plain, multi-positive, label-smoothed, decoupled, momentum keys), SigLIP and SimCSE."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from test_losses_support import (
  GLOBAL_B,
  assert_close_to_reference,
  assert_finite,
  mesh,
  normalized,
  sharded,
)

from big_contrast import losses

D = 8


# --- references (run in float64) ----------------------------------------------------


def _targets(ids, label_smoothing=0.0):
  same = (ids[:, None] == ids[None, :]).astype(jnp.float64)
  t = same / same.sum(axis=1, keepdims=True)
  return (1 - label_smoothing) * t + label_smoothing / len(ids)


def clip_reference(zimg, ztxt, temperature, pair_ids=None, label_smoothing=0.0):
  """Both directions' cross-entropy; with ε as torch's F.cross_entropy(label_smoothing=ε)
  (the target (1-ε)·onehot + ε/C), which clip-rocket's CL2LLoss uses."""
  logits = zimg @ ztxt.T / temperature
  ids = jnp.arange(len(zimg)) if pair_ids is None else jnp.asarray(pair_ids)
  t = _targets(ids, label_smoothing)  # symmetric: equal ids, equal counts
  image_to_text = -jnp.sum(t * jax.nn.log_softmax(logits, axis=1), axis=1)
  text_to_image = -jnp.sum(t.T * jax.nn.log_softmax(logits, axis=0), axis=0)
  return (image_to_text.mean() + text_to_image.mean()) / 2


def clip_decoupled_reference(zimg, ztxt, temperature, pair_ids):
  """nilesh2797/DEXML losses.py 'decoupled-softmax' in both directions."""
  ids = jnp.asarray(pair_ids)
  pos = ids[:, None] == ids[None, :]

  def one_way(sim, pos):
    log_denom = jax.nn.logsumexp(jnp.where(pos, -jnp.inf, sim), axis=1)
    log_prob = sim - jnp.logaddexp(log_denom[:, None], sim)
    return jnp.mean(-jnp.sum(jnp.where(pos, log_prob, 0.0), axis=1) / pos.sum(1))

  logits = zimg @ ztxt.T / temperature
  return (one_way(logits, pos) + one_way(logits.T, pos.T)) / 2


def moco_ctr(q, k, temperature):
  """MoCo v3 moco/builder.py `contrastive_loss`, without its 2τ factor."""
  logits = q @ jax.lax.stop_gradient(k).T / temperature
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diag(logits))


def clip_keys_reference(zimg, ztxt, kimg, ktxt, temperature):
  return (moco_ctr(zimg, ktxt, temperature) + moco_ctr(ztxt, kimg, temperature)) / 2


def ntxent_keys_reference(z, keys, temperature):
  """MoCo v3 with two views: ctr(q1, k2) + ctr(q2, k1)."""
  return moco_ctr(z[:, 0], keys[:, 1], temperature) + moco_ctr(z[:, 1], keys[:, 0], temperature)


def siglip_reference(zimg, ztxt, temperature, bias):
  logits = zimg @ ztxt.T / temperature + bias
  labels = 2 * jnp.eye(len(zimg)) - 1
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / len(zimg)


def simcse_reference(z, temperature):
  """princeton-nlp/SimCSE simcse/models.py cl_forward: CrossEntropy(cos(z1, z2ᵀ)/τ, arange)."""
  cos_sim = z[:, 0] @ z[:, 1].T / temperature
  return jnp.mean(jax.nn.logsumexp(cos_sim, axis=1) - jnp.diag(cos_sim))


def clip_numpy_loop(zimg, ztxt, temperature):
  """Value only, textbook form: cross-entropy of each row and column."""
  s = zimg @ ztxt.T / temperature
  total = 0.0
  for i in range(len(s)):
    total += -np.log(np.exp(s[i, i]) / np.exp(s[i]).sum())
    total += -np.log(np.exp(s[i, i]) / np.exp(s[:, i]).sum())
  return total / (2 * len(s))


# --- inputs and sharded cases (run by test_losses_sharded.py) ------------------------


def _inputs(seed=0, b=GLOBAL_B):
  rng = np.random.default_rng(seed)
  return normalized(rng, b, D), normalized(rng, b, D)


DUPLICATE_IDS = np.array(
  [0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7, 8, 9, 9, 10, 11, 12, 12, 12, 13, 14, 15, 16]
)
T = np.float32(0.1)


def _clip(**kw):
  return lambda zi, zt, t, axis_name, block_size: losses.clip_loss(
    zi, zt, temperature=t, axis_name=axis_name, block_size=block_size, **kw
  )


def _clip_ids(**kw):
  return lambda zi, zt, ids, t, axis_name, block_size: losses.clip_loss(
    zi, zt, temperature=t, axis_name=axis_name, block_size=block_size, pair_ids=ids, **kw
  )


_KEYS = normalized(np.random.default_rng(40), GLOBAL_B, 2, D)

CASES = {
  "clip": (_clip(), clip_reference, (*_inputs(30), np.float32(0.07)), (0, 1, 2), 2),
  "clip_pair_ids": (
    _clip_ids(),
    lambda zi, zt, ids, t: clip_reference(zi, zt, t, ids),
    (*_inputs(31), DUPLICATE_IDS, T),
    (0, 1, 3),
    3,
  ),
  "clip_label_smoothing": (
    _clip_ids(label_smoothing=0.1),
    lambda zi, zt, ids, t: clip_reference(zi, zt, t, ids, label_smoothing=0.1),
    (*_inputs(32), DUPLICATE_IDS, T),
    (0, 1, 3),
    3,
  ),
  "clip_decoupled": (
    _clip_ids(decoupled=True),
    lambda zi, zt, ids, t: clip_decoupled_reference(zi, zt, t, ids),
    (*_inputs(33), DUPLICATE_IDS, T),
    (0, 1, 3),
    3,
  ),
  "clip_momentum_keys": (
    lambda zi, zt, ki, kt, t, axis_name, block_size: losses.clip_loss(
      zi, zt, temperature=t, axis_name=axis_name, block_size=block_size, keys=(ki, kt)
    ),
    clip_keys_reference,
    (*_inputs(34), _KEYS[:, 0], _KEYS[:, 1], T),
    (0, 1, 4),
    4,
  ),
  "ntxent_momentum_keys": (
    lambda z, k, t, axis_name, block_size: losses.ntxent_loss(
      z, temperature=t, axis_name=axis_name, block_size=block_size, keys=k, sum_over_views=True
    ),
    ntxent_keys_reference,
    (normalized(np.random.default_rng(35), GLOBAL_B, 2, D), _KEYS, T),
    (0, 2),
    2,
  ),
  "siglip": (
    lambda zi, zt, t, bias, axis_name, block_size: losses.siglip_loss(
      zi, zt, temperature=t, bias=bias, axis_name=axis_name, block_size=block_size
    ),
    siglip_reference,
    (*_inputs(36), T, np.float32(-10.0)),
    (0, 1, 2, 3),
    2,
  ),
  "simcse": (
    lambda z, t, axis_name, block_size: losses.simcse_loss(
      z, temperature=t, axis_name=axis_name, block_size=block_size
    ),
    simcse_reference,
    (normalized(np.random.default_rng(37), GLOBAL_B, 2, D), np.float32(0.05)),
    (0,),
    1,
  ),
}


# --- references themselves and reductions -------------------------------------------


def test_clip_reference_matches_textbook_loop():
  zi, zt = _inputs()
  with jax.enable_x64(True):
    ref = float(clip_reference(jnp.asarray(zi), jnp.asarray(zt), 0.1))
  np.testing.assert_allclose(ref, clip_numpy_loop(zi, zt, 0.1), rtol=1e-12)


def test_clip_variants_reduce_to_plain_clip():
  """Distinct ids: multi-positive and decoupled are plain CLIP; SimCSE symmetric is CLIP too."""
  zi, zt = (jnp.asarray(x, jnp.float32) for x in _inputs(2))
  ids = jnp.asarray(np.random.default_rng(0).permutation(1000)[:GLOBAL_B])
  with jax.default_matmul_precision("highest"):
    plain = losses.clip_loss(zi, zt, temperature=0.1)
    for kw in (dict(pair_ids=ids), dict(pair_ids=ids, decoupled=True), dict(keys=(zi, zt))):
      np.testing.assert_allclose(losses.clip_loss(zi, zt, temperature=0.1, **kw), plain, rtol=1e-6)
    simcse = losses.simcse_loss(jnp.stack([zi, zt], 1), temperature=0.1, symmetric=True)
  np.testing.assert_allclose(simcse, plain, rtol=1e-6)


def test_label_smoothing_matches_torch_cross_entropy_formula():
  """(1-ε)·NLL + ε·mean_c(-log p_c), per direction, as torch defines label smoothing."""
  zi, zt = _inputs(3)
  with jax.enable_x64(True):
    logits = jnp.asarray(zi) @ jnp.asarray(zt).T / 0.1
    logp_r, logp_c = jax.nn.log_softmax(logits, 1), jax.nn.log_softmax(logits, 0).T
    torch_like = lambda lp: jnp.mean(-0.9 * jnp.diag(lp) - 0.1 * lp.mean(1))
    want = (torch_like(logp_r) + torch_like(logp_c)) / 2
  with jax.default_matmul_precision("highest"):
    got = losses.clip_loss(
      jnp.asarray(zi, jnp.float32),
      jnp.asarray(zt, jnp.float32),
      temperature=0.1,
      label_smoothing=0.1,
    )
  np.testing.assert_allclose(got, want, rtol=2e-6)


def test_momentum_keys_get_no_gradient():
  zi, zt = (jnp.asarray(x, jnp.float32) for x in _inputs(4))
  for k in (None, 5):
    g = jax.grad(
      lambda ki, kt, k=k: losses.clip_loss(zi, zt, temperature=0.1, keys=(ki, kt), block_size=k),
      argnums=(0, 1),
    )(zi, zt)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in g)


@pytest.mark.parametrize("block_size", [None, 5])
def test_clip_gradient_taken_inside_shard_map_matches_dense(block_size):
  """The trainer differentiates inside shard_map: local grads, psum-ed temperature grad."""
  zi, zt = _inputs(5)

  def local_grads(zi, zt, t):
    loss = lambda *a: losses.clip_loss(
      *a[:2], temperature=a[2], axis_name="data", block_size=block_size
    )
    return jax.grad(loss, argnums=(0, 1, 2))(zi, zt, t)

  fn = jax.jit(
    jax.shard_map(
      local_grads,
      mesh=mesh(4),
      in_specs=(P("data"), P("data"), P()),
      out_specs=(P("data"), P("data"), P()),
    )
  )
  with jax.default_matmul_precision("highest"):
    got = fn(jnp.asarray(zi, jnp.float32), jnp.asarray(zt, jnp.float32), jnp.float32(0.1))
  with jax.enable_x64(True):
    want = jax.grad(clip_reference, argnums=(0, 1, 2))(jnp.asarray(zi), jnp.asarray(zt), 0.1)
  for x, y in zip(got, want):
    np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("devices", [1, 2])
def test_blockwise_custom_vjps_pass_check_grads(devices):
  """Numerical vs custom backward in float64, k not dividing b: both layouts, shifts, pair ids."""
  rng = np.random.default_rng(8)
  b = 6
  with jax.enable_x64(True):
    zi, zt = jnp.asarray(normalized(rng, b, 4)), jnp.asarray(normalized(rng, b, 4))
    ids = jnp.asarray([0, 0, 1, 2, 2, 3])
    clip = lambda zi, zt, ids, t, axis_name: losses.clip_loss(
      zi, zt, temperature=t, axis_name=axis_name, block_size=4, pair_ids=ids, decoupled=True
    )
    clip = sharded(clip, devices, batch_args=3, replicated_args=1)
    jax.test_util.check_grads(
      lambda zi, zt, t: clip(zi, zt, ids, t), (zi, zt, jnp.float64(0.3)), order=1, modes=["rev"]
    )
    siglip = lambda zi, zt, t, bias, axis_name: losses.siglip_loss(
      zi, zt, temperature=t, bias=bias, axis_name=axis_name, block_size=4
    )
    siglip = sharded(siglip, devices, batch_args=2, replicated_args=2)
    jax.test_util.check_grads(
      siglip, (zi, zt, jnp.float64(0.3), jnp.float64(-1.0)), order=1, modes=["rev"]
    )
    z = jnp.stack([zi, zt, zi[::-1]], axis=1)
    dclw = lambda z, t, axis_name: losses.dcl_loss(
      z, temperature=t, axis_name=axis_name, block_size=4, vmf_sigma=0.5
    )
    jax.test_util.check_grads(
      sharded(dclw, devices, batch_args=1, replicated_args=1),
      (z, jnp.float64(0.3)),
      order=1,
      modes=["rev"],
    )


def test_blockwise_rejects_bad_block_size():
  zi, zt = _inputs()
  for bad in (0, 2.5, True):
    with pytest.raises(ValueError, match="block_size"):
      losses.clip_loss(zi, zt, temperature=0.1, block_size=bad)
  with pytest.raises(ValueError, match="label_smoothing"):
    losses.clip_loss(zi, zt, temperature=0.1, label_smoothing=1.0)


# --- numerics ------------------------------------------------------------------


def _extreme_inputs():
  """Cosines near +1 for pairs and near -1 for some negatives."""
  rng = np.random.default_rng(9)
  zi = normalized(rng, GLOBAL_B, D)
  zt = zi + 1e-3 * rng.normal(size=zi.shape)
  zt /= np.linalg.norm(zt, axis=-1, keepdims=True)
  zt[1::4] = -zi[0::4]  # text 4k+1 points exactly away from image 4k
  return zi, zt


@pytest.mark.parametrize("block_size", [None, 5])
def test_image_text_losses_at_extreme_logits_match_dense(block_size):
  zi, zt = _extreme_inputs()
  clip = lambda zi, zt, t, axis_name: losses.clip_loss(
    zi, zt, temperature=t, axis_name=axis_name, block_size=block_size
  )
  assert_close_to_reference(
    sharded(clip, 2, batch_args=2, replicated_args=1),
    clip_reference,
    (zi, zt, np.float32(0.01)),
    (0, 1, 2),
    rtol=1e-4,
    atol=1e-4,
  )
  siglip = lambda zi, zt, t, c, axis_name: losses.siglip_loss(
    zi, zt, temperature=t, bias=c, axis_name=axis_name, block_size=block_size
  )
  assert_close_to_reference(
    sharded(siglip, 2, batch_args=2, replicated_args=2),
    siglip_reference,
    (zi, zt, np.float32(0.01), np.float32(-10.0)),
    (0, 1, 2, 3),
    rtol=1e-4,
    atol=1e-4,
  )


@pytest.mark.parametrize("block_size", [None, 5])
def test_image_text_losses_with_bf16_inputs_are_finite(block_size):
  zi, zt = _extreme_inputs()
  zi16, zt16 = jnp.asarray(zi, jnp.bfloat16), jnp.asarray(zt, jnp.bfloat16)
  clip = jax.jit(
    jax.value_and_grad(
      lambda a, b, t: losses.clip_loss(
        a,
        b,
        temperature=t,
        block_size=block_size,
        pair_ids=jnp.asarray(DUPLICATE_IDS),
        label_smoothing=0.1,
      ),
      argnums=(0, 1, 2),
    )
  )
  siglip = jax.jit(
    jax.value_and_grad(
      lambda a, b, t, c: losses.siglip_loss(a, b, temperature=t, bias=c, block_size=block_size),
      argnums=(0, 1, 2, 3),
    )
  )
  for t in (0.01, 0.07):
    v, g = clip(zi16, zt16, jnp.float32(t))
    assert_finite(v, g)
    assert g[0].dtype == jnp.bfloat16
    v, g = siglip(zi16, zt16, jnp.float32(t), jnp.float32(-10.0))
    assert_finite(v, g)


# --- temperature parametrisation ---------------------------------------------------


def test_temperature_parametrisation_matches_clip_and_siglip_recipes():
  clip_t = losses.temperature_from_log(losses.init_log_temperature("clip"))
  np.testing.assert_allclose(clip_t, 0.07, rtol=1e-6)
  siglip_t = losses.temperature_from_log(losses.init_log_temperature("siglip"))
  np.testing.assert_allclose(1.0 / siglip_t, 10.0, rtol=1e-6)
  assert losses.init_bias("siglip") == -10.0
  assert losses.min_temperature("clip") == 0.01 and losses.min_temperature("siglip") is None
  # The parameter is clamped after the update, not the temperature in the forward pass:
  # at (and below) the floor the gradient is still there, so the parameter can rise again.
  floor = np.log(losses.min_temperature("clip"))
  np.testing.assert_allclose(losses.clamp_log_temperature(np.log(1e-4), 0.01), floor, rtol=1e-6)
  assert float(losses.clamp_log_temperature(np.log(0.05), 0.01)) == pytest.approx(np.log(0.05))
  assert float(losses.clamp_log_temperature(-9.0, None)) == -9.0
  grad = jax.grad(losses.temperature_from_log)
  np.testing.assert_allclose(grad(jnp.float32(floor)), 0.01, rtol=1e-5)
  with pytest.raises(ValueError, match="kind"):
    losses.init_log_temperature("simclr")
