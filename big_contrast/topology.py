r"""TPU slices by their usual names, their chips' memory and speed, and FLOPs of a traced step.

`parse_slice("v5e-256")` is a v5e pod slice (topology `v5e:16x16`, 256 chips of
15.75 GiB usable HBM and 197 bf16 TFLOP/s); `devices(slice_)` are its devices for
ahead-of-time compilation on any machine, through the TPU compiler
(`pip install 'big_contrast[tpu]'`; no TPU needed). `jaxpr_flops` counts the
matrix-multiply FLOPs of a traced function with every loop counted as often as
it runs: XLA's `cost_analysis()` counts a loop body once, so a step with
`microbatches=k` (two scans of k chunks) or a ring loss (a loop over devices)
would otherwise look k times cheaper than it is. Knows nothing of models or
training.

Slice names follow Cloud TPU: v5e-N and v6e-N count chips; v4-N and v5p-N count
TensorCores, two per chip (a v4-32 is 16 chips, `v4:2x2x4`). A topology name such
as `v5e:4x8` or `v5p:4x4x12` is accepted too.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import jax
import jax.extend as jex

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation: how its slices are named and what one chip holds and does."""

  name: str  # as in slice names: 'v5e'
  topology_prefix: str  # as libtpu names its topologies: 'v5e', 'v5' (v5p)
  chip_config: str  # 'default' (one TensorCore per chip) or 'megacore' (two, one device)
  cores_per_chip: int  # TensorCores a slice name counts per chip
  hbm_bytes: int  # HBM per chip on the spec sheet
  usable_hbm_bytes: int  # what the TPU compiler lets one program use (its OOM message)
  peak_flops: float  # dense bf16 FLOP/s per chip, spec sheet
  shapes: dict[int, str]  # chips -> canonical slice topology


# Topologies of the slices Cloud TPU sells (2-D tori for v5e/v6e, 3-D for v4/v5p).
_SHAPES_2D = {
  1: "1x1",
  4: "2x2",
  8: "2x4",
  16: "4x4",
  32: "4x8",
  64: "8x8",
  128: "8x16",
  256: "16x16",
}
_SHAPES_3D = {
  4: "2x2x1",
  8: "2x2x2",
  16: "2x2x4",
  32: "2x4x4",
  64: "4x4x4",
  128: "4x4x8",
  256: "4x8x8",
  512: "8x8x8",
  1024: "8x8x16",
  2048: "8x16x16",
  4096: "16x16x16",
}

# usable_hbm_bytes: "exceeds available HBM (15.75G)" and the like, from libtpu 0.0.42
# compiling a program too large for each generation (tests/test_compile_for.py).
GENERATIONS: dict[str, Generation] = {
  g.name: g
  for g in (
    Generation("v4", "v4", "megacore", 2, 32 * GiB, int(30.75 * GiB), 275e12, _SHAPES_3D),
    Generation("v5e", "v5e", "default", 1, 16 * GiB, int(15.75 * GiB), 197e12, _SHAPES_2D),
    Generation("v5p", "v5", "megacore", 2, 95 * GiB, int(95.74 * GiB), 459e12, _SHAPES_3D),
    Generation("v6e", "v6e", "default", 1, 32 * GiB, int(31.25 * GiB), 918e12, _SHAPES_2D),
  )
}


@dataclasses.dataclass(frozen=True)
class Slice:
  """A slice of one generation: `name` ('v5e-256'), its `topology` ('v5e:16x16'), `chips`."""

  generation: Generation
  topology: str
  chips: int

  @property
  def name(self) -> str:
    return f"{self.generation.name}-{self.chips * self.generation.cores_per_chip}"

  @property
  def usable_hbm_bytes(self) -> int:
    return self.generation.usable_hbm_bytes

  @property
  def peak_flops(self) -> float:
    """Dense bf16 FLOP/s of the whole slice."""
    return self.chips * self.generation.peak_flops


