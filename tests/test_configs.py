"""Every config: its tiny variant trains on 8 devices; its real-scale variants build abstractly."""

import os
import sys

import jax
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, AxisType

from big_contrast import config_lib, optim, sharding, train
from big_contrast.data import augment, pipeline
from big_contrast.data import tokenizer as tokenizer_lib
from big_contrast.evaluate import evaluators
from big_contrast.state import Trainee

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import (
  clip,
  dcl,
  debiased,
  polyview,
  siglip,
  simclr,
  simcse,
  softcon,
  supcon,
)

MODULES = {
  "clip": clip,
  "siglip": siglip,
  "simclr": simclr,
  "supcon": supcon,
  "dcl": dcl,
  "debiased": debiased,
  "polyview": polyview,
  "softcon": softcon,
  "simcse": simcse,
}
TINY = [(name, "tiny") for name in MODULES] + [("simclr", "tiny_resnet")]
REAL = [
  (name, v)
  for name, m in MODULES.items()
  for v in m.VARIANTS
  if not v.startswith("tiny")
  and v != "digits"
  # vit_b16's towers at the same scale; test_interop_checks checks it is OpenCLIP's ViT-B-32.
  and (name, v) != ("clip", "openclip_vit_b32")
]
VOCAB = {"clip": 49_408, "siglip": 32_000, "simcse": 30_522}  # the papers' tokenizers
# SimCSE's recipe batch is 64 sentences: it fits a 64-device (4×16) slice, not 256.
MESH = {"simcse": (4, 16)}


def _shrink(config, data_dir):
  """A few seconds per compile on CPU: batch 32, one block, narrow."""
  config.data.data_dir = str(data_dir)
  config.batch_size = 32 if config.data.get("num_views", 2) <= 2 else 16
  if "image" not in config.model:
    pass
  elif config.model.image.name == "vit":
    config.model.image.update(width=32, depth=1, heads=2, mlp_dim=64)
  else:
    config.model.image.update(depth=18, base_width=4)
  if "text" in config.model:
    config.model.text.update(width=32, depth=1, heads=2, mlp_dim=64)
  config.model.embed_dim = 16
  if "head_hidden" in config.model:
    config.model.head_hidden = 32
  config.optim.update(warmup_steps=0, end_lr_fraction=1.0)
  return config


def test_every_variant_exposes_every_data_pipeline_key():
  # So `--config.data.read_threads=8` works on any config (locked ConfigDicts
  # reject overrides of keys they lack).
  for name, module in MODULES.items():
    for variant in module.VARIANTS:
      data = module.get_config(variant).data
      missing = set(pipeline.DATA_DEFAULTS) - set(data.keys())
      assert not missing, (name, variant, missing)
      assert set(data.augment.keys()) == set(augment.DEFAULTS), (name, variant)
      data.lock()
      data.read_threads = 3
      data.tune_malloc = False
      data.augment.device = True


@pytest.mark.parametrize("name,variant", TINY, ids=[f"{n}:{v}" for n, v in TINY])
def test_tiny_variant_loss_is_finite_and_decreases_on_8_devices(name, variant, data_dir):
  config = _shrink(MODULES[name].get_config(variant), data_dir)
  config_lib.validate(config)
  mesh = sharding.make_mesh(config.mesh)
  assert mesh.size == 8
  tok = tokenizer_lib.make_tokenizer("bytes") if config.task in ("image_text", "text") else None
  it = pipeline.train_iterator(
    config.data,
    kind=config.task,
    global_batch_size=config.batch_size,
    seed=config.seed,
    tokenizer=tok,
    text_max_len=config.text.max_len if "text" in config else 32,
    process_index=0,
    process_count=1,
  )
  batch = {k: v for k, v in next(it).items() if k != "skipped"}
  batch = sharding.host_batch_to_global(batch, mesh)
  trainee = Trainee(config, mesh, vocab_size=tok.vocab_size if tok else None)
  state = trainee.init(config.seed)
  step = train.make_train_step(trainee)
  losses = []
  for _ in range(5):  # the same batch: the loss must go down if gradients are right
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)), losses
  assert losses[-1] < losses[0], losses
  initial_rest = jax.device_get(trainee.init(config.seed)["rest"])
  if any(
    sharding.path_str(p).endswith("/mean")
    for p, _ in jax.tree_util.tree_leaves_with_path(initial_rest)
  ):
    # BatchNorm running statistics move with the steps (they feed every eval pass).
    moved = jax.tree.map(
      lambda a, b: not np.array_equal(a, b), initial_rest, jax.device_get(state["rest"])
    )
    assert any(jax.tree.leaves(moved))


