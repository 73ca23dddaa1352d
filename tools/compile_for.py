r"""Compiles a config's train step for a TPU slice, here, with no TPU: memory per chip, fit, speed.

  pip install -e '.[tpu]'    # the TPU compiler (libtpu); no TPU needed
  python tools/compile_for.py --topology=v5e-256 --config=configs/clip.py:vit_b16 \
      [--config.batch_size=1048576 ...] [--fit] [--mfu=0.5] [--json_out=row.json]

Builds the trainer's own step (`big_contrast.train.make_train_step` on a
`Trainee` of the config, on a mesh of the slice's devices), lowers it on
abstract inputs of the shapes and shardings the trainer feeds it, and compiles
it with the real TPU compiler; the evaluation forward pass (`Encoder.fn`) is
compiled beside it. Prints one JSON object, then a summary:

* bytes per chip: parameters, optimizer state, batch (the step's arguments),
  temporaries, the compiler's total against the HBM it lets a program use, and
  `fits`. A program the compiler refuses is `fits: false` with its message;
* FLOPs per step: `model_flops` (the un-chunked step without rematerialisation:
  what MFU counts) and `executed_flops` (with gradient caching's second forward
  pass and remat's), both from the traced step with every loop counted as often
  as it runs (`big_contrast.topology.jaxpr_flops`; XLA's own count, also
  printed, sees a loop body once);
* the step time and examples/s projected at `--mfu`, and the hardware
  utilisation that MFU implies once the recomputation is paid for;
* compile seconds.

`--fit` searches the smallest power-of-two `config.microbatches` that fits
(one compile per probe: the config's own, a guess from its memory, then
bisection); if none does, it halves `config.loss.block_size` of a ring loss
and searches again.

tools/scaling_table.py runs it over the recipes for docs/scaling.md's table.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time

# The TPU compiler runs here without a TPU: keep JAX on the CPU backend and tell
# libtpu there is no pod to look for (it would print errors, not fail).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
# No chip is opened, so the lock libtpu takes against a second process on the
# same TPU would only stop two compiles from running side by side.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file:variant.", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5e-256", "Slice: v5e-256, v4-32, v5p-128, v5e:4x8.")
_FIT = flags.DEFINE_bool("fit", False, "Search the smallest config.microbatches that fits.")
_MFU = flags.DEFINE_float("mfu", 0.5, "Model-FLOP utilisation the projected step time assumes.")
_VOCAB = flags.DEFINE_integer(
  "vocab_size", 32_000, "Text vocabulary when config.text.tokenizer is an unset .model path."
)
_NUM_LABELS = flags.DEFINE_integer("num_labels", 10, "Classes of a multi-hot `labels` field.")
_EVAL = flags.DEFINE_bool("eval", True, "Also compile the evaluation forward pass.")
_JSON_OUT = flags.DEFINE_string(
  "json_out", None, "Also write the JSON result to this file, and each compile's to FILE.probes."
)

MiB, GiB = 2**20, 2**30

# ------------------------------------------------------------ Abstract inputs ---


def vocab_size(config, default: int) -> int | None:
  """The tokenizer's vocabulary: 259 for 'bytes', V for a bundled 'NAME:V', else `default`."""
  from big_contrast import tasks  # noqa: PLC0415 — after absl parsed the flags

  if not tasks.get(config.task).needs_tokenizer:
    return None
  if config.text.tokenizer == "bytes":
    from big_contrast.data import tokenizer  # noqa: PLC0415

    return tokenizer.ByteTokenizer().vocab_size
  from big_contrast.data import bundled  # noqa: PLC0415

  spec = bundled.vocabulary_spec(str(config.text.tokenizer))
  return spec[1] if spec else default


