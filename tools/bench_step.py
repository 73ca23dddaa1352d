r"""Benchmarks one training step of a config on the current devices; prints JSON lines.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tools/bench_step.py \
      --config=configs/clip.py:digits --config.batch_size=256 --steps=10

Prints, per microbatch setting: compile seconds, XLA's temporary and argument
bytes per device (`memory_analysis()`), and XLA's FLOP count for the step (whole
only for microbatches=1: XLA counts a loop body once); for
the configured `config.microbatches` also the measured step time, examples/s
and MFU against the device's peak (on CPU: a float32 matmul peak measured in
the same run). MFU counts model FLOPs: the matmuls of the un-chunked step
without rematerialisation, every loop counted as often as it runs
(`big_contrast.topology.jaxpr_flops`, as tools/compile_for.py).
"""

from __future__ import annotations

import json
import sys
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file:variant.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after one warm-up).")
_MICROBATCHES = flags.DEFINE_list(
  "microbatches", ["1", "2", "4", "8"], "Microbatch settings whose compiled memory is reported."
)
_SEED = flags.DEFINE_integer("seed", 0, "Synthetic batch seed.")

# bf16 dense peak FLOP/s per chip, from the vendors' spec sheets.
PEAK_FLOPS = {
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5e": 197e12,
  "TPU v5p": 459e12,
  "TPU v6 lite": 918e12,
  "TPU v6e": 918e12,
  "NVIDIA H100": 989e12,
  "NVIDIA H200": 989e12,
  "NVIDIA A100": 312e12,
}


def cpu_matmul_peak(n: int = 1024, repeats: int = 10) -> float:
  """float32 FLOP/s of a large matmul on one CPU device (all its threads)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  x = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  t = time.perf_counter()
  for _ in range(repeats):
    x = f(x)
  x.block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - t)


def synthetic_batch(config, rng, vocab_size: int):
  """Random inputs of the shapes the config's task trains on, plus the label fields losses read."""
  import numpy as np  # noqa: PLC0415 — after absl parsed the flags, so --help is instant

  from big_contrast import tasks  # noqa: PLC0415

  b, s = config.batch_size, config.data.image_size
  make = {
    "image": lambda: rng.integers(0, 256, size=(b, s, s, 3), dtype=np.uint8),
    "views": lambda: rng.integers(0, 256, size=(b, config.data.num_views, s, s, 3), dtype=np.uint8),
    "text": lambda: rng.integers(3, vocab_size, size=(b, config.text.max_len)).astype(np.int32),
  }
  batch = {name: make[name]() for name in tasks.get(config.task).inputs}
  batch.update(
    text_id=np.arange(b, dtype=np.int32),
    label=rng.integers(0, 10, size=(b,)).astype(np.int32),
    labels=(rng.random((b, 10)) < 0.3).astype(np.int32),
  )
  return batch


def main(argv):
  del argv
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from big_contrast import sharding, tasks, topology, train  # noqa: PLC0415
  from big_contrast.state import Trainee  # noqa: PLC0415

  config = _CONFIG.value
  mesh = sharding.make_mesh(config.mesh)
  vocab = 259 if tasks.get(config.task).needs_tokenizer else None
  batch = sharding.host_batch_to_global(
    synthetic_batch(config, np.random.default_rng(_SEED.value), vocab or 0), mesh
  )
  device = jax.devices()[0]
  base = dict(
    config=sys.argv[1] if len(sys.argv) > 1 else "",
    devices=len(jax.devices()),
    device_kind=device.device_kind,
    mesh=dict(mesh.shape),
    global_batch=config.batch_size,
  )

  timed, timed_k = None, config.microbatches
  model_config = config.copy_and_resolve_references()
  with model_config.unlocked():
    model_config.microbatches, model_config.model.remat = 1, False
  model_trainee = Trainee(model_config, mesh, vocab_size=vocab)
  traced = train.make_train_step(model_trainee).trace(model_trainee.abstract_state, batch)
  model_flops = topology.jaxpr_flops(traced.jaxpr)
  for k in sorted({int(m) for m in _MICROBATCHES.value} | {config.microbatches}):
    if config.batch_size // mesh.size % k:
      continue
    with config.unlocked():
      config.microbatches = k
    trainee = Trainee(config, mesh, vocab_size=vocab)
    state = trainee.init(config.seed)
    t = time.perf_counter()
    compiled = train.make_train_step(trainee).lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    row = dict(
      base,
      microbatches=k,
      compile_s=round(compile_s, 2),
      temp_bytes_per_device=int(mem.temp_size_in_bytes),
      argument_bytes_per_device=int(mem.argument_size_in_bytes),
      xla_flops_per_device=float(cost["flops"]) if cost and "flops" in cost else None,
    )
    print(json.dumps(row), flush=True)
    if k == timed_k:
      timed = (k, compiled, state, row)
    else:
      del compiled, state

  k, compiled, state, row = timed
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  t = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - t) / _STEPS.value
  # Model FLOPs of the whole step (all devices), not the recomputation that
  # microbatching and remat add.
  flops = model_flops
  if device.platform == "cpu":  # fake CPU devices share the host: its peak is the bound
    peak, peak_src = cpu_matmul_peak(), "measured f32 matmul, whole host"
  else:
    chip = next((v for name, v in PEAK_FLOPS.items() if device.device_kind.startswith(name)), None)
    peak = chip * len(jax.devices()) if chip else None
    peak_src = "bf16 spec sheet x devices"
  print(
    json.dumps(
      dict(
        base,
        microbatches=k,
        step_s=round(step_s, 4),
        examples_per_s=round(config.batch_size / step_s, 1),
        achieved_flops_per_s=flops / step_s if flops else None,
        peak_flops_per_s=peak,
        peak_source=peak_src,
        mfu=(flops / step_s / peak) if (flops and peak) else None,
      )
    ),
    flush=True,
  )


if __name__ == "__main__":
  app.run(main)
