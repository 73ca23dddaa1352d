"""Projection heads and the two model wrappers the trainer knows about.

`TwoTower`: image tower + text tower, each followed by a linear projection to a
shared space; returns L2-normalised embeddings and the learnable temperature
(and SigLIP bias).
`MultiView`: one image tower + an MLP projection head applied to V views at once.
`TextOnly`: one text tower + a linear projection; its training pass encodes each
sentence twice under independent dropout (SimCSE's two views).

Calling a wrapper (`model(...)`) is the training forward pass (BatchNorm uses
the batch's statistics); `image_features` / `encode_image` / `encode_text` are
the evaluation passes (BatchNorm uses its running averages). Image towers take
`train=` for this; towers without batch-dependent layers ignore it.
"""

from __future__ import annotations

import math

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from big_contrast import losses


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Row-wise L2 normalisation, computed in float32."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


class ProjectionMLP(nnx.Module):
  """SimCLR projection: (Linear → [BN] → ReLU) × (layers−1) → Linear. layers=1 is linear.

  batch_norm=True is SimCLR's head (Chen et al., 2020: BN after each hidden
  Linear, which then needs no bias); its statistics are global over the batch
  for the same reason as in `resnet.ResNet`.
  """

  def __init__(
    self,
    in_dim: int,
    hidden: int,
    out_dim: int,
    *,
    layers: int = 2,
    batch_norm: bool = False,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if layers < 1:
      raise ValueError(f"config.model.head_layers={layers} must be at least 1")
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    self.linears = nnx.List(
      [
        nnx.Linear(a, b, use_bias=(i < layers - 1 and not batch_norm), dtype=dtype, rngs=rngs)
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))
      ]
    )
    self.norms = (
      nnx.List(
        [nnx.BatchNorm(hidden, momentum=0.9, dtype=dtype, rngs=rngs) for _ in range(layers - 1)]
      )
      if batch_norm
      else None
    )

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    for i, lin in enumerate(self.linears):
      x = lin(x)
      if i < len(self.linears) - 1:
        if self.norms is not None:
          x = self.norms[i](x, use_running_average=not train)
        x = jax.nn.relu(x)
    return x