def abstract_batch(config, mesh, *, num_labels: int = 10) -> dict:
  """ShapeDtypeStructs of the global batch the input pipeline hands the trainer.

  The fields of `big_contrast.data.pipeline`'s batches of the task's kind
  (pixels uint8, token ids int32, `index`, `skipped`), the label field the loss
  reads, and `augment_seed` with on-device augmentation, all split over the
  batch axes. Pixels have the image tower's `channels` (3 unless it says).
  """
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from big_contrast import objectives, sharding, tasks  # noqa: PLC0415

  b, task = config.batch_size, tasks.get(config.task)
  spec = sharding.batch_sharding(mesh)
  fields = {"index": ((), jnp.int32), "skipped": ((), jnp.int32)}
  if "image" in config.model:
    s, c = config.data.image_size, config.model.image.get("channels", 3)
    pixels = (s, s, c)
  if "image" in task.inputs:
    fields["image"] = (pixels, jnp.uint8)
  if "views" in task.inputs:
    fields["views"] = ((config.data.num_views, *pixels), jnp.uint8)
    if config.data.augment.device:
      fields["augment_seed"] = ((), jnp.uint32)
  if "text" in task.inputs:
    fields["text"] = ((config.text.max_len,), jnp.int32)
  if task.data_kind == "image_text":
    fields["text_id"] = ((), jnp.int32)
  label_key = objectives.settings(config.loss).get("label_key")
  if label_key == "label":
    fields["label"] = ((), jnp.int32)
  elif label_key == "labels":
    fields["labels"] = ((num_labels,), jnp.int32)
  return {
    k: jax.ShapeDtypeStruct((b, *shape), dtype, sharding=spec)
    for k, (shape, dtype) in fields.items()
  }


def shard_bytes(tree) -> int:
  """Bytes one device holds of a pytree of sharded ShapeDtypeStructs (the largest share)."""
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
  return total


# ------------------------------------------------------------------- Compile ---


def _without_remat_or_chunks(config):
  model_config = config.copy_and_resolve_references()
  with model_config.unlocked():
    model_config.microbatches = 1
    model_config.model.remat = False
  return model_config


def step_flops(config, mesh, vocab, num_labels: int = 10) -> int:
  """Global matmul FLOPs of one train step of `config` (traced, not compiled)."""
  from big_contrast import topology, train  # noqa: PLC0415
  from big_contrast.state import Trainee  # noqa: PLC0415

  trainee = Trainee(config, mesh, vocab_size=vocab)
  step = train.make_train_step(trainee)
  traced = step.trace(trainee.abstract_state, abstract_batch(config, mesh, num_labels=num_labels))
  return topology.jaxpr_flops(traced.jaxpr)


def _validate(config) -> None:
  """`config_lib.validate`, less the data and tokenizer paths a compile never reads."""
  from big_contrast import config_lib  # noqa: PLC0415

  c = config.copy_and_resolve_references()
  with c.unlocked():
    if c.data.name is None:
      c.data.name = "unread"
    if "text" in c and c.text.tokenizer is None:
      c.text.tokenizer = "unread.model"
  config_lib.validate(c)


_OOM = re.compile(r"RESOURCE_EXHAUSTED|Ran out of memory|exceeds available HBM|Out of memory")


def _parse_oom(message: str) -> dict:
  """Figures from the TPU compiler's out-of-memory message (GiB), where it gives them."""
  out = {}
  m = re.search(
    r"required for ([\w ]+?) \(([\d.]+)([GMK])\) exceeds available HBM \(([\d.]+)G", message
  )
  if m:
    scale = {"G": 1, "M": 1 / 1024, "K": 1 / 2**20}[m.group(3)]
    out["refused_gib"] = round(float(m.group(2)) * scale, 2)
    out["refused_what"] = m.group(1)
    out["available_gib"] = float(m.group(4))
  m = re.search(r"Used ([\d.]+)([GM]) of ([\d.]+)G hbm", message)
  if m:
    out["used_gib"] = round(float(m.group(1)) / (1024 if m.group(2) == "M" else 1), 2)
  return out


