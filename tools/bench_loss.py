"""Memory and speed of the all-gather vs blockwise-ring CLIP (or SigLIP) loss.

Prints one JSON line per measurement:

* ``{"kind": "memory", ...}``: per-device temporary bytes of the compiled
  value-and-gradient step (``compiled.memory_analysis().temp_size_in_bytes``),
  compile only (nothing is allocated), for global batch sizes 2^min..2^max;
* ``{"kind": "time", ...}``: median wall time of one value-and-gradient call,
  actually run, at a given global batch size.

Runs on fake CPU devices by default (the XLA flag is set before JAX is
imported). Example::

  python tools/bench_loss.py --min-log2 14 --max-log2 20 --time-batch 8192
"""

import argparse
import json
import os
import statistics
import sys
import time


def _parse_args(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--devices", type=int, default=8, help="fake CPU devices (default 8)")
  p.add_argument("--dim", type=int, default=768, help="embedding width d (default 768)")
  p.add_argument("--min-log2", type=int, default=14, help="smallest global batch 2^N")
  p.add_argument("--max-log2", type=int, default=20, help="largest global batch 2^N")
  p.add_argument(
    "--loss", choices=("clip", "siglip"), default="clip", help="objective to measure (default clip)"
  )
  p.add_argument("--block-size", type=int, default=256, help="blockwise sub-block size k")
  p.add_argument(
    "--paths", default="allgather,blockwise", help="comma-separated subset of allgather,blockwise"
  )
  p.add_argument(
    "--time-batch",
    type=int,
    default=8192,
    help="global batch for the wall-time runs (0 skips them)",
  )
  p.add_argument("--repeats", type=int, default=5, help="timed calls; the median is printed")
  p.add_argument("--skip-memory", action="store_true", help="only the wall-time runs")
  p.add_argument(
    "--use-real-devices",
    action="store_true",
    help="do not force fake CPU devices (e.g. on a GPU/TPU host)",
  )
  return p.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS is not None and not ARGS.use_real_devices:
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
  )
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from big_contrast import losses  # noqa: E402


def make_step(mesh, block_size, loss_name="clip"):
  """jit(value_and_grad) of the global loss over zimg, ztxt, temperature."""

  def local_loss(zi, zt, t):
    if loss_name == "siglip":
      return losses.siglip_loss(
        zi, zt, temperature=t, bias=-10.0, axis_name="data", block_size=block_size
      )
    return losses.clip_loss(zi, zt, temperature=t, axis_name="data", block_size=block_size)

  loss = jax.shard_map(local_loss, mesh=mesh, in_specs=(P("data"), P("data"), P()), out_specs=P())
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def _shapes(mesh, batch, dim):
  rows = NamedSharding(mesh, P("data"))
  return (
    jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=rows),
    jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=rows),
    jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P())),
  )


def measure_memory(mesh, loss_name, path, block_size, batch, dim):
  step = make_step(mesh, block_size if path == "blockwise" else None, loss_name)
  start = time.perf_counter()
  try:
    compiled = step.lower(*_shapes(mesh, batch, dim)).compile()
  except Exception as e:  # noqa: BLE001  (report, don't hide, what failed)
    return {
      "kind": "memory",
      "loss": loss_name,
      "path": path,
      "global_batch": batch,
      "error": repr(e)[:300],
    }
  mem = compiled.memory_analysis()
  return {
    "kind": "memory",
    "loss": loss_name,
    "path": path,
    "global_batch": batch,
    "dim": dim,
    "devices": mesh.size,
    "block_size": block_size if path == "blockwise" else None,
    "temp_bytes_per_device": int(mem.temp_size_in_bytes),
    "argument_bytes_per_device": int(mem.argument_size_in_bytes),
    "output_bytes_per_device": int(mem.output_size_in_bytes),
    "compile_s": round(time.perf_counter() - start, 2),
  }


def measure_time(mesh, loss_name, paths, block_size, batch, dim, repeats):
  """Median wall time per path; the paths alternate call by call so that a
  noisy, shared machine slows them alike."""
  rng = np.random.default_rng(0)
  z = rng.normal(size=(2, batch, dim)).astype(np.float32)
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  rows = NamedSharding(mesh, P("data"))
  zi, zt = jax.device_put(z[0], rows), jax.device_put(z[1], rows)
  t = jax.device_put(jnp.float32(0.07), NamedSharding(mesh, P()))
  steps = {p: make_step(mesh, block_size if p == "blockwise" else None, loss_name) for p in paths}
  for step in steps.values():
    jax.block_until_ready(step(zi, zt, t))  # compile + warm up
  times = {p: [] for p in paths}
  for _ in range(repeats):
    for path, step in steps.items():
      start = time.perf_counter()
      jax.block_until_ready(step(zi, zt, t))
      times[path].append(time.perf_counter() - start)
  return [
    {
      "kind": "time",
      "loss": loss_name,
      "path": path,
      "global_batch": batch,
      "dim": dim,
      "devices": mesh.size,
      "block_size": block_size if path == "blockwise" else None,
      "median_s": round(statistics.median(ts), 4),
      "all_s": [round(x, 4) for x in ts],
    }
    for path, ts in times.items()
  ]


def main(args):
  n = min(args.devices, len(jax.devices()))
  mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Explicit,), devices=jax.devices()[:n])
  paths = [p.strip() for p in args.paths.split(",") if p.strip()]
  print(
    json.dumps(
      {"kind": "setup", "backend": jax.default_backend(), "devices": n, "jax": jax.__version__}
    ),
    flush=True,
  )
  if not args.skip_memory:
    for log2 in range(args.min_log2, args.max_log2 + 1):
      for path in paths:
        record = measure_memory(mesh, args.loss, path, args.block_size, 2**log2, args.dim)
        print(json.dumps(record), flush=True)
  if args.time_batch:
    for record in measure_time(
      mesh, args.loss, paths, args.block_size, args.time_batch, args.dim, args.repeats
    ):
      print(json.dumps(record), flush=True)


if __name__ == "__main__":
  main(ARGS)
