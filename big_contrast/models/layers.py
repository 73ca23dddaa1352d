"""Transformer building blocks shared by the image and text towers.

Parameters are kept in float32 (`param_dtype`); activations are computed in
`dtype` (bfloat16 on accelerators). Nothing here knows about losses or data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _quick_gelu(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(1.702 * x)


# The MLP nonlinearities of the published towers: the tanh approximation of GELU
# (big_vision, SigLIP; `gelu_pytorch_tanh` in Hugging Face), the exact erf form
# (torch's `nn.GELU()`: OpenCLIP's own models, DINOv2), and OpenAI CLIP's
# `x * sigmoid(1.702 x)`.
ACTIVATIONS = {
  "gelu_tanh": jax.nn.gelu,
  "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
  "quick_gelu": _quick_gelu,
}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"act={name!r}: expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class MlpBlock(nnx.Module):
  """Transformer feed-forward block: Linear → activation (`act`, default tanh GELU) → Linear."""

  def __init__(self, width: int, mlp_dim: int, *, dtype, act: str = "gelu_tanh", rngs: nnx.Rngs):
    init = nnx.initializers.xavier_uniform()
    self.fc1 = nnx.Linear(width, mlp_dim, kernel_init=init, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, width, kernel_init=init, dtype=dtype, rngs=rngs)
    activation(act)
    self.act = act

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(ACTIVATIONS[self.act](self.fc1(x)))


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
  `layerscale` (CaiT, DINOv2): each branch output is multiplied by a learned
  per-channel scale `ls1` / `ls2` initialised to this value; None: no scale.
  `ln_eps`: the LayerNorms' epsilon (1e-6 as in big_vision; torch's default 1e-5
  for OpenCLIP and Hugging Face CLIP). `act`: the MLP's nonlinearity.
  """

  def __init__(
    self,
    width: int,
    heads: int,
    mlp_dim: int,
    *,
    dtype,
    dropout: float = 0.0,
    act: str = "gelu_tanh",
    ln_eps: float = 1e-6,
    layerscale: float | None = None,
    rngs: nnx.Rngs,
  ):
    if width % heads:
      raise ValueError(f"model width {width} is not divisible by heads {heads}")
    self.ln1 = nnx.LayerNorm(width, epsilon=ln_eps, dtype=dtype, rngs=rngs)
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
    self.ln2 = nnx.LayerNorm(width, epsilon=ln_eps, dtype=dtype, rngs=rngs)
    self.mlp = MlpBlock(width, mlp_dim, dtype=dtype, act=act, rngs=rngs)
    self.dropout = dropout
    if layerscale is not None:
      self.ls1 = nnx.Param(jnp.full((width,), layerscale, jnp.float32))
      self.ls2 = nnx.Param(jnp.full((width,), layerscale, jnp.float32))
    self.layerscale = layerscale is not None

  def _scale(self, y: jax.Array, name: str) -> jax.Array:
    return y * getattr(self, name)[...].astype(y.dtype) if self.layerscale else y

  def __call__(
    self, x: jax.Array, mask: jax.Array | None = None, dropout_key: jax.Array | None = None
  ) -> jax.Array:
    k1 = k2 = None
    if dropout_key is not None:
      k1, k2 = jax.random.split(dropout_key)
    x = x + dropout(self._scale(self.attn(self.ln1(x), mask=mask), "ls1"), self.dropout, k1)
    return x + dropout(self._scale(self.mlp(self.ln2(x)), "ls2"), self.dropout, k2)