def compile_step(config, slice_, *, vocab, num_labels=10, mfu=0.5) -> dict:
  """Compiles `config`'s train step for `slice_`; the report as a dict."""
  from big_contrast import sharding, topology, train  # noqa: PLC0415
  from big_contrast.state import Trainee  # noqa: PLC0415

  _validate(config)
  devices = topology.devices(slice_)
  mesh = sharding.make_mesh(config.mesh, devices)
  if config.batch_size % mesh.size:
    raise ValueError(
      f"config.batch_size={config.batch_size} does not split over the {mesh.size} chips "
      f"of {slice_.name}; use a multiple of {mesh.size} or a smaller slice"
    )
  t0 = time.perf_counter()
  trainee = Trainee(config, mesh, vocab_size=vocab)
  state = trainee.abstract_state
  batch = abstract_batch(config, mesh, num_labels=num_labels)
  traced = train.make_train_step(trainee).trace(state, batch)
  executed = topology.jaxpr_flops(traced.jaxpr)
  model = step_flops(_without_remat_or_chunks(config), mesh, vocab, num_labels)
  trace_s = time.perf_counter() - t0

  chips, usable = slice_.chips, slice_.usable_hbm_bytes
  row = dict(
    topology=slice_.name,
    topology_name=slice_.topology,
    chips=chips,
    mesh=dict(mesh.shape),
    batch_size=config.batch_size,
    microbatches=config.microbatches,
    block_size=config.loss.get("block_size"),
    per_chip=dict(
      params=shard_bytes(state["params"]),
      optimizer=shard_bytes(state["opt_state"]),
      other_state=shard_bytes({k: state[k] for k in ("step", "rest")}),
      batch=shard_bytes(batch),
    ),
    hbm_usable_bytes=usable,
    model_flops_per_chip=model / chips,
    executed_flops_per_chip=executed / chips,
  )
  t0 = time.perf_counter()
  lowered = traced.lower()
  try:
    compiled = lowered.compile()
  except Exception as e:  # the compiler's RESOURCE_EXHAUSTED: the answer, not a failure
    if not _OOM.search(str(e)):
      raise
    row.update(fits=False, compile_s=round(time.perf_counter() - t0, 1), trace_s=round(trace_s, 1))
    row["compiler_refused"] = str(e).split("\n")[0][:400]
    # The rest names the largest allocations: what to shrink.
    row["compiler_message"] = str(e)[:20_000]
    row.update(_parse_oom(str(e)))
    return _project(row, config, slice_, mfu)
  row["compile_s"] = round(time.perf_counter() - t0, 1)
  row["trace_s"] = round(trace_s, 1)
  mem = compiled.memory_analysis()
  total = (
    mem.argument_size_in_bytes
    + mem.output_size_in_bytes
    - mem.alias_size_in_bytes
    + mem.temp_size_in_bytes
    + mem.generated_code_size_in_bytes
  )
  row["per_chip"].update(
    arguments=int(mem.argument_size_in_bytes),
    outputs_not_aliased=int(mem.output_size_in_bytes - mem.alias_size_in_bytes),
    temporaries=int(mem.temp_size_in_bytes),
    code=int(mem.generated_code_size_in_bytes),
    total=int(total),
  )
  row["fits"] = bool(total <= usable)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  row["xla_flops_per_chip_loop_bodies_once"] = float(cost.get("flops", 0.0)) if cost else None
  return _project(row, config, slice_, mfu)


def compile_eval(config, slice_, *, vocab) -> dict:
  """The evaluators' forward pass (`Encoder.fn`) at `config.eval.batch_size`, per modality."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from big_contrast import sharding, topology  # noqa: PLC0415
  from big_contrast.evaluate import Encoder  # noqa: PLC0415
  from big_contrast.state import Trainee  # noqa: PLC0415

  mesh = sharding.make_mesh(config.mesh, topology.devices(slice_))
  trainee = Trainee(config, mesh, vocab_size=vocab)
  encoder = Encoder(trainee, trainee.abstract_state, step=0)
  # As Encoder._map batches: a multiple of the devices, at least one row each.
  n = mesh.size
  b = max(n, -(-config.eval.batch_size // n) * n)
  spec = sharding.batch_sharding(mesh)
  inputs = {}
  if "image" in encoder.modalities:
    s, c = config.data.image_size, config.model.image.get("channels", 3)
    inputs["encode_image"] = jax.ShapeDtypeStruct((b, s, s, c), jnp.uint8, sharding=spec)
  if "text" in encoder.modalities:
    inputs["encode_text"] = jax.ShapeDtypeStruct((b, config.text.max_len), jnp.int32, sharding=spec)
  out = {"batch_size": b}
  for method, x in inputs.items():
    fn = encoder.fn(method)  # functools.partial(jitted apply, params, rest)
    t0 = time.perf_counter()
    mem = fn.func.lower(*fn.args, x).compile().memory_analysis()
    out[method] = dict(
      compile_s=round(time.perf_counter() - t0, 1),
      total=int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes),
      temporaries=int(mem.temp_size_in_bytes),
    )
  return out


def _project(row: dict, config, slice_, mfu: float) -> dict:
  """Step time and examples/s at `mfu` of the slice's bf16 peak, from the model FLOPs."""
  peak = slice_.generation.peak_flops
  step_s = row["model_flops_per_chip"] / (mfu * peak)
  row.update(
    mfu=mfu,
    peak_flops_per_chip=peak,
    projected_step_s=step_s,
    projected_examples_per_s=config.batch_size / step_s,
    # What the chips must sustain, recomputation included, for that MFU.
    hardware_utilisation_needed=mfu * row["executed_flops_per_chip"] / row["model_flops_per_chip"],
  )
  return row


