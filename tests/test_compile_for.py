"""tools/compile_for.py and big_contrast.topology: slice names, HBM, FLOPs under microbatching.

The FLOP counter is checked against XLA's own count on CPU where XLA's is whole
(programs without loops) and against the un-chunked train step; the tests
marked `tpu` compile for a TPU topology and need the TPU compiler
(`pip install -e '.[tpu]'`); without it they are skipped.
"""

import functools
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import pytest

from big_contrast import sharding, topology, train
from big_contrast.state import Trainee

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import compile_for  # noqa: E402

from configs import clip as clip_config  # noqa: E402

GiB = 2**30
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(
  not HAS_LIBTPU, reason="needs the TPU compiler: pip install -e '.[tpu]'"
)


# ------------------------------------------------------------ slice names ---


@pytest.mark.parametrize(
  "name, topology_name, chips, canonical",
  [
    ("v5e-256", "v5e:16x16", 256, "v5e-256"),
    ("v5e-32", "v5e:4x8", 32, "v5e-32"),
    ("v4-32", "v4:2x2x4", 16, "v4-32"),  # v4 names count TensorCores, two per chip
    ("v5p-128", "v5:4x4x4", 64, "v5p-128"),
    ("v6e-8", "v6e:2x4", 8, "v6e-8"),
    ("v5e:8x16", "v5e:8x16", 128, "v5e-128"),
    ("v5p:4x4x12", "v5:4x4x12", 192, "v5p-384"),
  ],
)
def test_slice_names_map_to_topologies_and_chips(name, topology_name, chips, canonical):
  s = topology.parse_slice(name)
  assert (s.topology, s.chips, s.name) == (topology_name, chips, canonical)


@pytest.mark.parametrize(
  "name, message",
  [
    ("v5e-48", "no such v5e slice"),
    ("v4-31", "no such v4 slice"),
    ("v7-8", "of a generation in v4, v5e, v5p, v6e"),
    ("v5e:4x4x4", "a v5e topology has 2 dimensions"),
    ("tpu", "expected a slice name"),
  ],
)
def test_unknown_slices_are_errors_naming_the_known_ones(name, message):
  with pytest.raises(ValueError, match=message):
    topology.parse_slice(name)


def test_hbm_table_leaves_the_compiler_a_reserve_below_the_spec_sheet():
  for gen in topology.GENERATIONS.values():
    assert 0.96 * gen.hbm_bytes < gen.usable_hbm_bytes <= gen.hbm_bytes + GiB, gen.name
  s = topology.parse_slice("v5e-256")
  assert s.usable_hbm_bytes == int(15.75 * GiB)
  assert s.peak_flops == 256 * 197e12


def test_compiler_out_of_memory_message_is_read():
  # libtpu 0.0.42's message for the B = 2^20 CLIP step on v5e-32, microbatches=128.
  message = (
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
    "temporaries (17.08G) exceeds available HBM (15.75G)."
  )
  got = compile_for._parse_oom(message)
  assert got == dict(refused_gib=17.08, refused_what="HLO temporaries", available_gib=15.75)
  assert got["available_gib"] * GiB == topology.parse_slice("v5e-32").usable_hbm_bytes


# ------------------------------------------------------------------ FLOPs ---


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


def _conv(x, w, groups=1):
  return jax.lax.conv_general_dilated(
    x, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups
  )


@pytest.mark.parametrize(
  "fn, shapes",
  [
    (lambda a, b: a @ b, [(32, 64), (64, 48)]),
    (lambda a, b: jnp.einsum("bnd,bmd->bnm", a, b), [(4, 32, 64), (4, 16, 64)]),
    (_conv, [(2, 9, 9, 6), (3, 3, 6, 10)]),
    (functools.partial(_conv, groups=3), [(2, 9, 9, 6), (3, 3, 2, 9)]),
  ],
)
def test_matmul_and_convolution_flops_equal_xla_on_loop_free_programs(fn, shapes):
  args = [jnp.ones(s, jnp.float32) for s in shapes]
  assert topology.flops_of(fn, *args) == _xla_flops(fn, *args)


def test_a_scan_counts_every_iteration_where_xla_counts_its_body_once():
  w = jnp.ones((64, 64))

  def looped(x):
    return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=5)[0]

  def unrolled(x):
    for _ in range(5):
      x = x @ w
    return x

  x = jnp.ones((16, 64))
  one = 2 * 16 * 64 * 64
  assert topology.flops_of(looped, x) == _xla_flops(unrolled, x) == 5 * one
  assert one <= _xla_flops(looped, x) < 2 * one  # the body once, and the loop counter


def test_a_shard_map_body_counts_once_per_device():
  mesh = sharding.make_mesh({"data": -1})
  f = jax.shard_map(lambda a: a @ a.T, mesh=mesh, in_specs=jax.P("data"), out_specs=jax.P("data"))
  x = jnp.ones((8 * 4, 16))
  assert (
    topology.flops_of(f, x) == 8 * 2 * 4 * 4 * 16 == topology.flops_of(lambda a: a @ a[:4].T, x)
  )


