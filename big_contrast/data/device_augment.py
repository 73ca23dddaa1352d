"""SimCLR's photometric augmentations in JAX, run inside the train step.

With ``data.augment.device=True`` the host pipeline only decodes, crops and
flips (``uint8`` views) and adds one ``augment_seed`` per example, drawn from
that example's host RNG, i.e. a function of (seed, example, epoch). Here each
view gets the key ``fold_in(fold_in(key(0), augment_seed), view)`` and goes
through the same ops as ``big_contrast.data.augment.Augment.photometric``, in
the same order and with the same parameter ranges: colour jitter (four ops in
random order), grayscale, Gaussian blur, solarize. The random draws differ
from the host's (another generator), the operations do not: the tests compare
each op against the host's on equal parameters.

Every op is per view, so under ``jit`` with the batch sharded over the mesh the
work stays on the device that holds the example: no communication. The output
is float32 in [-1, 1], which the towers take as is
(``big_contrast.models.layers.image_input``).

Costs on the accelerator are a few elementwise passes and a (2r+1)-tap
separable blur per view; they replace the part of the host pipeline that costs
the most per example (``tools/bench_data.py`` measures both paths).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from big_contrast.data import augment as augment_lib


def _gray(x: jax.Array) -> jax.Array:
  """As the host's: RGB's luma, or the mean of the bands."""
  return x @ jnp.asarray(augment_lib.LUMA) if x.shape[-1] == 3 else x.mean(axis=-1)


def hue_matrix(turns: jax.Array) -> jax.Array:
  """The RGB → RGB matrix that rotates hue by `turns` of a circle (see the host's)."""
  theta = turns * 2 * jnp.pi
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  one, zero = jnp.ones_like(cos), jnp.zeros_like(cos)
  rot = jnp.stack(
    [jnp.stack([one, zero, zero]), jnp.stack([zero, cos, -sin]), jnp.stack([zero, sin, cos])]
  )
  return jnp.asarray(augment_lib.YIQ_TO_RGB) @ rot @ jnp.asarray(augment_lib.RGB_TO_YIQ)


def apply_jitter(x: jax.Array, order: jax.Array, factors: jax.Array, turns: jax.Array) -> jax.Array:
  """Brightness, contrast, saturation, hue (ops 0-3) in `order`, each then clipped to [0, 1]."""

  def brightness(y):
    return y * factors[0]

  def contrast(y):
    mean = _gray(y).mean()
    return (y - mean) * factors[1] + mean

  def saturation(y):
    g = _gray(y)[..., None]
    return (y - g) * factors[2] + g

  def hue(y):
    return y @ hue_matrix(turns).T

  for i in range(4):
    x = jnp.clip(jax.lax.switch(order[i], (brightness, contrast, saturation, hue), x), 0.0, 1.0)
  return x


def gaussian_blur(x: jax.Array, sigma: jax.Array, max_radius: int) -> jax.Array:
  """Separable Gaussian blur of [H, W, C], mirror padding, as the host's.

  The kernel has the static half-width `max_radius`; taps beyond the host's
  radius for this `sigma` (``augment.blur_radius``) are zero, so the result
  equals the host's blur for every sigma in range.
  """
  size = min(x.shape[0], x.shape[1])
  taps = jnp.arange(-max_radius, max_radius + 1, dtype=jnp.float32)
  radius = jnp.clip(jnp.ceil(3 * sigma), 1, size - 1)
  w = jnp.where(jnp.abs(taps) <= radius, jnp.exp(-0.5 * (taps / sigma) ** 2), 0.0)
  w = w / w.sum()
  h, wd = x.shape[:2]
  pad = jnp.pad(x, ((max_radius, max_radius), (0, 0), (0, 0)), mode="reflect")
  x = sum(w[k] * pad[k : k + h] for k in range(2 * max_radius + 1))
  pad = jnp.pad(x, ((0, 0), (max_radius, max_radius), (0, 0)), mode="reflect")
  return sum(w[k] * pad[:, k : k + wd] for k in range(2 * max_radius + 1))


def _view(
  x: jax.Array, key: jax.Array, probs: tuple[float, ...], cfg: Mapping[str, Any]
) -> jax.Array:
  """One uint8 view [S, S, C] → float32 [0, 1], photometric ops applied.

  The draws are the same whichever ops are on; an op of probability 0 is left
  out of the program.
  """
  k_apply, k_order, k_factors, k_hue, k_sigma = jax.random.split(key, 5)
  do = jax.random.uniform(k_apply, (4,)) < jnp.asarray(probs)
  x = x.astype(jnp.float32) * (1.0 / 255.0)

  spread, hue = augment_lib.jitter_ranges(float(cfg["jitter_strength"]))
  factors = jax.random.uniform(k_factors, (3,), minval=1 - spread, maxval=1 + spread)
  turns = jax.random.uniform(k_hue, (), minval=-hue, maxval=hue)
  order = jax.random.permutation(k_order, 4)
  if probs[0] > 0:
    augment_lib.check_jitter_channels(x.shape[-1], cfg["jitter_prob"])
    x = jnp.where(do[0], apply_jitter(x, order, factors, turns), x)

  if probs[1] > 0:
    x = jnp.where(do[1], jnp.repeat(_gray(x)[..., None], x.shape[-1], axis=-1), x)

  lo, hi = (float(v) for v in cfg["blur_sigma"])
  sigma = jax.random.uniform(k_sigma, (), minval=lo, maxval=hi)
  if probs[2] > 0:
    max_radius = augment_lib.blur_radius(hi, min(x.shape[0], x.shape[1]))
    x = jnp.where(do[2], gaussian_blur(x, sigma, max_radius), x)

  return jnp.where(do[3] & (x >= 0.5), 1.0 - x, x) if probs[3] > 0 else x


def photometric(
  views: jax.Array, seeds: jax.Array, augment_cfg: Mapping[str, Any] | None
) -> jax.Array:
  """uint8 views [B, V, S, S, C] + per-example seeds [B] → float32 [-1, 1], augmented.

  `augment_cfg` is ``data.augment`` (the same keys as the host's; per-view
  probabilities included).
  """
  aug = augment_lib.Augment(augment_cfg)
  cfg = aug.cfg
  if views.ndim != 5:
    raise ValueError(f"device augmentation expects views [B, V, H, W, C], got {views.shape}")
  base = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(0), s))(seeds.astype(jnp.uint32))
  out = []
  for v in range(views.shape[1]):
    probs = tuple(aug.prob(k, v) for k in augment_lib.PHOTOMETRIC_OPS)
    keys = jax.vmap(functools.partial(jax.random.fold_in, data=v))(base)
    out.append(jax.vmap(functools.partial(_view, probs=probs, cfg=cfg))(views[:, v], keys))
  return jnp.stack(out, axis=1) * 2.0 - 1.0