def parse_slice(name: str) -> Slice:
  """'v5e-256', 'v4-32', 'v5p-128' or a topology such as 'v5e:4x8' → a `Slice`."""
  gens = ", ".join(sorted(GENERATIONS))
  m = re.fullmatch(r"(v\w+?)(?:-(\d+)|:(\d+(?:x\d+)+))", name.strip())
  gen = GENERATIONS.get(m.group(1) if m else "")
  if gen is None:
    raise ValueError(
      f"--topology={name!r}: expected a slice name such as v5e-256 or v4-32, or a "
      f"topology such as v5e:4x8, of a generation in {gens}"
    )
  if m.group(2):  # a slice name: TensorCores (v4, v5p) or chips (v5e, v6e)
    cores = int(m.group(2))
    chips, rest = divmod(cores, gen.cores_per_chip)
    if rest or chips not in gen.shapes:
      known = ", ".join(f"{gen.name}-{c * gen.cores_per_chip}" for c in sorted(gen.shapes))
      raise ValueError(
        f"--topology={name!r}: no such {gen.name} slice; known: {known} "
        f"(or give a topology, e.g. {gen.name}:{gen.shapes[max(gen.shapes)]})"
      )
    return Slice(gen, f"{gen.topology_prefix}:{gen.shapes[chips]}", chips)
  dims = [int(d) for d in m.group(3).split("x")]
  want = len(next(iter(gen.shapes.values())).split("x"))
  if len(dims) != want or min(dims) < 1:
    raise ValueError(f"--topology={name!r}: a {gen.name} topology has {want} dimensions")
  return Slice(gen, f"{gen.topology_prefix}:{m.group(3)}", math.prod(dims))


def devices(slice_: Slice) -> list:
  """The slice's devices, for `jax.jit(...).lower(...).compile()` with no TPU attached.

  Needs libtpu (`pip install 'big_contrast[tpu]'`); the compiled program cannot run.
  """
  from jax.experimental import topologies  # noqa: PLC0415 — needs libtpu, only for AOT tools

  try:
    desc = topologies.get_topology_desc(
      platform="tpu",
      topology_name=slice_.topology,
      chip_config_name=slice_.generation.chip_config,
      chips_per_host_bounds=(2, 2, 1),
      num_slices=1,
    )
  except Exception as e:  # jaxlib raises RuntimeError/JaxRuntimeError, version-dependent
    raise RuntimeError(
      f"cannot describe TPU topology {slice_.topology} ({e}); the TPU compiler comes "
      "with `pip install 'big_contrast[tpu]'` (jax[tpu], libtpu)"
    ) from e
  return list(desc.devices)


# ------------------------------------------------------------------ FLOPs ---


def _dot_flops(eqn) -> int:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  out = eqn.outvars[0].aval.shape
  return 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _conv_flops(eqn) -> int:
  # Every output element sums over the kernel's input features and window:
  # rhs elements / rhs output features (grouped and gradient convolutions alike).
  rhs = eqn.invars[1].aval.shape
  out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
  out = eqn.outvars[0].aval.shape
  return 2 * math.prod(out) * math.prod(rhs) // rhs[out_feature_dim]


def _manual_devices(params) -> int:
  mesh = params["mesh"]
  axes = params.get("newly_manual_axes", params.get("manual_axes", mesh.axis_names))
  return math.prod(dict(mesh.shape)[a] for a in axes)


def jaxpr_flops(jaxpr) -> int:
  """Matrix-multiply and convolution FLOPs of a (closed) jaxpr, loops and devices counted.

  2·M·N·K per `dot_general`, 2·outputs·window·in-features per convolution; a
  `scan` body counts `length` times, a `shard_map` body once per device (its
  shapes are per device), `cond` its most expensive branch, and every other
  sub-jaxpr (jit, remat, custom_vjp) once. Elementwise work is not counted, as
  in model-FLOP utilisation. Returns the FLOPs of the whole computation over
  all devices; a `while` whose trip count is not static raises.
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "scan":
      total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"])
    elif name == "shard_map":
      total += _manual_devices(eqn.params) * jaxpr_flops(eqn.params["jaxpr"])
    elif name == "cond":
      total += max(jaxpr_flops(b) for b in eqn.params["branches"])
    elif name == "while":
      if jaxpr_flops(eqn.params["body_jaxpr"]):
        raise ValueError(
          "a while loop with matrix multiplies has no static trip count; write it as "
          "lax.scan or lax.fori_loop with Python-int bounds so its FLOPs can be counted"
        )
    else:
      total += sum(jaxpr_flops(sub) for sub in jex.core.jaxprs_in_params(eqn.params))
  return total


def flops_of(fn, *args: Sequence, **kwargs) -> int:
  """`jaxpr_flops` of `fn(*args)`, traced on (abstract) arguments; nothing is compiled."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))