# ----------------------------------------------------------------------- Fit ---


def _with(config, **changes):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    for key, value in changes.items():
      node = c
      *path, leaf = key.split(".")
      for p in path:
        node = node[p]
      node[leaf] = value
  return c


def _needed_bytes(report: dict) -> int | None:
  """The compiled total per chip, or what the compiler said it would have needed."""
  pc = report["per_chip"]
  if "total" in pc:
    return pc["total"]
  if "refused_gib" in report:
    return int(report["refused_gib"] * GiB) + sum(
      pc.get(k, 0) for k in ("params", "optimizer", "other_state", "batch")
    )
  return None


def _first_guess(report: dict, ks: list[int], usable: int) -> int:
  """The k to compile first: memory taken as fixed + activations / k.

  Fixed: the arguments, the gradient and its accumulator; the rest of what one
  compile needed is taken to shrink with k. Aims at 90% of the usable HBM.
  """
  needed, pc = _needed_bytes(report), report["per_chip"]
  if needed is None:
    return ks[len(ks) // 2]
  fixed = sum(pc.get(k, 0) for k in ("optimizer", "other_state", "batch")) + 3 * pc.get("params", 0)
  room = 0.9 * usable - fixed
  if room <= 0:
    return ks[-1]
  want = max(needed - fixed, 0) * report["microbatches"] / room
  return next((k for k in ks if k >= want), ks[-1])


def _can_microbatch(config) -> bool:
  """Gradient caching cannot replay dropout masks (`train.make_train_step` refuses)."""
  from big_contrast import tasks  # noqa: PLC0415

  return not (tasks.get(config.task).dropout_key and float(config.model.text.dropout) > 0)


def fit(config, slice_, *, compile_fn, log=print) -> tuple[dict, list[dict]]:
  """The smallest power-of-two microbatches that fits, halving a ring's block_size if needed.

  compile_fn(config) → report dict with `fits`. The first probe is the config's
  own microbatches; if it fits, bisection over the powers of two below it,
  else a guess from its memory (`_first_guess`), then bisection over the powers
  of two above it (all of them dividing the per-chip batch). Returns
  (fitting report, every report compiled on the way); the fitting report is
  the last one tried if nothing fits.
  """
  per_chip = config.batch_size // slice_.chips
  tried = []

  def probe(c):
    r = compile_fn(c)
    tried.append(r)
    needed = _needed_bytes(r)
    log(
      f"  microbatches={c.microbatches} block_size={c.loss.get('block_size')}: "
      + (f"{needed / GiB:.2f} GiB" if needed is not None else "refused")
      + (" (refused)" if "total" not in r["per_chip"] else "")
      + f", fits={r['fits']} ({r['compile_s']} s)",
    )
    return r

  def search(c):
    first = probe(c)
    if not _can_microbatch(c):
      return first
    own = c.microbatches
    ks = [k for k in (2**e for e in range(31)) if k <= per_chip and per_chip % k == 0]
    if first["fits"]:  # look below the config's own
      best, ks = first, [k for k in ks if k < own]
      mid = ks[len(ks) // 2] if ks else None
    else:
      best, ks = None, [k for k in ks if k > own]
      mid = _first_guess(first, ks, slice_.usable_hbm_bytes) if ks else None
    last = first
    while ks:
      last = probe(_with(c, microbatches=mid))
      if last["fits"]:
        best, ks = last, [k for k in ks if k < mid]
      else:
        ks = [k for k in ks if k > mid]
      mid = ks[len(ks) // 2] if ks else None
    return best or last

  best = search(config)
  block = config.loss.get("block_size")
  while not best["fits"] and block and block > 128:
    block //= 2
    log(f"  nothing fits at block_size={block * 2}; trying block_size={block}")
    best = search(_with(config, **{"loss.block_size": block}))
  return best, tried


# ---------------------------------------------------------------------- Main ---


def _gib(x) -> str:
  return f"{x / GiB:.2f}"


def summary(r: dict) -> str:
  pc = r["per_chip"]
  lines = [
    f"{r['topology']} ({r['topology_name']}, {r['chips']} chips, mesh {r['mesh']}): "
    f"B = {r['batch_size']:,}, microbatches = {r['microbatches']}, block_size = {r['block_size']}",
    f"  per chip: params {pc['params'] / MiB:.0f} MiB, optimizer {pc['optimizer'] / MiB:.0f} MiB,"
    f" batch {pc['batch'] / MiB:.0f} MiB"
    + (
      f", temporaries {pc['temporaries'] / MiB:.0f} MiB; total {_gib(pc['total'])} GiB"
      f" of {_gib(r['hbm_usable_bytes'])} GiB usable: "
      if "total" in pc
      else f"; the compiler refused: {r['compiler_refused']}\n  "
    )
    + ("FITS" if r["fits"] else "DOES NOT FIT"),
    f"  FLOPs per chip and step: model {r['model_flops_per_chip']:.3e}, executed "
    f"{r['executed_flops_per_chip']:.3e} (XLA, loop bodies once: "
    f"{r.get('xla_flops_per_chip_loop_bodies_once') or float('nan'):.3e})",
    f"  at {r['mfu']:.0%} MFU: {r['projected_step_s']:.3f} s per step, "
    f"{r['projected_examples_per_s']:,.0f} examples/s (the chips busy "
    f"{r['hardware_utilisation_needed']:.0%} counting recomputation)",
    f"  compile {r['compile_s']} s (trace {r['trace_s']} s)",
  ]
  for method, e in r.get("eval", {}).items():
    if method != "batch_size":
      lines.append(
        f"  eval {method} at B = {r['eval']['batch_size']}: {_gib(e['total'])} GiB per chip,"
        f" compile {e['compile_s']} s"
      )
  return "\n".join(lines)


def main(argv):
  del argv
  from big_contrast import topology  # noqa: PLC0415

  config = _CONFIG.value
  slice_ = topology.parse_slice(_TOPOLOGY.value)
  vocab = vocab_size(config, _VOCAB.value)

  def compile_fn(c):
    r = compile_step(c, slice_, vocab=vocab, num_labels=_NUM_LABELS.value, mfu=_MFU.value)
    if _JSON_OUT.value:  # every probe as it finishes: a search stopped midway keeps them
      with open(_JSON_OUT.value + ".probes", "a") as f:
        f.write(json.dumps({k: v for k, v in r.items() if k != "compiler_message"}) + "\n")
    return r

  if _FIT.value:
    print(f"Searching microbatches for {slice_.name}:", flush=True)
    row, tried = fit(config, slice_, compile_fn=compile_fn)
    row["tried"] = [
      dict(microbatches=t["microbatches"], block_size=t["block_size"], fits=t["fits"])
      | {"total": t["per_chip"].get("total"), "compile_s": t["compile_s"]}
      for t in tried
    ]
  else:
    row = compile_fn(config)
  if _EVAL.value:
    row["eval"] = compile_eval(config, slice_, vocab=vocab)
  row["command"] = shlex.join(["python", "tools/compile_for.py", *sys.argv[1:]])
  text = json.dumps(row, indent=1)
  print(text)
  print(summary(row), flush=True)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      f.write(text)


if __name__ == "__main__":
  app.run(main)
