"""ResNet image tower (He et al., 2016), v1.5: the stride sits on the 3×3 conv.

`ResNet(depth=50)` is the published ResNet-50 without its classifier
(23.5M parameters; 25.6M with the 1000-class FC that the papers count).
Output: globally average-pooled features [B, width], width = 512 (18) or 2048 (50),
times `width_multiplier` (SimCLR's 2× and 4× ResNets).

Normalisation (`norm`):
  'batch'  BatchNorm. Under `jax.jit` the batch is one global array sharded over
           the mesh's batch axes, so the mean and variance over axis 0 are
           computed by XLA with an all-reduce across devices: the statistics are
           synchronised over the whole global batch (SimCLR's "global BN") with
           no `axis_name` and no per-model code. Running averages are
           `nnx.BatchStat` variables: they live in the train state's `rest`, not in
           `params`, and only change if the train step returns them (see
           `big_contrast.models.apply_and_update`). Under `config.microbatches > 1`
           the statistics are per microbatch.
  'group'  GroupNorm (32 groups, or fewer when a layer has fewer channels):
           no state, independent of the batch.

`__call__(images, train=...)`: train=True normalises with the batch's statistics
and updates the running averages; train=False uses the running averages.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from big_contrast.models import layers

# depth: (block kind, blocks per stage)
RESNET_SIZES = {
  18: ("basic", (2, 2, 2, 2)),
  34: ("basic", (3, 4, 6, 3)),
  50: ("bottleneck", (3, 4, 6, 3)),
  101: ("bottleneck", (3, 4, 23, 3)),
  152: ("bottleneck", (3, 8, 36, 3)),
}

# He (fan-out) initialisation of conv kernels, as in the ResNet paper's codebases.
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class Norm(nnx.Module):
  """BatchNorm or GroupNorm over the channel axis, chosen by name."""

  def __init__(
    self,
    channels: int,
    *,
    kind: str,
    zero_init: bool = False,
    momentum: float,
    dtype,
    rngs: nnx.Rngs,
  ):
    scale_init = nnx.initializers.zeros if zero_init else nnx.initializers.ones
    self.kind = kind
    if kind == "batch":
      self.norm = nnx.BatchNorm(
        channels, momentum=momentum, epsilon=1e-5, dtype=dtype, scale_init=scale_init, rngs=rngs
      )
    elif kind == "group":
      self.norm = nnx.GroupNorm(
        channels,
        num_groups=math.gcd(32, channels),
        epsilon=1e-5,
        dtype=dtype,
        scale_init=scale_init,
        rngs=rngs,
      )
    else:
      raise ValueError(f"ResNet norm={kind!r}: expected 'batch' or 'group'")

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.kind == "batch":
      return self.norm(x, use_running_average=not train)
    return self.norm(x)


class BasicBlock(nnx.Module):
  """3×3 → 3×3 residual block (ResNet-18/34); output channels = `channels`."""

  expansion = 1

  def __init__(self, in_ch: int, channels: int, stride: int, *, norm, conv, rngs: nnx.Rngs):
    self.conv1 = conv(in_ch, channels, (3, 3), strides=stride, rngs=rngs)
    self.norm1 = norm(channels)
    self.conv2 = conv(channels, channels, (3, 3), rngs=rngs)
    self.norm2 = norm(channels, zero_init=True)
    needs_proj = stride != 1 or in_ch != channels
    self.proj = conv(in_ch, channels, (1, 1), strides=stride, rngs=rngs) if needs_proj else None
    self.proj_norm = norm(channels) if needs_proj else None

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = jax.nn.relu(self.norm1(self.conv1(x), train))
    y = self.norm2(self.conv2(y), train)
    shortcut = x if self.proj is None else self.proj_norm(self.proj(x), train)
    return jax.nn.relu(y + shortcut)


class Bottleneck(nnx.Module):
  """1×1 → 3×3 (strided) → 1×1 residual block (ResNet-50+); output = 4 × `channels`."""

  expansion = 4

  def __init__(self, in_ch: int, channels: int, stride: int, *, norm, conv, rngs: nnx.Rngs):
    out = channels * self.expansion
    self.conv1 = conv(in_ch, channels, (1, 1), rngs=rngs)
    self.norm1 = norm(channels)
    self.conv2 = conv(channels, channels, (3, 3), strides=stride, rngs=rngs)
    self.norm2 = norm(channels)
    self.conv3 = conv(channels, out, (1, 1), rngs=rngs)
    self.norm3 = norm(out, zero_init=True)
    needs_proj = stride != 1 or in_ch != out
    self.proj = conv(in_ch, out, (1, 1), strides=stride, rngs=rngs) if needs_proj else None
    self.proj_norm = norm(out) if needs_proj else None

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = jax.nn.relu(self.norm1(self.conv1(x), train))
    y = jax.nn.relu(self.norm2(self.conv2(y), train))
    y = self.norm3(self.conv3(y), train)
    shortcut = x if self.proj is None else self.proj_norm(self.proj(x), train)
    return jax.nn.relu(y + shortcut)


class ResNet(nnx.Module):
  """Images [B, H, W, C] → features [B, width].

  depth: 18, 34, 50, 101 or 152. base_width: the first stage's channels (64 as
  published; smaller for tiny models). stem: 'imagenet' (7×7/2 conv + 3×3/2 max
  pool) or 'cifar' (3×3/1 conv, no pool: for 32×32 images, as in SimCLR's CIFAR
  runs). zero_init_residual: the last norm of each block starts at scale 0, so
  every block starts as the identity (Goyal et al., 2017).
  """

  def __init__(
    self,
    *,
    depth: int = 50,
    channels: int = 3,
    width_multiplier: int = 1,
    base_width: int = 64,
    norm: str = "batch",
    bn_momentum: float = 0.9,
    stem: str = "imagenet",
    zero_init_residual: bool = True,
    image_size: int | None = None,
    dtype="float32",
    remat: bool = False,
    rngs: nnx.Rngs,
  ):
    del image_size, remat  # any size works; blocks are small enough to keep activations
    if depth not in RESNET_SIZES:
      raise ValueError(f"ResNet depth={depth}: expected one of {sorted(RESNET_SIZES)}")
    if stem not in ("imagenet", "cifar"):
      raise ValueError(f"ResNet stem={stem!r}: expected 'imagenet' or 'cifar'")
    self.dtype = layers.dtype_from_name(dtype) if isinstance(dtype, str) else dtype
    kind, blocks = RESNET_SIZES[depth]
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    conv = partial(
      nnx.Conv, use_bias=False, padding="SAME", kernel_init=_conv_init, dtype=self.dtype
    )

    def make_norm(ch, zero_init=False):
      return Norm(
        ch,
        kind=norm,
        zero_init=zero_init and zero_init_residual,
        momentum=bn_momentum,
        dtype=self.dtype,
        rngs=rngs,
      )

    stem_width = base_width * width_multiplier
    self.stem_kind = stem
    if stem == "imagenet":
      self.stem = conv(channels, stem_width, (7, 7), strides=2, rngs=rngs)
    else:
      self.stem = conv(channels, stem_width, (3, 3), strides=1, rngs=rngs)
    self.stem_norm = make_norm(stem_width)
    stages, in_ch = [], stem_width
    for i, n in enumerate(blocks):
      ch = base_width * width_multiplier * 2**i
      stage = []
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        stage.append(block_cls(in_ch, ch, stride, norm=make_norm, conv=conv, rngs=rngs))
        in_ch = ch * block_cls.expansion
      stages.append(nnx.List(stage))
    self.stages = nnx.List(stages)
    self.width = in_ch

  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    x = self.stem(layers.image_input(images, self.dtype))
    x = jax.nn.relu(self.stem_norm(x, train))
    if self.stem_kind == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for stage in self.stages:
      for block in stage:
        x = block(x, train)
    return jnp.mean(x, axis=(1, 2))

  def block_features(self, images: jax.Array, last_blocks: int) -> jax.Array:
    """[B, 1, width]: the pooled features. The stages differ in width, so only the last
    one is offered (config.eval.probe_last_blocks=(1,))."""
    if last_blocks != 1:
      raise ValueError(
        f"a ResNet's probe reads its last stage only: config.eval.probe_last_blocks must be "
        f"(1,), got a candidate of {last_blocks} blocks"
      )
    return self(images, train=False)[:, None]
