"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018; DINO).

The train features are sharded by rows over every axis of a device mesh; each chunk of test
rows is replicated, every device finds the top-k of its own train rows with one matrix
product, and the D·k candidates are all-gathered and reduced to the global top-k. The cost is
that of the [m, d] × [d, n] product, spread over the mesh, and memory is O(chunk · n / D).

Knows nothing about models or datasets: feature arrays and integer labels in, numbers out.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from big_contrast import sharding
from big_contrast.evaluate import _validate
from big_contrast.evaluate._chunked import map_row_chunks
from big_contrast.evaluate.metrics import accuracy_from_ranks, label_ranks

# A test chunk's similarity block [chunk, n / D] holds at most this many float32s per device.
_MAX_BLOCK_ELEMENTS = 2**25


def _local_top_k(test_x, train_x, train_y, valid, *, k):
  """This device's k most similar train rows: values [b, k] and their labels [b, k]."""
  sims = jnp.where(valid[None, :], test_x @ train_x.T, -jnp.inf)
  values, idx = jax.lax.top_k(sims, k)
  # The barriers keep XLA from rewriting top_k and its consumers into a full sort of the
  # [b, n] block (15x the matrix product's time on CPU).
  return jax.lax.optimization_barrier(values), train_y[jax.lax.optimization_barrier(idx)]


@functools.lru_cache(maxsize=16)
def _chunk_fn(mesh: Mesh, k: int, local_k: int, num_classes: int):
  """Test chunk → label ranks [b]: top-`local_k` per device, then the global top-`k`."""
  axes = sharding.batch_axes(mesh)

  def per_device(test_x, test_y, train_x, train_y, valid, temperature):
    values, labels = _local_top_k(test_x, train_x, train_y, valid, k=local_k)
    # Device order along `axes` is the train rows' order, so ties keep the lower index.
    values = jax.lax.all_gather(values, axes, axis=1, tiled=True)  # [b, D·k]
    labels = jax.lax.all_gather(labels, axes, axis=1, tiled=True)
    values, pick = jax.lax.top_k(values, k)
    labels = jnp.take_along_axis(labels, pick, axis=1)
    # Shifting by the row maximum leaves the vote ratios unchanged and exp() finite at small T.
    weights = jnp.exp((values - values.max(axis=1, keepdims=True)) / temperature)
    onehot = labels[:, :, None] == jnp.arange(num_classes)
    votes = jnp.einsum("bk,bkc->bc", weights, onehot.astype(weights.dtype))
    return label_ranks(votes, test_y)

  row = P(axes)
  return jax.jit(
    jax.shard_map(
      per_device,
      mesh=mesh,
      in_specs=(P(), P(), row, row, row, P()),
      out_specs=P(),
      check_vma=False,
    )
  )


def _put(x: np.ndarray, mesh: Mesh, spec: P) -> jax.Array:
  """A global array from a host array every process holds in full."""
  s = NamedSharding(mesh, spec)
  return jax.make_array_from_callback(x.shape, s, lambda index: x[index])


def _default_mesh() -> Mesh:
  return sharding.make_mesh({"data": -1})


def knn_accuracy(
  train_x,
  train_y,
  test_x,
  test_y,
  *,
  k: int = 20,
  temperature: float = 0.07,
  num_classes: int | None = None,
  batch_size: int | None = None,
  mesh: Mesh | None = None,
) -> dict[str, float]:
  r"""Accuracy of a cosine-similarity kNN classifier with exponential vote weights.

  Features are L2-normalised. Each test point takes its `k` most similar train points j and
  scores class c by

  .. math:: s_c = \sum_{j \in N_k} \exp(\cos(x, x_j) / T)\, [y_j = c]

  predicting argmax_c s_c (ties to the lower class index; equal similarities to the lower
  train index). With fewer than `k` train points all of them vote (k is clipped to n, as a
  kNN over the whole set), and the result says which k was used.

  Similarities are computed at JAX's default matmul precision (set
  `jax.default_matmul_precision("highest")` for full float32 on TPU).

  Args:
    train_x: [n, d] features; train_y: [n] int labels.
    test_x: [m, d] features; test_y: [m] int labels.
    k: neighbours (>= 1).
    temperature: T > 0.
    num_classes: C; defaults to 1 + the largest label.
    batch_size: test rows per step; default: as many as keep a device's similarity block
      [batch, n / D] within 128 MiB.
    mesh: the devices the train features are sharded over (by rows, over every axis);
      default: all devices.

  Returns:
    {"top1", "top5" (only when C >= 10), "mean_per_class"} in [0, 1], and "k", the number
    of neighbours used.
  """
  train_x, train_y, test_x, test_y, num_classes = _validate.train_test_classes(
    train_x, train_y, test_x, test_y, num_classes
  )
  n = train_x.shape[0]
  if k < 1:
    raise ValueError(f"k={k} must be >= 1.")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  if k > n:
    logging.warning("kNN: k=%d is more than the %d train points; using k=%d.", k, n, n)
    k = n
  mesh = mesh or _default_mesh()

  # Pad the train rows to a multiple of the mesh size; padding can never be a neighbour.
  pad = -n % mesh.size
  valid = np.arange(n + pad) < n
  train_x = np.pad(_validate.l2_normalize(train_x), ((0, pad), (0, 0)))
  train_y = np.pad(train_y, (0, pad))
  row = P(sharding.batch_axes(mesh))
  train = [_put(a, mesh, row) for a in (train_x, train_y, valid)]
  per_device = (n + pad) // mesh.size
  if batch_size is None:
    batch_size = max(8, _MAX_BLOCK_ELEMENTS // per_device)
  # With fewer rows per device than k, all of a device's rows are its candidates.
  fn = _chunk_fn(mesh, k, min(k, per_device), num_classes)
  temperature = np.float32(temperature)

  def chunk(x, y):
    out = fn(_put(x, mesh, P()), _put(y, mesh, P()), *train, temperature)
    return np.asarray(out.addressable_data(0))

  ranks = map_row_chunks(chunk, (_validate.l2_normalize(test_x), test_y), batch_size)
  result = accuracy_from_ranks(ranks, test_y, num_classes)
  result["k"] = k
  return result
