"""Gradient caching gives the un-chunked gradient, on one device and sharded."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_contrast import losses, microbatch, models, objectives, sharding
from big_contrast.state import Trainee

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import clip as clip_config


def _toy_apply(params, x, y):
  zi = x @ params["wi"]
  zt = jnp.tanh(y @ params["wt"])
  norm = lambda z: z / jnp.linalg.norm(z, axis=-1, keepdims=True)
  out = dict(zimg=norm(zi), ztxt=norm(zt), temperature=jnp.exp(params["log_t"]))
  return out, {"feature_mean": zi.mean(0)}


def _toy_loss(out, batch):
  del batch
  return losses.clip_loss(out["zimg"], out["ztxt"], temperature=out["temperature"])


@pytest.mark.parametrize("k", [2, 4, 8])
def test_microbatched_grads_equal_full_batch_on_one_device(k):
  rng = np.random.default_rng(0)
  params = dict(
    wi=jnp.asarray(rng.normal(size=(12, 8)), jnp.float32),
    wt=jnp.asarray(rng.normal(size=(6, 8)), jnp.float32),
    log_t=jnp.asarray(np.log(0.1), jnp.float32),
  )
  batch = dict(
    x=jnp.asarray(rng.normal(size=(32, 12)), jnp.float32),
    y=jnp.asarray(rng.normal(size=(32, 6)), jnp.float32),
  )
  with jax.default_matmul_precision("highest"):
    full = microbatch.loss_and_grads(_toy_apply, _toy_loss, params, batch, inputs=("x", "y"))
    chunked = microbatch.loss_and_grads(
      _toy_apply, _toy_loss, params, batch, inputs=("x", "y"), microbatches=k
    )
  np.testing.assert_allclose(chunked[0], full[0], rtol=1e-6)
  np.testing.assert_allclose(chunked[1]["zimg"], full[1]["zimg"], rtol=1e-6, atol=1e-7)
  for name in params:
    np.testing.assert_allclose(chunked[2][name], full[2][name], rtol=1e-5, atol=1e-7)


def test_microbatched_model_grads_equal_full_batch_on_8_devices():
  config = clip_config.get_config("digits")
  config.text.update(tokenizer="bytes", max_len=32)
  config.model.image.update(width=32, depth=1, heads=2, mlp_dim=64)
  config.model.text.update(width=32, depth=1, heads=2, mlp_dim=64)
  mesh = sharding.make_mesh(config.mesh)
  trainee = Trainee(config, mesh, vocab_size=259)
  state = trainee.init(0)
  rng = np.random.default_rng(1)
  b = 64
  host = dict(
    image=rng.normal(size=(b, 32, 32, 3)).astype(np.float32),
    text=rng.integers(3, 259, size=(b, 32)).astype(np.int32),
    text_id=rng.integers(0, 5, size=(b,)).astype(np.int32),
  )
  batch = sharding.host_batch_to_global(host, mesh)
  loss_fn = objectives.make_loss_fn(config.loss, mesh)
  apply_fn = lambda p, *xs: models.apply_and_update(trainee.graphdef, p, state["rest"], *xs)

  grads = jax.jit(
    lambda p, bt, k: microbatch.loss_and_grads(
      apply_fn,
      loss_fn,
      p,
      bt,
      inputs=("image", "text"),
      microbatches=k,
      batch_sharding=sharding.batch_sharding(mesh),
    ),
    static_argnums=2,
  )
  with jax.default_matmul_precision("highest"):
    loss1, _, g1, _ = grads(state["params"], batch, 1)
    loss4, _, g4, _ = grads(state["params"], batch, 4)
  np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
  flat1, flat4 = jax.tree.leaves(g1), jax.tree.leaves(g4)
  assert len(flat1) == len(flat4)
  for a, c in zip(flat1, flat4):
    np.testing.assert_allclose(c, a, rtol=2e-3, atol=2e-6)


def test_chunk_i_is_the_ith_block_of_every_devices_rows():
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
  n, k, c = 8, 3, 2  # 8 devices of b = 6 rows, 3 chunks of 2 rows each
  x = jax.device_put(jnp.arange(n * k * c), sharding.batch_sharding(mesh))
  for i in range(k):
    expected = [d * k * c + i * c + r for d in range(n) for r in range(c)]
    got = microbatch._take(x, jnp.int32(i), c, sharding.batch_sharding(mesh))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(microbatch._chunk(x, n, k)[i], expected)
  np.testing.assert_array_equal(microbatch._unchunk(microbatch._chunk(x, n, k), n), x)