@pytest.mark.parametrize("name,variant", REAL, ids=[f"{n}:{v}" for n, v in REAL])
def test_real_variant_builds_abstractly_on_a_16x16_mesh(name, variant):
  config = MODULES[name].get_config(variant)
  config.mesh.fsdp = 16
  mesh = AbstractMesh(MESH.get(name, (16, 16)), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
  trainee = Trainee(config, mesh, vocab_size=VOCAB.get(name))
  assert config.batch_size % mesh.size == 0
  params = trainee.abstract_state["params"]
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  assert n_params > 20e6
  big = [x for x in jax.tree.leaves(params) if np.prod(x.shape) >= 2**20]
  assert big and all("fsdp" in str(x.sharding.spec) for x in big), [
    (x.shape, x.sharding.spec) for x in big if "fsdp" not in str(x.sharding.spec)
  ]


@pytest.mark.parametrize("name", MODULES)
def test_unknown_variant_names_the_choices(name):
  with pytest.raises(ValueError, match="unknown variant 'nope'"):
    MODULES[name].get_config("nope")


def test_lars_decays_and_adapts_only_matrices():
  cfg = simclr.get_config("resnet50").optim
  cfg.update(warmup_steps=0)
  tx, schedule = optim.make_optimizer(cfg, total_steps=10)
  assert float(schedule(0)) == pytest.approx(4.8)
  params = {"w": np.ones((4, 4), np.float32), "b": np.ones(4, np.float32)}
  grads = {"w": np.zeros((4, 4), np.float32), "b": np.zeros(4, np.float32)}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert np.all(np.asarray(new["w"]) < 1) and np.all(np.asarray(new["b"]) == 1)


@pytest.mark.parametrize("name,variant", REAL, ids=[f"{n}:{v}" for n, v in REAL])
def test_real_variant_passes_validation(name, variant):
  """What the trainer checks before reading data: e.g. augmentations the images' channels allow."""
  config = MODULES[name].get_config(variant)
  config.data.name = config.data.name or "/data/converted/1.0.0"
  if "text" in config and config.text.tokenizer is None:
    config.text.tokenizer = "/data/spm.model"
  config_lib.validate(config)


def test_colour_jitter_on_13_band_images_fails_validation_naming_the_key():
  config = softcon.get_config("s2_vitb14")
  config.data.name = "/data/s2/1.0.0"
  config.data.augment.jitter_prob = 0.8
  with pytest.raises(ValueError, match=r"data.augment.jitter_prob=0.8.*13 channels"):
    config_lib.validate(config)


def test_probe_last_blocks_are_checked_against_the_image_tower(capsys):
  config = clip.get_config("tiny")  # a 2-block ViT
  config.eval.probe_last_blocks = (1, 2)
  config_lib.validate(config)
  assert evaluators.probe_blocks(config) == (1, 2)
  config.eval.probe_last_blocks = (1, 4)  # 4 is dropped, with a warning
  config_lib.validate(config)
  assert evaluators.probe_blocks(config) == (1,)
  assert "offers 2 block(s); probing (1,)" in capsys.readouterr().out
  config.eval.probe_last_blocks = (4,)
  with pytest.raises(ValueError, match=r"probe_last_blocks=\(4,\).*last 2 block"):
    config_lib.validate(config)
  config.eval.probe_last_blocks = (0,)
  with pytest.raises(ValueError, match="distinct block counts >= 1"):
    config_lib.validate(config)
  resnet_config = simclr.get_config("tiny_resnet")
  resnet_config.eval.probe_last_blocks = (2,)
  with pytest.raises(ValueError, match="resnet image tower .* offers the last 1"):
    config_lib.validate(resnet_config)