class TwoTower(nnx.Module):
  """(images [B,H,W,C], tokens [B,L]) → dict(zimg [B,D], ztxt [B,D], temperature[, bias]).

  image_proj=False: the image features are the embedding (SigLIP's MAP head
  output), so `embed_dim` must be the image tower's width. image_proj_bias,
  text_proj_bias: the projections have a bias (SigLIP's text head does).
  """

  def __init__(
    self,
    image: nnx.Module,
    text: nnx.Module,
    *,
    embed_dim: int,
    temperature_init: float = 0.07,
    min_temperature: float | None = 0.01,
    bias_init: float | None = None,
    image_proj: bool = True,
    image_proj_bias: bool = False,
    text_proj_bias: bool = False,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.image, self.text = image, text
    if image_proj:
      self.image_proj = nnx.Linear(
        image.width, embed_dim, use_bias=image_proj_bias, dtype=dtype, rngs=rngs
      )
    elif embed_dim != image.width:
      raise ValueError(
        f"config.model.image_proj=False needs embed_dim ({embed_dim}) = the image width "
        f"({image.width})"
      )
    else:
      self.image_proj = None
    self.text_proj = nnx.Linear(
      text.width, embed_dim, use_bias=text_proj_bias, dtype=dtype, rngs=rngs
    )
    self.log_temperature = nnx.Param(jnp.asarray(math.log(temperature_init), jnp.float32))
    self.min_temperature = min_temperature
    self.bias = None if bias_init is None else nnx.Param(jnp.asarray(bias_init, jnp.float32))

  def image_features(self, images: jax.Array) -> jax.Array:
    """Backbone features [B, width], before the projection: what probes read."""
    return self.image(images, train=False).astype(jnp.float32)

  def image_block_features(self, images: jax.Array, last_blocks: int) -> jax.Array:
    """[B, last_blocks, width]: the last blocks' pooled features ([:, -1] = image_features)."""
    return self.image.block_features(images, last_blocks).astype(jnp.float32)

  def encode_image(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    x = self.image(images, train=train)
    return l2_normalize(x if self.image_proj is None else self.image_proj(x))

  def encode_text(self, tokens: jax.Array) -> jax.Array:
    return l2_normalize(self.text_proj(self.text(tokens)))

  def temperature(self) -> jax.Array:
    # No clamp here: the trainer clamps the parameter at log(min_temperature) after
    # each update (`losses.clamp_log_temperature`), so the gradient never vanishes.
    return losses.temperature_from_log(self.log_temperature[...])

  def __call__(self, images: jax.Array, tokens: jax.Array) -> dict[str, jax.Array]:
    out = dict(
      zimg=self.encode_image(images, train=True),
      ztxt=self.encode_text(tokens),
      temperature=self.temperature(),
    )
    if self.bias is not None:
      out["bias"] = self.bias[...]
    return out


class MultiView(nnx.Module):
  """views [B, V, H, W, C] → dict(z [B, V, D]) through one shared encoder and head.

  head_hidden: the head's hidden width (default 2 × embed_dim). head_layers=0:
  no head, the embedding is the tower's features (an imported DINOv2 backbone),
  and `embed_dim` must be the tower's width.
  """

  def __init__(
    self,
    image: nnx.Module,
    *,
    embed_dim: int,
    head_hidden: int | None = None,
    head_layers: int = 2,
    head_batch_norm: bool = False,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.image = image
    if head_layers == 0:
      if embed_dim != image.width:
        raise ValueError(
          f"config.model.head_layers=0 needs embed_dim ({embed_dim}) = the image width "
          f"({image.width})"
        )
      self.head = None
      return
    self.head = ProjectionMLP(
      image.width,
      head_hidden or 2 * embed_dim,
      embed_dim,
      layers=head_layers,
      batch_norm=head_batch_norm,
      dtype=dtype,
      rngs=rngs,
    )

  def image_features(self, images: jax.Array) -> jax.Array:
    return self.image(images, train=False).astype(jnp.float32)

  def image_block_features(self, images: jax.Array, last_blocks: int) -> jax.Array:
    return self.image.block_features(images, last_blocks).astype(jnp.float32)

  def encode_image(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    x = self.image(images, train=train)
    return l2_normalize(x if self.head is None else self.head(x, train=train))

  def __call__(self, views: jax.Array) -> dict[str, jax.Array]:
    # All B·V views go through the encoder as one batch, so BatchNorm statistics
    # are taken over every view of every example, as in SimCLR.
    b, v = views.shape[:2]
    z = self.encode_image(einops.rearrange(views, "b v h w c -> (b v) h w c"), train=True)
    return dict(z=einops.rearrange(z, "(b v) d -> b v d", b=b, v=v))


class TextOnly(nnx.Module):
  """tokens [B, L] (+ dropout_key) → dict(z [B, 2, D]): two dropout views per sentence.

  SimCSE (Gao et al., 2021): the only augmentation is dropout noise, so both
  views see the same tokens. The batch is repeated row-wise (row 2i and 2i+1 are
  sentence i) and encoded in one call with one key: every row gets its own
  masks, and each device keeps its own sentences. Without a key (or with
  dropout 0) the two views are identical.
  """

  def __init__(self, text: nnx.Module, *, embed_dim: int, dtype=jnp.float32, rngs: nnx.Rngs):
    self.text = text
    self.text_proj = nnx.Linear(text.width, embed_dim, use_bias=False, dtype=dtype, rngs=rngs)

  def text_features(self, tokens: jax.Array) -> jax.Array:
    """Backbone features [B, width], before the projection."""
    return self.text(tokens).astype(jnp.float32)

  def encode_text(self, tokens: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
    return l2_normalize(self.text_proj(self.text(tokens, dropout_key)))

  def __call__(
    self, tokens: jax.Array, dropout_key: jax.Array | None = None
  ) -> dict[str, jax.Array]:
    b = tokens.shape[0]
    z = self.encode_text(jnp.repeat(tokens, 2, axis=0), dropout_key)
    return dict(z=z.reshape(b, 2, -1))
