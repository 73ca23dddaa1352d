"""Device mesh, parameter partitioning rules, and host batches → global arrays.

The mesh comes from the config (`config.mesh = {data: -1, fsdp: 1}`; one `-1`
takes the remaining devices). The batch is split over every mesh axis; parameters
are partitioned by (regex, strategy) rules matched against their path, so models
carry no sharding code of their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# Below this many elements a parameter is replicated: splitting it saves little
# memory and costs an all-gather per use.
MIN_SHARDED_SIZE = 2**14


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with the config's axis names and sizes; at most one size may be -1.

  Axis types are Auto: shardings are given explicitly at jit boundaries
  (pjit-style) and XLA propagates them inside; the loss runs under `shard_map`.
  """
  devices = list(jax.devices() if devices is None else devices)
  names, sizes = tuple(mesh_cfg.keys()), [int(s) for s in mesh_cfg.values()]
  if not names:
    raise ValueError("config.mesh is empty; expected e.g. {'data': -1, 'fsdp': 1}")
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh={dict(mesh_cfg)}: at most one axis may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if known <= 0 or len(devices) % known:
    raise ValueError(f"config.mesh={dict(mesh_cfg)} does not divide {len(devices)} devices")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(
      f"config.mesh={dict(mesh_cfg)} has {int(np.prod(sizes))} devices, "
      f"but {len(devices)} are available; use -1 for one axis"
    )
  return jax.make_mesh(
    tuple(sizes), names, axis_types=(AxisType.Auto,) * len(names), devices=devices
  )


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The batch is split over every mesh axis (data parallel × FSDP)."""
  return tuple(mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def path_str(path) -> str:
  """'image/encoder/blocks/0/attn/query/kernel' for a jax key path."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _fsdp_spec(shape: tuple[int, ...], axis: str, axis_size: int) -> P:
  """Split the largest dimension divisible by the axis size; replicate small arrays."""
  if axis_size == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARDED_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % axis_size == 0:
      spec = [None] * len(shape)
      spec[dim] = axis
      return P(*spec)
  return P()


def param_specs(abstract_tree, mesh: Mesh, rules: Sequence[tuple[str, object]] = ((".*", "fsdp"),)):
  """PartitionSpecs for a pytree of arrays from (regex, strategy) rules; first match wins.

  strategy: 'fsdp' (split the largest divisible dim over the `fsdp` mesh axis),
  'replicate', or a tuple of mesh-axis names / None per dimension.
  """
  compiled = [(re.compile(pattern), strategy) for pattern, strategy in rules]
  fsdp_size = dict(mesh.shape).get("fsdp", 1)

  def spec_for(path, leaf):
    name = path_str(path)
    shape = tuple(getattr(leaf, "shape", ()))
    for pattern, strategy in compiled:
      if not pattern.fullmatch(name):
        continue
      if strategy == "fsdp":
        return _fsdp_spec(shape, "fsdp", fsdp_size)
      if strategy == "replicate":
        return P()
      spec = P(*strategy)
      if len(spec) > len(shape):
        raise ValueError(
          f"sharding rule {pattern.pattern!r}: spec {spec} has more "
          f"dimensions than parameter {name} {shape}"
        )
      return spec
    return P()

  return jax.tree_util.tree_map_with_path(spec_for, abstract_tree)


def to_shardings(specs, mesh: Mesh):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def host_batch_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Per-process numpy batches → global jax.Arrays split over the batch axes.

  Each process passes its own rows (global batch / process count); the result
  has the global leading dimension.
  """
  sharding = batch_sharding(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
  }
