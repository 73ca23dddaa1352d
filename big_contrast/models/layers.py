"""Transformer building blocks shared by the image and text towers.

Parameters are kept in float32 (`param_dtype`); activations are computed in
`dtype` (bfloat16 on accelerators). Nothing here knows about losses or data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class MlpBlock(nnx.Module):
  """Transformer feed-forward block: Linear → GELU → Linear."""

  def __init__(self, width: int, mlp_dim: int, *, dtype, rngs: nnx.Rngs):
    init = nnx.initializers.xavier_uniform()
    self.fc1 = nnx.Linear(width, mlp_dim, kernel_init=init, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, width, kernel_init=init, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x)))


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout with an explicit key; the identity when `key` is None or rate is 0.

  The key is an argument (not an `nnx.Rngs` stream held in the model) so the
  train state stays dict(step, params, rest, opt_state) and a step's masks are a
  function of the key the trainer derives from (seed, step).
  """
  if key is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class EncoderBlock(nnx.Module):
  """Pre-LayerNorm transformer block: x + MHA(LN(x)); x + MLP(LN(x)).

  `dropout` > 0 drops the attention and MLP branch outputs before each residual
  add (BERT's hidden dropout), only when the call is given a `dropout_key`.
  """

  def __init__(
    self, width: int, heads: int, mlp_dim: int, *, dtype, dropout: float = 0.0, rngs: nnx.Rngs
  ):
    if width % heads:
      raise ValueError(f"model width {width} is not divisible by heads {heads}")
    self.ln1 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      num_heads=heads,
      in_features=width,
      qkv_features=width,
      kernel_init=nnx.initializers.xavier_uniform(),
      dtype=dtype,
      decode=False,
      deterministic=True,
      keep_rngs=False,
      rngs=rngs,
    )
    self.ln2 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.mlp = MlpBlock(width, mlp_dim, dtype=dtype, rngs=rngs)
    self.dropout = dropout

  def __call__(
    self, x: jax.Array, mask: jax.Array | None = None, dropout_key: jax.Array | None = None
  ) -> jax.Array:
    k1 = k2 = None
    if dropout_key is not None:
      k1, k2 = jax.random.split(dropout_key)
    x = x + dropout(self.attn(self.ln1(x), mask=mask), self.dropout, k1)
    return x + dropout(self.mlp(self.ln2(x)), self.dropout, k2)


class Encoder(nnx.Module):
  """A stack of `depth` encoder blocks and a final LayerNorm.

  With `remat=True` each block's activations are recomputed in the backward
  pass instead of stored (trading ~30% more compute for O(1)-in-depth memory).
  """

  def __init__(
    self,
    width: int,
    depth: int,
    heads: int,
    mlp_dim: int,
    *,
    dtype,
    remat: bool = False,
    dropout: float = 0.0,
    rngs: nnx.Rngs,
  ):
    self.blocks = nnx.List(
      [
        EncoderBlock(width, heads, mlp_dim, dtype=dtype, dropout=dropout, rngs=rngs)
        for _ in range(depth)
      ]
    )
    self.ln = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
    self.remat = remat

  def __call__(
    self, x: jax.Array, mask: jax.Array | None = None, dropout_key: jax.Array | None = None
  ) -> jax.Array:
    keys = (
      [None] * len(self.blocks)
      if dropout_key is None
      else list(jax.random.split(dropout_key, len(self.blocks)))
    )
    for block, key in zip(self.blocks, keys):
      if self.remat and key is None:
        x = nnx.remat(lambda b, y: b(y, mask))(block, x)
      elif self.remat:
        x = nnx.remat(lambda b, y, k: b(y, mask, k))(block, x, key)
      else:
        x = block(x, mask, key)
    return self.ln(x)


def sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sine-cosine position embedding, [height*width, dim]."""
  if dim % 4:
    raise ValueError(f"sincos position embedding needs width % 4 == 0, got {dim}")
  y, x = np.mgrid[:height, :width]
  omega = 1.0 / temperature ** (np.arange(dim // 4) / (dim // 4 - 1 or 1))
  y = y.reshape(-1)[:, None] * omega[None]
  x = x.reshape(-1)[:, None] * omega[None]
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], 1).astype(np.float32)


def dtype_from_name(name: str):
  try:
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]
  except KeyError:
    raise ValueError(
      f"config.model.dtype={name!r}: expected float32, bfloat16 or float16"
    ) from None


def image_input(images: jax.Array, dtype) -> jax.Array:
  """Pixels as the towers read them: `uint8` [0, 255] → [-1, 1] in `dtype`.

  The input pipeline ships `uint8` (a quarter of float32's bytes to the device)
  and this is where it becomes the models' [-1, 1] convention. Floating inputs
  are taken to be in [-1, 1] already (on-device augmentation, callers' own
  arrays) and are only cast.
  """
  if jnp.issubdtype(images.dtype, jnp.integer):
    images = images.astype(jnp.float32) * (2.0 / 255.0) - 1.0
  return images.astype(dtype)
