"""Memory and speed of an objective's all-gather path against its blockwise ring path.

Measures the training loss as the trainer builds it (`objectives.make_loss_fn`,
under `shard_map` over a {data: n, fsdp: 1} mesh), value and gradient with
respect to every model output, and prints one JSON line per measurement:

* ``{"kind": "memory", ...}``: per-device temporary bytes of the compiled
  value-and-gradient step (``compiled.memory_analysis().temp_size_in_bytes``),
  compile only (nothing is allocated), for global batch sizes 2^min .. 2^max;
* ``{"kind": "time", ...}``: wall time of one value-and-gradient call at a given
  global batch, actually run, the two paths alternating call by call (A B A B):
  a shared machine slows both alike, and the paired ratio is what to read;
* ``{"kind": "summary", ...}``: per path the growth of the temporaries from the
  smallest to the largest batch (linear: ×2^(max-min)), the all-gather /
  blockwise ratio at the largest, and the median paired time ratio.

B counts samples: a multi-view objective holds B·V views. Runs on fake CPU
devices by default (the XLA flag is set before JAX is imported). Examples::

  python tools/bench_loss.py --loss clip
  python tools/bench_loss.py --loss supcon --set decoupled=true --views 2
  python tools/bench_loss.py --loss all --time-batch 8192 --repeats 3
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
  p.add_argument("--loss", default="clip", help="an objective of big_contrast.objectives, or 'all'")
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="an objective setting, e.g. --set label_smoothing=0.1 (repeatable)",
  )
  p.add_argument("--devices", type=int, default=8, help="fake CPU devices (default 8)")
  p.add_argument("--dim", type=int, default=768, help="embedding width d (default 768)")
  p.add_argument("--views", type=int, default=2, help="views per sample, multi-view objectives")
  p.add_argument("--min-log2", type=int, default=14, help="smallest global batch 2^N")
  p.add_argument("--max-log2", type=int, default=20, help="largest global batch 2^N")
  p.add_argument("--block-size", type=int, default=256, help="blockwise sub-block size k")
  p.add_argument(
    "--paths", default="allgather,blockwise", help="comma-separated subset of allgather,blockwise"
  )
  p.add_argument(
    "--time-batch", type=int, default=8192, help="global batch of the timed runs (0: none)"
  )
  p.add_argument("--repeats", type=int, default=3, help="timed calls per path")
  p.add_argument("--skip-memory", action="store_true", help="only the timed runs")
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
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from big_contrast import objectives, sharding  # noqa: E402

NUM_LABELS = 10  # classes of SupCon's labels and SoftCon's multi-hot sets


def _value(text: str):
  low = text.lower()
  if low in ("true", "false"):
    return low == "true"
  if low == "none":
    return None
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def loss_settings(name: str, sets: list[str]) -> dict:
  cfg = {"name": name}
  for item in sets:
    key, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
    cfg[key] = _value(value)
  objectives.settings(cfg)  # unknown keys are errors naming the objective's settings
  return cfg


def _inputs(cfg: dict, batch: int, dim: int, views: int):
  """(out, batch) as (shape, dtype) trees: what the model would hand the loss."""
  objective = objectives.get(cfg["name"])
  settings = objectives.settings(cfg)
  f32 = jnp.float32
  momentum = settings.get("momentum") is not None
  if objective.task == "image_text":
    out = {"zimg": ((batch, dim), f32), "ztxt": ((batch, dim), f32), "temperature": ((), f32)}
    if cfg["name"] == "siglip":
      out["bias"] = ((), f32)
    if momentum:
      out |= {"zimg_key": ((batch, dim), f32), "ztxt_key": ((batch, dim), f32)}
  else:
    v = 2 if objective.task == "text" else views
    out = {"z": ((batch, v, dim), f32)}
    if momentum:
      out["z_key"] = ((batch, v, dim), f32)
  fields = {"text_id": ((batch,), jnp.int32)}
  if "label_key" in settings:
    key = settings["label_key"]
    fields[key] = ((batch, NUM_LABELS), f32) if key == "labels" else ((batch,), jnp.int32)
  return out, {
    k: v for k, v in fields.items() if k in objective.batch_fields or k == settings.get("label_key")
  }


def make_step(cfg: dict, mesh, path: str, block_size: int):
  loss_cfg = dict(cfg, block_size=None if path == "allgather" else block_size)
  loss_fn = objectives.make_loss_fn(loss_cfg, mesh)
  return jax.jit(jax.value_and_grad(loss_fn))


def _abstract(tree, mesh):
  axes = sharding.batch_axes(mesh)
  return jax.tree.map(
    lambda sd: jax.ShapeDtypeStruct(
      sd[0], sd[1], sharding=NamedSharding(mesh, P() if not sd[0] else P(axes))
    ),
    tree,
    is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple),
  )


def _concrete(tree, mesh, seed=0):
  rng = np.random.default_rng(seed)
  axes = sharding.batch_axes(mesh)

  def make(sd):
    shape, dtype = sd
    if not shape:
      x = np.float32(0.07)
    elif dtype == jnp.int32:
      x = rng.integers(0, NUM_LABELS, size=shape).astype(np.int32)
    elif len(shape) == 2 and shape[1] == NUM_LABELS:
      x = (rng.random(shape) < 0.3).astype(np.float32)
    else:
      x = rng.normal(size=shape).astype(np.float32)
      x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return jax.device_put(x, NamedSharding(mesh, P() if not shape else P(axes)))

  return jax.tree.map(
    make, tree, is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple)
  )


def measure_memory(cfg, mesh, path, block_size, batch, dim, views):
  out, fields = _inputs(cfg, batch, dim, views)
  record = {"kind": "memory", "loss": cfg, "path": path, "global_batch": batch}
  start = time.perf_counter()
  try:
    step = make_step(cfg, mesh, path, block_size)
    compiled = step.lower(_abstract(out, mesh), _abstract(fields, mesh)).compile()
  except Exception as e:  # noqa: BLE001  (report, don't hide, what failed)
    return {**record, "error": repr(e)[:300]}
  mem = compiled.memory_analysis()
  return {
    **record,
    "dim": dim,
    "devices": mesh.size,
    "block_size": block_size if path == "blockwise" else None,
    "temp_bytes_per_device": int(mem.temp_size_in_bytes),
    "argument_bytes_per_device": int(mem.argument_size_in_bytes),
    "compile_s": round(time.perf_counter() - start, 2),
  }


def measure_time(cfg, mesh, paths, block_size, batch, dim, views, repeats):
  """Wall time per call, the paths alternating (A B A B ...)."""
  out, fields = _inputs(cfg, batch, dim, views)
  args = (_concrete(out, mesh), _concrete(fields, mesh, seed=1))
  steps = {p: make_step(cfg, mesh, p, block_size) for p in paths}
  values = {p: jax.block_until_ready(step(*args))[0] for p, step in steps.items()}  # compile
  times = {p: [] for p in paths}
  for _ in range(repeats):
    for path, step in steps.items():
      start = time.perf_counter()
      jax.block_until_ready(step(*args))
      times[path].append(time.perf_counter() - start)
  return [
    {
      "kind": "time",
      "loss": cfg,
      "path": path,
      "global_batch": batch,
      "dim": dim,
      "devices": mesh.size,
      "block_size": block_size if path == "blockwise" else None,
      "value": float(values[path]),
      "median_s": round(statistics.median(ts), 4),
      "all_s": [round(x, 4) for x in ts],
    }
    for path, ts in times.items()
  ]


def summary(cfg, memory: list[dict], timing: list[dict]) -> dict:
  out = {"kind": "summary", "loss": cfg}
  by_path = {}
  for r in memory:
    if "temp_bytes_per_device" in r:
      by_path.setdefault(r["path"], {})[r["global_batch"]] = r["temp_bytes_per_device"]
  for path, sizes in by_path.items():
    lo, hi = min(sizes), max(sizes)
    out[f"{path}_growth"] = round(sizes[hi] / max(sizes[lo], 1), 1)
    out[f"{path}_batch_ratio"] = hi // lo
    out[f"{path}_temp_gib_at_{hi}"] = round(sizes[hi] / 2**30, 3)
  if {"allgather", "blockwise"} <= set(by_path):
    common = set(by_path["allgather"]) & set(by_path["blockwise"])
    if common:
      hi = max(common)
      out["allgather_over_blockwise_at_max"] = round(
        by_path["allgather"][hi] / by_path["blockwise"][hi], 1
      )
  times = {r["path"]: r for r in timing}
  if {"allgather", "blockwise"} <= set(times):
    pairs = zip(times["blockwise"]["all_s"], times["allgather"]["all_s"])
    out["time_blockwise_over_allgather"] = round(statistics.median(b / a for b, a in pairs), 3)
    out["values_agree"] = bool(
      np.isclose(times["blockwise"]["value"], times["allgather"]["value"], rtol=1e-4)
    )
  return out


def main(args):
  n = min(args.devices, len(jax.devices()))
  mesh = sharding.make_mesh({"data": n, "fsdp": 1}, devices=jax.devices()[:n])
  paths = [p.strip() for p in args.paths.split(",") if p.strip()]
  names = sorted(objectives.OBJECTIVES) if args.loss == "all" else [args.loss]
  print(
    json.dumps(
      {"kind": "setup", "backend": jax.default_backend(), "devices": n, "jax": jax.__version__}
    ),
    flush=True,
  )
  for name in names:
    cfg = loss_settings(name, args.set if args.loss != "all" else [])
    memory, timing = [], []
    if not args.skip_memory:
      for log2 in range(args.min_log2, args.max_log2 + 1):
        for path in paths:
          record = measure_memory(cfg, mesh, path, args.block_size, 2**log2, args.dim, args.views)
          memory.append(record)
          print(json.dumps(record), flush=True)
    if args.time_batch:
      timing = measure_time(
        cfg, mesh, paths, args.block_size, args.time_batch, args.dim, args.views, args.repeats
      )
      for record in timing:
        print(json.dumps(record), flush=True)
    print(json.dumps(summary(cfg, memory, timing)), flush=True)


if __name__ == "__main__":
  main(ARGS)
