"""CLIP / SigLIP losses: dense float64 references, sharding, blockwise ring path."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from test_losses_support import (
  DEVICE_COUNTS,
  GLOBAL_B,
  assert_close_to_reference,
  assert_finite,
  mesh,
  normalized,
  sharded,
)

from big_contrast import losses

D = 8


# --- plain dense references over the global batch (run in float64) ---------


def clip_reference(zimg, ztxt, temperature, pair_ids=None):
  logits = zimg @ ztxt.T / temperature
  ids = jnp.arange(len(zimg)) if pair_ids is None else jnp.asarray(pair_ids)
  same = (ids[:, None] == ids[None, :]).astype(logits.dtype)
  targets = same / same.sum(axis=1, keepdims=True)  # symmetric: equal ids, equal counts
  image_to_text = jax.nn.logsumexp(logits, axis=1) - (targets * logits).sum(axis=1)
  text_to_image = jax.nn.logsumexp(logits, axis=0) - (targets * logits).sum(axis=0)
  return (image_to_text.mean() + text_to_image.mean()) / 2


def siglip_reference(zimg, ztxt, temperature, bias):
  logits = zimg @ ztxt.T / temperature + bias
  labels = 2 * jnp.eye(len(zimg)) - 1
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / len(zimg)


def clip_numpy_loop(zimg, ztxt, temperature):
  """Value only, textbook form: cross-entropy of each row and column."""
  s = zimg @ ztxt.T / temperature
  total = 0.0
  for i in range(len(s)):
    total += -np.log(np.exp(s[i, i]) / np.exp(s[i]).sum())
    total += -np.log(np.exp(s[i, i]) / np.exp(s[:, i]).sum())
  return total / (2 * len(s))


def _inputs(seed=0, b=GLOBAL_B):
  rng = np.random.default_rng(seed)
  return normalized(rng, b, D), normalized(rng, b, D)


def _clip(block_size=None, with_ids=False):
  if with_ids:
    return lambda zi, zt, ids, t, axis_name: losses.clip_loss(
      zi, zt, temperature=t, axis_name=axis_name, block_size=block_size, pair_ids=ids
    )
  return lambda zi, zt, t, axis_name: losses.clip_loss(
    zi, zt, temperature=t, axis_name=axis_name, block_size=block_size
  )


def _siglip(block_size=None):
  return lambda zi, zt, t, bias, axis_name: losses.siglip_loss(
    zi, zt, temperature=t, bias=bias, axis_name=axis_name, block_size=block_size
  )


DUPLICATE_IDS = np.array(
  [0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7, 8, 9, 9, 10, 11, 12, 12, 12, 13, 14, 15, 16]
)


# --- references themselves ---------------------------------------------------


def test_clip_reference_matches_textbook_loop():
  zi, zt = _inputs()
  with jax.enable_x64(True):
    ref = float(clip_reference(jnp.asarray(zi), jnp.asarray(zt), 0.1))
  np.testing.assert_allclose(ref, clip_numpy_loop(zi, zt, 0.1), rtol=1e-12)


# --- all-gather path ------------------------------------------------------------


@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_clip_loss_matches_dense(devices):
  zi, zt = _inputs()
  fn = sharded(_clip(), devices, batch_args=2, replicated_args=1)
  assert_close_to_reference(fn, clip_reference, (zi, zt, np.float32(0.07)), (0, 1, 2))


@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_clip_loss_with_pair_ids_matches_dense(devices):
  zi, zt = _inputs(1)
  fn = sharded(_clip(with_ids=True), devices, batch_args=3, replicated_args=1)
  ref = lambda zi, zt, ids, t: clip_reference(zi, zt, t, ids)
  assert_close_to_reference(fn, ref, (zi, zt, DUPLICATE_IDS, np.float32(0.1)), (0, 1, 3))


def test_clip_loss_with_distinct_pair_ids_is_clip():
  zi, zt = _inputs(2)
  ids = np.random.default_rng(0).permutation(1000)[:GLOBAL_B]
  with jax.default_matmul_precision("highest"):
    plain = losses.clip_loss(
      jnp.asarray(zi, jnp.float32), jnp.asarray(zt, jnp.float32), temperature=0.1
    )
    multi = losses.clip_loss(
      jnp.asarray(zi, jnp.float32),
      jnp.asarray(zt, jnp.float32),
      temperature=0.1,
      pair_ids=jnp.asarray(ids),
    )
  np.testing.assert_allclose(multi, plain, rtol=1e-6)


@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_siglip_loss_matches_dense(devices):
  zi, zt = _inputs(3)
  fn = sharded(_siglip(), devices, batch_args=2, replicated_args=2)
  assert_close_to_reference(
    fn, siglip_reference, (zi, zt, np.float32(0.1), np.float32(-10.0)), (0, 1, 2, 3)
  )


@pytest.mark.parametrize("block_size", [None, 5])
def test_clip_gradient_taken_inside_shard_map_matches_dense(block_size):
  """The trainer differentiates inside shard_map: local grads, psum-ed temperature grad."""
  zi, zt = _inputs(4)
  loss = _clip(block_size)

  def local_grads(zi, zt, t):
    return jax.grad(lambda *a: loss(*a, axis_name="data"), argnums=(0, 1, 2))(zi, zt, t)

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


# --- blockwise ring path ----------------------------------------------------------


# With b = 24, 12, 6, 3 rows per device: 4 divides 24 and 12 only, 5 divides none,
# and 4 > 3 makes a single, mostly padded block.
@pytest.mark.parametrize("block_size", [4, 5])
@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_blockwise_clip_loss_matches_dense(devices, block_size):
  zi, zt = _inputs(5)
  fn = sharded(_clip(block_size), devices, batch_args=2, replicated_args=1)
  assert_close_to_reference(fn, clip_reference, (zi, zt, np.float32(0.07)), (0, 1, 2))


@pytest.mark.parametrize("devices", [1, 4])
def test_sharded_blockwise_clip_loss_with_pair_ids_matches_dense(devices):
  zi, zt = _inputs(6)
  fn = sharded(_clip(5, with_ids=True), devices, batch_args=3, replicated_args=1)
  ref = lambda zi, zt, ids, t: clip_reference(zi, zt, t, ids)
  assert_close_to_reference(fn, ref, (zi, zt, DUPLICATE_IDS, np.float32(0.1)), (0, 1, 3))


@pytest.mark.parametrize("block_size", [4, 5])
@pytest.mark.parametrize("devices", DEVICE_COUNTS)
def test_sharded_blockwise_siglip_loss_matches_dense(devices, block_size):
  zi, zt = _inputs(7)
  fn = sharded(_siglip(block_size), devices, batch_args=2, replicated_args=2)
  assert_close_to_reference(
    fn, siglip_reference, (zi, zt, np.float32(0.1), np.float32(-10.0)), (0, 1, 2, 3)
  )


@pytest.mark.parametrize("devices", [1, 2])
def test_blockwise_custom_vjps_pass_check_grads(devices):
  """Numerical vs custom backward in float64, k not dividing b, with pair ids."""
  rng = np.random.default_rng(8)
  b = 6
  with jax.enable_x64(True):
    zi, zt = jnp.asarray(normalized(rng, b, 4)), jnp.asarray(normalized(rng, b, 4))
    ids = jnp.asarray([0, 0, 1, 2, 2, 3])
    clip = lambda zi, zt, ids, t, axis_name: losses.clip_loss(
      zi, zt, temperature=t, axis_name=axis_name, block_size=4, pair_ids=ids
    )
    clip = sharded(clip, devices, batch_args=3, replicated_args=1)
    jax.test_util.check_grads(
      lambda zi, zt, t: clip(zi, zt, ids, t), (zi, zt, jnp.float64(0.3)), order=1, modes=["rev"]
    )
    siglip = sharded(_siglip(4), devices, batch_args=2, replicated_args=2)
    jax.test_util.check_grads(
      siglip, (zi, zt, jnp.float64(0.3), jnp.float64(-1.0)), order=1, modes=["rev"]
    )


def test_blockwise_rejects_bad_block_size():
  zi, zt = _inputs()
  with pytest.raises(ValueError, match="block_size"):
    losses.clip_loss(zi, zt, temperature=0.1, block_size=0)


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
def test_clip_loss_at_extreme_logits_matches_dense(block_size):
  zi, zt = _extreme_inputs()
  fn = sharded(_clip(block_size), 2, batch_args=2, replicated_args=1)
  assert_close_to_reference(
    fn, clip_reference, (zi, zt, np.float32(0.01)), (0, 1, 2), rtol=1e-4, atol=1e-4
  )


@pytest.mark.parametrize("block_size", [None, 5])
def test_siglip_loss_at_extreme_logits_matches_dense(block_size):
  zi, zt = _extreme_inputs()
  fn = sharded(_siglip(block_size), 2, batch_args=2, replicated_args=2)
  assert_close_to_reference(
    fn,
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
  for t in (0.01, 0.07):
    clip = lambda a, b, t: losses.clip_loss(a, b, temperature=t, block_size=block_size)
    v, g = jax.jit(jax.value_and_grad(clip, argnums=(0, 1, 2)))(zi16, zt16, jnp.float32(t))
    assert_finite(v, g)
    assert g[0].dtype == jnp.bfloat16
    v32 = losses.clip_loss(jnp.asarray(zi), jnp.asarray(zt), temperature=t)
    np.testing.assert_allclose(v, v32, rtol=0.05, atol=0.05)
    siglip = lambda a, b, t, c: losses.siglip_loss(
      a, b, temperature=t, bias=c, block_size=block_size
    )
    v, g = jax.jit(jax.value_and_grad(siglip, argnums=(0, 1, 2, 3)))(
      zi16, zt16, jnp.float32(t), jnp.float32(-10.0)
    )
    assert_finite(v, g)


# --- temperature parametrisation ---------------------------------------------------


def test_temperature_parametrisation_matches_clip_and_siglip_recipes():
  clip_t = losses.temperature_from_log(
    losses.init_log_temperature("clip"), losses.min_temperature("clip")
  )
  np.testing.assert_allclose(clip_t, 0.07, rtol=1e-6)
  np.testing.assert_allclose(losses.temperature_from_log(np.log(1e-4)), 0.01, rtol=1e-6)
  siglip_t = losses.temperature_from_log(losses.init_log_temperature("siglip"), None)
  np.testing.assert_allclose(1.0 / siglip_t, 10.0, rtol=1e-6)
  assert losses.init_bias("siglip") == -10.0
  # Gradient flows above the clamp, stops below it (as CLIP's clamp does).
  grad = jax.grad(losses.temperature_from_log)
  np.testing.assert_allclose(grad(jnp.log(0.07)), 0.07, rtol=1e-6)
  assert grad(jnp.log(0.001)) == 0.0
  with pytest.raises(ValueError, match="kind"):
    losses.init_log_temperature("simclr")


@pytest.mark.parametrize("block_size", [None, 5])
def test_clip_loss_over_a_tuple_of_mesh_axes_matches_dense(block_size):
  """Batch split over two mesh axes at once: axis_name=("x", "y")."""
  zi, zt = _inputs(10)
  two_d = jax.make_mesh((2, 4), ("x", "y"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  fn = jax.jit(
    jax.shard_map(
      lambda zi, zt, t: losses.clip_loss(
        zi, zt, temperature=t, axis_name=("x", "y"), block_size=block_size
      ),
      mesh=two_d,
      in_specs=(P(("x", "y")), P(("x", "y")), P()),
      out_specs=P(),
    )
  )
  assert_close_to_reference(fn, clip_reference, (zi, zt, np.float32(0.07)), (0, 1, 2))
