"""Vision Transformer image tower (Dosovitskiy et al., 2021).

`ViT(variant="B/16")` names the published sizes; `width/depth/heads/mlp_dim`
override them for small models. Output: pooled features [B, width].

The defaults are big_vision's ViT. The other keys express the published
variants exactly (`big_contrast.interop` maps their checkpoints):
  OpenAI / OpenCLIP   embed_bias=False, pool='cls', prefix_posemb=True, ln_pre=True,
                      ln_eps=1e-5, act='gelu_exact' (OpenCLIP) or 'quick_gelu'
                      (OpenAI-trained), mean/std = OpenAI's;
  SigLIP              pool='map' (defaults otherwise);
  DINOv2 (timm)       patch 14, pool='cls', prefix_posemb=True (False with
                      registers), registers=4 for the `reg4` models,
                      layerscale=1e-5, act='gelu_exact', mean/std = ImageNet's.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from flax import nnx

from big_contrast.models import layers

# name: (width, depth, mlp_dim, heads), as published (So400m: Alabdulmohsin et al., 2023).
VIT_SIZES = {
  "Ti": (192, 12, 768, 3),
  "S": (384, 12, 1536, 6),
  "M": (512, 12, 2048, 8),
  "B": (768, 12, 3072, 12),
  "L": (1024, 24, 4096, 16),
  "So400m": (1152, 27, 4304, 16),
  "H": (1280, 32, 5120, 16),
}


def parse_variant(variant: str) -> dict:
  """'B/16' → dict(width=768, depth=12, mlp_dim=3072, heads=12, patch=16)."""
  m = re.fullmatch(r"(\w+)/(\d+)", variant)
  if not m or m.group(1) not in VIT_SIZES:
    raise ValueError(
      f"unknown ViT variant {variant!r}; expected <size>/<patch> with size "
      f"in {sorted(VIT_SIZES)}, e.g. 'B/16'"
    )
  width, depth, mlp_dim, heads = VIT_SIZES[m.group(1)]
  return dict(width=width, depth=depth, mlp_dim=mlp_dim, heads=heads, patch=int(m.group(2)))


class MAPHead(nnx.Module):
  """Multihead attention pooling: a learned query attends over the tokens."""

  def __init__(
    self,
    width: int,
    heads: int,
    mlp_dim: int,
    *,
    dtype,
    act: str = "gelu_tanh",
    ln_eps: float = 1e-6,
    rngs: nnx.Rngs,
  ):
    self.probe = nnx.Param(nnx.initializers.xavier_uniform()(rngs.params(), (1, 1, width)))
    self.attn = nnx.MultiHeadAttention(
      num_heads=heads,
      in_features=width,
      kernel_init=nnx.initializers.xavier_uniform(),
      dtype=dtype,
      decode=False,
      deterministic=True,
      keep_rngs=False,
      rngs=rngs,
    )
    self.ln = nnx.LayerNorm(width, epsilon=ln_eps, dtype=dtype, rngs=rngs)
    self.mlp = layers.MlpBlock(width, mlp_dim, dtype=dtype, act=act, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    probe = jnp.broadcast_to(self.probe[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
    y = self.attn(probe, x)
    y = y + self.mlp(self.ln(y))
    return y[:, 0]


class ViT(nnx.Module):
  """Images [B, H, W, C] → features [B, width].

  posemb: 'learn' (Gaussian-initialised table) or 'sincos2d' (fixed).
  pool: 'cls' (prepended token), 'gap' (mean of patch tokens) or 'map'.
  registers: extra learned tokens after the class token (Darcet et al., 2024),
    dropped at the output.
  prefix_posemb: the class token and registers get position embeddings of their
    own (`prefix_pos`), added before the encoder as CLIP and DINOv2 do.
  embed_bias: the patch embedding has a bias (CLIP's has none).
  ln_pre: a LayerNorm on the tokens before the encoder (CLIP's `ln_pre`).
  layerscale, act, ln_eps: see `layers.EncoderBlock`; they apply to the MAP head too.
  mean, std: input normalisation of a pretrained source (`layers.image_input`).
  """

  def __init__(
    self,
    *,
    image_size: int,
    channels: int = 3,
    variant: str | None = None,
    width: int | None = None,
    depth: int | None = None,
    heads: int | None = None,
    mlp_dim: int | None = None,
    patch: int | None = None,
    posemb: str = "learn",
    pool: str = "gap",
    registers: int = 0,
    prefix_posemb: bool = False,
    embed_bias: bool = True,
    ln_pre: bool = False,
    layerscale: float | None = None,
    act: str = "gelu_tanh",
    ln_eps: float = 1e-6,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    dtype="float32",
    remat: bool = False,
    rngs: nnx.Rngs,
  ):
    dims = parse_variant(variant) if variant else {}
    given = dict(width=width, depth=depth, heads=heads, mlp_dim=mlp_dim, patch=patch)
    dims.update({k: v for k, v in given.items() if v is not None})
    missing = [k for k in given if k not in dims]
    if missing:
      raise ValueError(f"ViT needs `variant` or explicit {missing}")
    if image_size % dims["patch"]:
      raise ValueError(f"image_size {image_size} is not divisible by patch {dims['patch']}")
    if pool not in ("cls", "gap", "map"):
      raise ValueError(f"ViT pool={pool!r}: expected 'cls', 'gap' or 'map'")
    self.width, self.pool, self.patch = dims["width"], pool, dims["patch"]
    self.dtype = layers.dtype_from_name(dtype) if isinstance(dtype, str) else dtype
    self.mean = None if mean is None else tuple(float(m) for m in mean)
    self.std = None if std is None else tuple(float(s) for s in std)
    for key, stats in (("mean", self.mean), ("std", self.std)):
      if stats is not None and len(stats) != channels:
        raise ValueError(f"ViT {key} has {len(stats)} values for {channels} channels")
    w, p = dims["width"], dims["patch"]
    self.embed = nnx.Conv(
      channels,
      w,
      kernel_size=(p, p),
      strides=(p, p),
      padding="VALID",
      use_bias=embed_bias,
      dtype=self.dtype,
      rngs=rngs,
    )
    grid = image_size // p
    if posemb == "learn":
      self.pos = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, grid * grid, w)))
    elif posemb == "sincos2d":
      self.pos = nnx.Variable(layers.sincos_2d(grid, grid, w)[None])
    else:
      raise ValueError(f"ViT posemb={posemb!r}: expected 'learn' or 'sincos2d'")
    if pool == "cls":
      self.cls = nnx.Param(jnp.zeros((1, 1, w)))
    if registers:
      self.registers = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, registers, w)))
    self.n_prefix = int(pool == "cls") + registers
    if prefix_posemb:
      if not self.n_prefix:
        raise ValueError("ViT prefix_posemb=True needs a class token (pool='cls') or registers")
      init = nnx.initializers.normal(0.02)
      self.prefix_pos = nnx.Param(init(rngs.params(), (1, self.n_prefix, w)))
    self.prefix_posemb = prefix_posemb
    self.use_ln_pre = ln_pre
    if ln_pre:
      self.ln_pre = nnx.LayerNorm(w, epsilon=ln_eps, dtype=self.dtype, rngs=rngs)
    block = dict(act=act, ln_eps=ln_eps, layerscale=layerscale)
    self.encoder = layers.Encoder(
      w,
      dims["depth"],
      dims["heads"],
      dims["mlp_dim"],
      dtype=self.dtype,
      remat=remat,
      **block,
      rngs=rngs,
    )
    if pool == "map":
      self.map_head = MAPHead(
        w, dims["heads"], dims["mlp_dim"], dtype=self.dtype, act=act, ln_eps=ln_eps, rngs=rngs
      )

  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # no batch-dependent layers or dropout
    return self._pool(self.encoder(self._tokens(images)))

  def block_features(self, images: jax.Array, last_blocks: int) -> jax.Array:
    """[B, last_blocks, width]: each of the last blocks' outputs, normed and pooled as the
    model pools its last (oldest first; [:, -1] is `self(images)`). A MAP head pools only
    the last block, so pool='map' offers just last_blocks=1."""
    if last_blocks == 1:
      return self(images)[:, None]
    if self.pool == "map":
      raise ValueError(
        f"ViT pool='map' pools the last block only: config.eval.probe_last_blocks must be "
        f"(1,), got a candidate of {last_blocks} blocks"
      )
    outs = self.encoder.last_outputs(self._tokens(images), last_blocks)
    return jnp.stack([self._pool(o) for o in outs], 1)

  def _tokens(self, images: jax.Array) -> jax.Array:
    """Images → the token sequence the encoder reads (patches, prefix tokens, ln_pre)."""
    x = self.embed(layers.image_input(images, self.dtype, self.mean, self.std))
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c) + self.pos[...].astype(self.dtype)
    if self.n_prefix:
      parts = ([self.cls[...]] if self.pool == "cls" else []) + (
        [self.registers[...]] if self.n_prefix > int(self.pool == "cls") else []
      )
      prefix = jnp.concatenate(parts, 1).astype(x.dtype)
      if self.prefix_posemb:
        prefix = prefix + self.prefix_pos[...].astype(x.dtype)
      x = jnp.concatenate([jnp.broadcast_to(prefix, (b, self.n_prefix, c)), x], 1)
    if self.use_ln_pre:
      x = self.ln_pre(x)
    return x

  def _pool(self, x: jax.Array) -> jax.Array:
    if self.pool == "cls":
      return x[:, 0]
    if self.pool == "map":
      return self.map_head(x)
    return x[:, self.n_prefix :].mean(axis=1)
