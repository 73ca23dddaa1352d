"""CLIP-style text Transformer tower (Radford et al., 2021).

Token ids [B, L] with pad id 0 → features [B, width]. `causal=True` masks future
tokens as CLIP does; `pool='eos'` takes the last non-pad token (the tokenizer
appends EOS), `pool='mean'` averages the non-pad tokens. `dropout` > 0 (SimCSE)
drops the embeddings and each block's branch outputs, only in calls given a
`dropout_key`; evaluation calls pass none and are deterministic.

For pretrained towers (`big_contrast.interop`): `mask_pad=False` attends over
pad tokens as OpenCLIP, Hugging Face CLIP and SigLIP do (CLIP's causal mask
already hides the pads that follow its end-of-text token; SigLIP pads with EOS
and reads the last position); `pool='argmax'` takes the position of the largest
id (OpenCLIP's and Hugging Face CLIP's end-of-text token, the last id of their
vocabulary); `pool='last'` the last position (SigLIP, big_vision). `act` and
`ln_eps` as in `layers.EncoderBlock`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from big_contrast.models import layers

POOLS = ("eos", "mean", "argmax", "last")


class TextTransformer(nnx.Module):
  def __init__(
    self,
    *,
    vocab_size: int,
    max_len: int,
    width: int,
    depth: int,
    heads: int,
    mlp_dim: int | None = None,
    causal: bool = True,
    pool: str = "eos",
    pad_id: int = 0,
    mask_pad: bool = True,
    act: str = "gelu_tanh",
    ln_eps: float = 1e-6,
    dtype="float32",
    remat: bool = False,
    dropout: float = 0.0,
    rngs: nnx.Rngs,
  ):
    if pool not in POOLS:
      raise ValueError(f"text pool={pool!r}: expected one of {POOLS}")
    if pool in ("eos", "mean") and not mask_pad:
      raise ValueError(f"text pool={pool!r} reads the pad mask: it needs mask_pad=True")
    self.dtype = layers.dtype_from_name(dtype) if isinstance(dtype, str) else dtype
    self.width, self.causal, self.pool, self.pad_id = width, causal, pool, pad_id
    self.mask_pad = mask_pad
    self.tok = nnx.Embed(
      vocab_size, width, embedding_init=nnx.initializers.normal(0.02), dtype=self.dtype, rngs=rngs
    )
    self.pos = nnx.Param(nnx.initializers.normal(0.01)(rngs.params(), (1, max_len, width)))
    self.encoder = layers.Encoder(
      width,
      depth,
      heads,
      mlp_dim or 4 * width,
      dtype=self.dtype,
      remat=remat,
      dropout=dropout,
      act=act,
      ln_eps=ln_eps,
      rngs=rngs,
    )
    self.dropout = dropout

  def token_features(self, tokens: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
    """Token ids [B, L] → per-token outputs [B, L, width], before pooling."""
    length = tokens.shape[1]
    valid = tokens != self.pad_id  # [B, L]
    x = self.tok(tokens) + self.pos[:, :length].astype(self.dtype)
    k_embed = k_encoder = None
    if dropout_key is not None:
      k_embed, k_encoder = jax.random.split(dropout_key)
    x = layers.dropout(x, self.dropout, k_embed)
    if not self.mask_pad:
      mask = nnx.make_causal_mask(tokens) if self.causal else None
      return self.encoder(x, mask=mask, dropout_key=k_encoder)
    mask = nnx.make_attention_mask(valid, valid)  # [B, 1, L, L]
    if self.causal:
      mask = nnx.combine_masks(mask, nnx.make_causal_mask(tokens))
    # A row with no valid key (padding query) would softmax over nothing: let
    # it attend to itself; its output is never pooled.
    mask = jnp.logical_or(mask, jnp.eye(length, dtype=bool)[None, None])
    return self.encoder(x, mask=mask, dropout_key=k_encoder)

  def __call__(self, tokens: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
    """Token ids [B, L] → pooled features [B, width]."""
    x = self.token_features(tokens, dropout_key)
    if self.pool == "last":
      return x[:, -1]
    if self.pool == "argmax":
      at = jnp.argmax(tokens, axis=1)
      return jnp.take_along_axis(x, at[:, None, None], axis=1)[:, 0]
    valid = tokens != self.pad_id  # [B, L]
    if self.pool == "mean":
      w = valid.astype(x.dtype)[..., None]
      return (x * w).sum(1) / jnp.maximum(w.sum(1), 1)
    last = jnp.maximum(valid.sum(axis=1) - 1, 0)
    return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
