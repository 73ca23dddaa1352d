"""Shared fixtures for the losses tests: inputs, meshes, sharded wrappers, comparisons.

No tests here; imported by the other ``test_losses_*.py`` files.

The meshes (`MESHES`) are 1, 2, 4 and 8 devices along one axis and 2×4 with the
batch split over both axes at once. `MESH_PATHS` are the (mesh, path) pairs that
`test_losses_sharded.py` compiles every case for: by default only the blockwise
ring on the 2×4 mesh (two axes, every sub-block padded), since each pair is one
large compile and the suite has a time budget (the all-gather path's channels are
checked against NumPy on both layouts in `test_losses_engine.py`);
``BIG_CONTRAST_LOSS_MATRIX=full`` runs all ten, every mesh on both paths.
"""

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

DEVICE_COUNTS = (1, 2, 4, 8)
MESHES = ("1", "2", "4", "8", "2x4")
PATHS = ("allgather", "blockwise")
_MATRIX = os.environ.get("BIG_CONTRAST_LOSS_MATRIX", "default")
if _MATRIX not in ("default", "full"):
  raise ValueError(f"BIG_CONTRAST_LOSS_MATRIX={_MATRIX!r}: expected 'default' or 'full'")
MESH_PATHS = (
  tuple(itertools.product(MESHES, PATHS)) if _MATRIX == "full" else (("2x4", "blockwise"),)
)
GLOBAL_B = 24  # divisible by every device count: b = 24, 12, 6, 3.
# The test programs are tiny and run once: LLVM's optimisations cost more than they save.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
BLOCK = 5  # divides none of the local row counts: every path pads a sub-block


def normalized(rng: np.random.Generator, *shape) -> np.ndarray:
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@functools.cache
def mesh(n: int) -> jax.sharding.Mesh:
  # Auto axis types: shard_map with in_specs=P('data') then accepts unsharded
  # host arrays; Explicit would require device_put-ing every input first.
  return jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


@functools.cache
def mesh_and_axes(name: str):
  if name == "2x4":
    two_d = jax.make_mesh((2, 4), ("x", "y"), axis_types=(AxisType.Auto,) * 2)
    return two_d, ("x", "y")
  return mesh(int(name)), "data"


def sharded(fn, n, batch_args: int, replicated_args: int = 0):
  """jit(shard_map(fn(*batch, *replicated, axis_name))) on `n` devices (or the mesh named `n`).

  The first `batch_args` arguments are split over the batch, the rest are
  replicated; the output is the (replicated) global scalar.
  """
  the_mesh, axes = mesh_and_axes(str(n))
  specs = (P(axes),) * batch_args + (P(),) * replicated_args
  return jax.jit(
    jax.shard_map(
      lambda *args: fn(*args, axis_name=axes), mesh=the_mesh, in_specs=specs, out_specs=P()
    )
  )


def as_float32(a):
  a = np.asarray(a)
  return jnp.asarray(a, jnp.float32) if np.issubdtype(a.dtype, np.floating) else jnp.asarray(a)


def value_and_grads(fn, args, argnums):
  with jax.default_matmul_precision("highest"):
    # Jitted: one compile, not one per operation.
    grads = jax.jit(jax.value_and_grad(fn, argnums=argnums), compiler_options=FAST_COMPILE)
    return grads(*[as_float32(a) for a in args])


def reference_value_and_grads(ref_fn, args, argnums):
  """Value and gradients of a plain dense reference, in float64."""
  with jax.enable_x64(True):
    args64 = [
      jnp.asarray(np.asarray(a, np.float64))
      if np.issubdtype(np.asarray(a).dtype, np.floating)
      else jnp.asarray(a)
      for a in args
    ]
    v, g = jax.jit(jax.value_and_grad(ref_fn, argnums=argnums), compiler_options=FAST_COMPILE)(
      *args64
    )
    return np.asarray(v), [np.asarray(x) for x in g]


def assert_close(got, want, rtol=2e-5, atol=2e-5, argnums=()):
  (v, g), (rv, rg) = got, want
  np.testing.assert_allclose(v, rv, rtol=rtol, atol=atol, err_msg="value")
  for i, (x, y) in enumerate(zip(g, rg)):
    scale = max(1.0, float(np.abs(y).max()))
    np.testing.assert_allclose(
      x, y, rtol=rtol, atol=atol * scale, err_msg=f"gradient wrt argument {argnums[i]}"
    )


def assert_close_to_reference(fn, ref_fn, args, argnums, rtol=2e-5, atol=2e-5):
  got = value_and_grads(fn, args, argnums)
  want = reference_value_and_grads(ref_fn, args, argnums)
  assert_close(got, want, rtol, atol, argnums)


def assert_finite(*xs):
  for x in jax.tree.leaves(xs):
    assert np.all(np.isfinite(np.asarray(x, np.float32))), x