class Encoder(nnx.Module):
  """A stack of `depth` encoder blocks and a final LayerNorm.

  With `remat=True` each block's activations are recomputed in the backward
  pass instead of stored (trading ~30% more compute for O(1)-in-depth memory).
  `act`, `ln_eps`, `layerscale`: as in `EncoderBlock` (`ln_eps` also for the final norm).
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
    act: str = "gelu_tanh",
    ln_eps: float = 1e-6,
    layerscale: float | None = None,
    rngs: nnx.Rngs,
  ):
    block = dict(dtype=dtype, dropout=dropout, act=act, ln_eps=ln_eps, layerscale=layerscale)
    self.blocks = nnx.List(
      [EncoderBlock(width, heads, mlp_dim, **block, rngs=rngs) for _ in range(depth)]
    )
    self.ln = nnx.LayerNorm(width, epsilon=ln_eps, dtype=dtype, rngs=rngs)
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

  def last_outputs(self, x: jax.Array, n: int, mask: jax.Array | None = None) -> list[jax.Array]:
    """The outputs of the last `n` blocks, each through the final LayerNorm, oldest first.

    The last is `self(x)`; the others are what DINO's linear evaluation concatenates
    (`get_intermediate_layers`: every one of the last n blocks, normed). For frozen
    evaluation: no dropout, no rematerialisation.
    """
    if not 1 <= n <= len(self.blocks):
      raise ValueError(f"last_outputs: n={n} must be in [1, {len(self.blocks)}], the depth")
    outs = []
    for i, block in enumerate(self.blocks):
      x = block(x, mask)
      if i >= len(self.blocks) - n:
        outs.append(self.ln(x))
    return outs


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


def image_input(images: jax.Array, dtype, mean=None, std=None) -> jax.Array:
  """Pixels as the towers read them: `uint8` [0, 255] → [-1, 1] in `dtype`.

  The input pipeline ships `uint8` (a quarter of float32's bytes to the device)
  and this is where it becomes the models' [-1, 1] convention. Floating inputs
  are taken to be in [-1, 1] already (on-device augmentation, callers' own
  arrays) and are only cast.

  mean, std: per-channel statistics of pixels in [0, 1] (e.g. OpenAI CLIP's or
  ImageNet's), or None. When given, the tower reads `(pixel / 255 - mean) / std`
  instead, the normalisation a pretrained source was trained with; a float
  input in [-1, 1] is first mapped back to [0, 1].
  """
  if mean is None and std is None:
    if jnp.issubdtype(images.dtype, jnp.integer):
      images = images.astype(jnp.float32) * (2.0 / 255.0) - 1.0
    return images.astype(dtype)
  if mean is None or std is None:
    raise ValueError("image mean and std are set together (both None: pixels in [-1, 1])")
  if jnp.issubdtype(images.dtype, jnp.integer):
    x = images.astype(jnp.float32) / 255.0
  else:
    x = (images.astype(jnp.float32) + 1.0) * 0.5
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
  return ((x - mean) / std).astype(dtype)


def resample_grid(table: np.ndarray, grid: int) -> np.ndarray:
  """A square grid of position embeddings [1, g*g, D] resampled to [1, grid*grid, D].

  Antialiased bicubic (Keys' kernel with a = -0.5, the support widened by the
  scale when shrinking; weights normalised per output), which is what timm's
  `resample_abs_pos_embed` computes through torch's `interpolate(mode='bicubic',
  antialias=True)` when a DINOv2 or CLIP ViT is loaded at another resolution.
  """
  table = np.asarray(table, np.float32)
  n, dim = table.shape[1], table.shape[2]
  old = int(round(np.sqrt(n)))
  if old * old != n:
    raise ValueError(f"position table of {n} entries is not a square grid")
  if old == grid:
    return table
  w = _aa_bicubic_weights(old, grid)  # [grid, old]
  g = table.reshape(old, old, dim).astype(np.float64)
  g = np.einsum("ij,jxd->ixd", w, g)  # rows
  g = np.einsum("ij,yjd->yid", w, g)  # columns
  return g.reshape(1, grid * grid, dim).astype(np.float32)


def _aa_bicubic_weights(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] interpolation matrix of antialiased bicubic resampling."""

  def cubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(
      x < 1,
      ((a + 2) * x - (a + 3)) * x * x + 1,
      np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0),
    )

  scale = size_in / size_out
  support = 2.0 * max(scale, 1.0)
  inv = 1.0 / max(scale, 1.0)
  out = np.zeros((size_out, size_in))
  for i in range(size_out):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), size_in)
    j = np.arange(lo, hi)
    w = cubic((j - center + 0.5) * inv)
    out[i, lo:hi] = w / w.sum()
  return out
