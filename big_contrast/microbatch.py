"""Exact microbatching for contrastive losses: gradient caching (Gao et al., 2021).

A contrastive loss couples every example of the global batch, so the batch
cannot simply be split into independent microbatches and their gradients
summed. Gradient caching keeps the loss exact while activations are held for
only one chunk at a time:

  1. embed the batch in k chunks, keeping no activations;
  2. evaluate the loss on the full set of embeddings and take its gradient
     w.r.t. the embeddings (cheap: [B, D]);
  3. for each chunk, recompute its forward pass and back-propagate that chunk's
     slice of the embedding gradient into the parameters; sum over chunks.

The result equals the gradient of the un-chunked step up to float reassociation.
The towers must be deterministic functions of (params, inputs): the recompute in
step 3 has to reproduce step 1 exactly (no dropout or other per-call
randomness), and BatchNorm statistics would become per-chunk statistics.

Chunk i holds, on every device, the i-th contiguous block of that device's
rows (global rows d·b + i·c … d·b + (i+1)·c - 1 of device d, c = b/k), so every
chunk is split over all devices in equal parts and taking it moves nothing
between devices. Each device slices its block of the batch as it lies, inside
the loop that uses it (`_take`), so only one chunk at a time is copied. The
batch is the largest array of a giant-batch step (2^20 images of 224 px:
4.6 GiB per chip on 32 chips); reshaping it into [k, B/k, ...] chunks first
put copies of it among the step's temporaries: compiled for a v5e-32 at
microbatches=128, 17.08 GiB of temporaries before (refused), 4.54 GiB after
(tools/compile_for.py; docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import einops
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.layout import Layout, with_layout_constraint
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def _take(x: jax.Array, i: jax.Array, c: int, sharding: NamedSharding | None) -> jax.Array:
  """Chunk i of `x` [B, ...]: rows [i·c, (i+1)·c) of every device's share, [n·c, ...].

  A dynamic slice of each device's own rows under `shard_map`, the chunk held
  in the layout the runtime gives arrays of its shape: the layout the batch
  arrived in. Unpinned, XLA may pick the layout its consumers prefer for the
  slice, and then relay out the whole batch once, before both loops, instead
  of each chunk as it is used.
  """
  if sharding is None:
    return jax.lax.dynamic_slice_in_dim(x, i * c, c, axis=0)
  spec = P(sharding.spec[0]) if sharding.spec else P()
  local = jax.shard_map(
    lambda rows, j: jax.lax.dynamic_slice_in_dim(rows, j * c, c, axis=0),
    mesh=sharding.mesh,
    in_specs=(spec, P()),
    out_specs=spec,
  )
  chunk = local(x, i)
  layout = _default_layout(chunk, sharding)
  return chunk if layout is None else with_layout_constraint(chunk, layout)


def _default_layout(x: jax.Array, sharding: NamedSharding) -> Layout | None:
  """The runtime's layout for one device's share of `x` (None where it cannot say)."""
  device = sharding.mesh.devices.flat[0]
  get = getattr(getattr(device, "client", None), "get_default_layout", None)
  if get is None:
    return None
  shard = sharding.shard_shape(x.shape)
  return Layout.from_pjrt_layout(get(np.dtype(x.dtype), shard, device))


def _chunk(x: jax.Array, n: int, k: int) -> jax.Array:
  """[B, ...] → [k, n·c, ...], every chunk at once (a copy: for [B, d] outputs only)."""
  return einops.rearrange(x, "(n k c) ... -> k (n c) ...", n=n, k=k)


def _unchunk(x: jax.Array, n: int) -> jax.Array:
  """Inverse of `_chunk`: [k, n·c, ...] → [B, ...]."""
  return einops.rearrange(x, "k (n c) ... -> (n k c) ...", n=n)


def loss_and_grads(
  apply_fn: Callable[..., tuple[Mapping[str, jax.Array], Any]],
  loss_fn: Callable[[Mapping, Mapping], jax.Array],
  params,
  batch: Mapping[str, jax.Array],
  *,
  inputs: Sequence[str],
  microbatches: int = 1,
  batch_sharding: NamedSharding | None = None,
):
  """(loss, outputs, grads, aux) of `loss_fn(apply_fn(params, *inputs)[0], batch)`.

  apply_fn: (params, *input arrays [B, ...]) → (outputs, aux). Outputs is a dict,
    each entry per-example ([B, ...], e.g. embeddings) or a scalar (temperature,
    bias); aux is not differentiated (e.g. updated BatchNorm statistics; with
    k > 1 the last chunk's).
  microbatches: k; 1 is the plain value-and-grad. B must be divisible by k.
  batch_sharding: the batch's sharding (split over all its mesh's devices);
    chunks are taken per device and constrained to it along their example axis,
    so every device keeps its share of each chunk. B/k must then be divisible
    by the device count.
  """
  xs = tuple(batch[name] for name in inputs)
  if microbatches == 1:

    def full(p):
      out, aux = apply_fn(p, *xs)
      return loss_fn(out, batch), (out, aux)

    (loss, (out, aux)), grads = jax.value_and_grad(full, has_aux=True)(params)
    return loss, out, grads, jax.lax.stop_gradient(aux)

  k = microbatches
  size = xs[0].shape[0]
  if size % k:
    raise ValueError(f"config.microbatches={k} does not divide the batch of {size}")
  n = 1 if batch_sharding is None else size // batch_sharding.shard_shape(xs[0].shape)[0]
  if size % (n * k):
    raise ValueError(
      f"config.microbatches={k} does not divide the {size // n} examples per device "
      f"(batch {size} over {n} devices)"
    )
  c = size // (n * k)

  def chunk(i):
    return tuple(_take(x, i, c, batch_sharding) for x in xs)

  # 1. Embeddings of every chunk; nothing is differentiated, so nothing is kept.
  steps = jnp.arange(k)
  _, (per_chunk, aux) = jax.lax.scan(lambda _, i: (None, apply_fn(params, *chunk(i))), None, steps)
  out = {name: v[0] if v.ndim == 1 else _unchunk(v, n) for name, v in per_chunk.items()}
  aux = jax.tree.map(lambda a: a[-1], aux)

  # 2. The exact loss on the whole batch, and its gradient w.r.t. the outputs.
  loss, d_out = jax.value_and_grad(loss_fn)(out, batch)

  # 3. Chunk by chunk: recompute the forward pass and pull the cotangent back.
  #    A scalar output is computed identically in every chunk, so each chunk
  #    takes 1/k of its cotangent.
  cotangents = {
    name: jnp.broadcast_to(g / k, (k,)) if g.ndim == 0 else _chunk(g, n, k)
    for name, g in d_out.items()
  }

  def backward(acc, step_and_ct):
    i, ct = step_and_ct
    x = chunk(i)
    _, vjp = jax.vjp(lambda p: apply_fn(p, *x)[0], params)
    (g,) = vjp(ct)
    return jax.tree.map(jnp.add, acc, g), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, _ = jax.lax.scan(backward, zeros, (steps, cotangents))
  return loss, out, grads, aux