def _tiny_clip(k: int):
  config = clip_config.get_config("digits")
  config.model.image.update(width=32, depth=1, heads=2, mlp_dim=64)
  config.model.text.update(width=32, depth=1, heads=2, mlp_dim=64)
  config.batch_size = 64
  config.microbatches = k
  return config


def test_microbatched_step_flops_are_the_unchunked_step_plus_one_forward_pass():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1}, jax.devices()[:2])
  config = _tiny_clip(1)
  vocab = compile_for.vocab_size(config, 0)
  trainee = Trainee(config, mesh, vocab_size=vocab)
  batch = compile_for.abstract_batch(config, mesh)
  traced = train.make_train_step(trainee).trace(trainee.abstract_state, batch)
  full = topology.jaxpr_flops(traced.jaxpr)
  chunked = compile_for.step_flops(_tiny_clip(4), mesh, vocab)

  # Gradient caching's first pass: the model's forward pass on the whole batch.
  forward = topology.flops_of(
    lambda s, b: trainee.model(s["params"], s["rest"])(b["image"], b["text"]),
    trainee.abstract_state,
    batch,
  )
  assert chunked == full + forward
  assert forward > 0.3 * full  # forward ≈ a third of forward + backward

  # The un-chunked step compiled on CPU: XLA's count (per device, loop-free)
  # is our count plus the elementwise work XLA also counts. LLVM's optimisations
  # off: they change no FLOP count and take half the compile time.
  cost = traced.lower().compile({"xla_backend_optimization_level": 0}).cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)["flops"] * mesh.size
  assert full <= xla <= 1.2 * full


def test_fit_finds_the_smallest_power_of_two_microbatches():
  s = topology.parse_slice("v5e-32")
  config = _tiny_clip(1)
  config.batch_size = 32 * 64
  config.loss.block_size = 256

  def compile_fn(c):  # pretend memory: 1 GiB + 64 GiB / microbatches, over 15.75 at k < 8
    total = GiB + 64 * GiB // c.microbatches
    return dict(
      fits=total <= s.usable_hbm_bytes,
      per_chip=dict(total=total),
      microbatches=c.microbatches,
      block_size=c.loss.block_size,
      compile_s=0.0,
    )

  best, tried = compile_for.fit(config, s, compile_fn=compile_fn, log=lambda _: None)
  assert best["microbatches"] == 8 and best["fits"]
  # The config's own 1; a guess from its 65 GiB (8), then bisection below it.
  assert [t["microbatches"] for t in tried] == [1, 8, 4]

  # From a config whose own microbatches fit: bisection below them.
  config.microbatches = 32
  best, tried = compile_for.fit(config, s, compile_fn=compile_fn, log=lambda _: None)
  assert best["microbatches"] == 8
  assert [t["microbatches"] for t in tried] == [32, 4, 16, 8]


# ------------------------------------------------- with the TPU compiler ---


@pytest.mark.tpu
@needs_libtpu
@pytest.mark.parametrize("generation", sorted(topology.GENERATIONS))
def test_usable_hbm_is_what_the_tpu_compiler_allows(generation):
  gen = topology.GENERATIONS[generation]
  s = topology.parse_slice(f"{generation}-{4 * gen.cores_per_chip}")
  mesh = sharding.make_mesh({"data": -1}, topology.devices(s))
  spec = jax.NamedSharding(mesh, jax.P("data"))
  too_big = jax.ShapeDtypeStruct((4 * 2**20, 2**15), jnp.float32, sharding=spec)  # 128 GiB/chip
  with pytest.raises(Exception, match="exceeds available HBM") as e:
    jax.jit(lambda x: jnp.sort(x, axis=0), out_shardings=spec).lower(too_big).compile()
  available = compile_for._parse_oom(str(e.value))["available_gib"]
  assert abs(available * GiB - gen.usable_hbm_bytes) < 0.01 * GiB


@pytest.mark.tpu
@needs_libtpu
def test_a_tiny_config_compiles_for_a_v5e_2x2_with_the_flops_of_its_cpu_trace():
  s = topology.parse_slice("v5e:2x2")
  config = _tiny_clip(2)
  vocab = compile_for.vocab_size(config, 0)
  row = compile_for.compile_step(config, s, vocab=vocab)
  pc = row["per_chip"]
  assert row["fits"] and row["chips"] == 4 and row["topology"] == "v5e-4"
  assert pc["arguments"] >= pc["params"] + pc["optimizer"] + pc["batch"]
  assert pc["total"] >= pc["arguments"] + pc["temporaries"]
  cpu_mesh = sharding.make_mesh({"data": 4, "fsdp": 1}, jax.devices()[:4])
  assert row["executed_flops_per_chip"] * 4 == compile_for.step_flops(config, cpu_mesh, vocab)
  assert row["projected_step_s"] == row["model_flops_per_chip"] / (0.5 * 197e12)
