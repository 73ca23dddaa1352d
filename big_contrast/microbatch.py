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

Chunk i holds the examples {j·k + i}: with the batch split contiguously over
devices, every chunk stays split over all devices in equal parts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import einops
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def _chunk(x: jax.Array, k: int) -> jax.Array:
  """[B, ...] → [k, B/k, ...], chunk i holding rows i, i+k, i+2k, …"""
  return einops.rearrange(x, "(n k) ... -> k n ...", k=k)


def _unchunk(x: jax.Array) -> jax.Array:
  """Inverse of `_chunk`: [k, B/k, ...] → [B, ...]."""
  return einops.rearrange(x, "k n ... -> (n k) ...")


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
  batch_sharding: the batch's sharding; chunks are constrained to it along
    their example axis so every device keeps its share of each chunk.
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
  chunks = tuple(_chunk(x, k) for x in xs)
  if batch_sharding is not None:
    spec = NamedSharding(batch_sharding.mesh, P(None, *batch_sharding.spec))
    chunks = tuple(jax.lax.with_sharding_constraint(c, spec) for c in chunks)

  # 1. Embeddings of every chunk; nothing is differentiated, so nothing is kept.
  _, (per_chunk, aux) = jax.lax.scan(lambda _, x: (None, apply_fn(params, *x)), None, chunks)
  out = {name: v[0] if v.ndim == 1 else _unchunk(v) for name, v in per_chunk.items()}
  aux = jax.tree.map(lambda a: a[-1], aux)

  # 2. The exact loss on the whole batch, and its gradient w.r.t. the outputs.
  loss, d_out = jax.value_and_grad(loss_fn)(out, batch)

  # 3. Chunk by chunk: recompute the forward pass and pull the cotangent back.
  #    A scalar output is computed identically in every chunk, so each chunk
  #    takes 1/k of its cotangent.
  cotangents = {
    name: jnp.broadcast_to(g / k, (k,)) if g.ndim == 0 else _chunk(g, k)
    for name, g in d_out.items()
  }

  def backward(acc, chunk_and_ct):
    x, ct = chunk_and_ct
    _, vjp = jax.vjp(lambda p: apply_fn(p, *x)[0], params)
    (g,) = vjp(ct)
    return jax.tree.map(jnp.add, acc, g), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, _ = jax.lax.scan(backward, zeros, (chunks, cotangents))
  return loss, out, grads, aux
