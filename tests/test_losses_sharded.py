"""Every objective, sharded, both paths, against a float64 port of its source.

For each mesh (1, 2, 4, 8 devices; 2×4 with the batch over both axes) and path
(all-gather; blockwise with sub-blocks of 5 columns, which divide no device's
rows, so every sub-block loop pads) in `MESH_PATHS` (by default the blockwise
path on 2×4 only; ``BIG_CONTRAST_LOSS_MATRIX=full pytest tests/test_losses_sharded.py``
runs all ten pairs), the value and the gradients of every case
of `test_losses_image_text`, `test_losses_multiview` and `test_losses_polyview`
come from one compiled program (one compile per mesh and path keeps the suite
fast) and are compared one case at a time with the case's reference.
"""

import functools

import jax
import pytest
from jax.sharding import PartitionSpec as P
from test_losses_image_text import CASES as IMAGE_TEXT
from test_losses_multiview import CASES as MULTIVIEW
from test_losses_polyview import CASES as POLYVIEW
from test_losses_support import (
  BLOCK,
  MESH_PATHS,
  as_float32,
  assert_close,
  mesh_and_axes,
  reference_value_and_grads,
)

CASES = {**IMAGE_TEXT, **MULTIVIEW, **POLYVIEW}


@functools.cache
def _results(mesh_name: str, path: str) -> dict:
  """{case: (value, grads)} of every case on one mesh and path, from one jitted program."""
  the_mesh, axes = mesh_and_axes(mesh_name)
  block_size = None if path == "allgather" else BLOCK

  def case_fn(loss, n_args, batch_args):
    specs = (P(axes),) * batch_args + (P(),) * (n_args - batch_args)
    return jax.shard_map(
      lambda *a: loss(*a, axis_name=axes, block_size=block_size),
      mesh=the_mesh,
      in_specs=specs,
      out_specs=P(),
    )

  def every_case(all_args):
    return {
      name: jax.value_and_grad(case_fn(loss, len(args), batch_args), argnums=argnums)(
        *all_args[name]
      )
      for name, (loss, _, args, argnums, batch_args) in CASES.items()
    }

  inputs = {name: tuple(as_float32(a) for a in case[2]) for name, case in CASES.items()}
  # The programs are tiny and run once: LLVM's optimisations cost more than they save.
  fast_compile = {"xla_backend_optimization_level": 0}
  with jax.default_matmul_precision("highest"):
    return jax.jit(every_case, compiler_options=fast_compile)(inputs)


@functools.cache
def _reference(name: str):
  _, ref, args, argnums, _ = CASES[name]
  return reference_value_and_grads(ref, args, argnums)


@pytest.mark.parametrize("mesh_name,path", MESH_PATHS)
@pytest.mark.parametrize("name", list(CASES))
def test_sharded_loss_matches_its_source(name, mesh_name, path):
  assert_close(_results(mesh_name, path)[name], _reference(name), argnums=CASES[name][3])
