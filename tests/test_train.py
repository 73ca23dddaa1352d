"""The trainer end to end: sharding invariance, resume after a kill, config errors."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from big_contrast import config_lib, sharding, train
from big_contrast.data import pipeline
from big_contrast.data import tokenizer as tokenizer_lib
from big_contrast.state import Trainee

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import clip as clip_config  # noqa: E402
from configs import simclr as simclr_config  # noqa: E402


def tiny(config, data_dir):
  """Shrinks a digits config to seconds per step on CPU (byte tokens, as the tests feed)."""
  config.data.data_dir = str(data_dir)
  if "text" in config:
    config.text.update(tokenizer="bytes", max_len=32)
  config.batch_size = 32
  config.model.image.update(width=32, depth=1, heads=2, mlp_dim=64, patch=8)
  if "text" in config.model:
    config.model.text.update(width=32, depth=1, heads=2, mlp_dim=64)
  config.model.embed_dim = 16
  config.optim.warmup_steps = 2
  config.eval.baselines = False
  config.eval.batch_size = 128
  return config


def _losses_on(config, devices, steps=3):
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  tok = tokenizer_lib.make_tokenizer("bytes") if config.task == "image_text" else None
  it = pipeline.train_iterator(
    config.data,
    kind=config.task,
    global_batch_size=config.batch_size,
    seed=config.seed,
    tokenizer=tok,
    text_max_len=32,
    process_index=0,
    process_count=1,
  )
  trainee = Trainee(config, mesh, vocab_size=tok.vocab_size if tok else None)
  state = trainee.init(config.seed)
  step = train.make_train_step(trainee)
  losses = []
  for _ in range(steps):
    batch = {k: v for k, v in next(it).items() if k != "skipped"}
    state, metrics = step(state, sharding.host_batch_to_global(batch, mesh))
    losses.append(float(metrics["loss"]))
  return np.array(losses)


def _simclr_device_augment(variant):
  config = simclr_config.get_config(variant)
  config.data.augment.update(device=True, jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.5)
  return config


@pytest.mark.parametrize(
  "make_config",
  [clip_config.get_config, simclr_config.get_config, _simclr_device_augment],
  ids=["clip", "simclr", "simclr_device_augment"],
)
def test_train_steps_match_on_1_and_8_devices(make_config, data_dir):
  config = tiny(make_config("digits"), data_dir)
  with jax.default_matmul_precision("highest"):
    one = _losses_on(config, jax.devices()[:1])
    eight = _losses_on(config, jax.devices()[:8])
  assert np.all(np.isfinite(one))
  np.testing.assert_allclose(eight, one, rtol=2e-4)
  assert one[-1] != one[0]  # the steps changed the parameters


def test_fsdp_mesh_splits_large_params_and_matches_data_parallel(data_dir):
  config = tiny(clip_config.get_config("digits"), data_dir)
  config.model.image.update(width=128, mlp_dim=256)  # 128×256 kernels ≥ MIN_SHARDED_SIZE
  config.mesh.fsdp = 4
  mesh = sharding.make_mesh(config.mesh)
  trainee = Trainee(config, mesh, vocab_size=259)
  kernel = trainee.shardings["params"]["image"]["encoder"]["blocks"][0]["mlp"]["fc1"]["kernel"]
  assert "fsdp" in kernel.spec
  state = trainee.init(0)
  shard_shape = (
    state["params"]["image"]["encoder"]["blocks"][0]["mlp"]["fc1"]["kernel"]
    .addressable_shards[0]
    .data.shape
  )
  assert shard_shape == (128, 256 // 4)
  with jax.default_matmul_precision("highest"):
    fsdp = _losses_on(config, jax.devices())
    config.mesh.fsdp = 1
    dp = _losses_on(config, jax.devices())
  np.testing.assert_allclose(fsdp, dp, rtol=2e-4)


def _train_cmd(workdir, data_dir, total_steps):
  return [
    sys.executable,
    "-m",
    "big_contrast.train",
    "--config=configs/clip.py:digits",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    f"--config.total_steps={total_steps}",
    "--config.ckpt_every=3",
    "--config.log_every=1",
    "--config.batch_size=32",
    "--config.model.image.width=32",
    "--config.model.image.depth=1",
    "--config.model.image.patch=8",
    "--config.model.text.width=32",
    "--config.model.text.depth=1",
    "--config.eval.baselines=False",
  ]


def _final_params(workdir):
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = max(int(s) for s in os.listdir(ckpt_dir) if s.isdigit())
  restored = ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, str(step), "state"))
  return step, restored["params"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(tmp_path, data_dir):
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  total = 12
  cmd = _train_cmd(tmp_path / "killed", data_dir, total)
  proc = subprocess.Popen(
    cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  for line in proc.stdout:  # kill -9 once a checkpoint exists and training is past it
    if line.startswith("step 7/"):
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  assert "Resumed from the checkpoint at step" in resumed.stdout
  # A relative workdir, as the README's Quickstart uses.
  straight = subprocess.run(
    _train_cmd(os.path.relpath(tmp_path / "straight", REPO), data_dir, total),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
  )
  assert straight.returncode == 0, straight.stderr[-3000:]
  step_a, params_a = _final_params(tmp_path / "killed")
  step_b, params_b = _final_params(tmp_path / "straight")
  assert step_a == step_b == total
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  results = json.loads((tmp_path / "killed" / "results.json").read_text())
  assert results["step"] == total and "probe/top1" in results


def test_misspelled_override_names_the_key(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "big_contrast.train",
      "--config=configs/clip.py:digits",
      f"--workdir={tmp_path}",
      "--config.total_stepz=5",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert out.returncode != 0
  assert "total_stepz" in out.stderr


def test_validate_rejects_loss_for_the_wrong_task():
  config = simclr_config.get_config("digits")
  config.loss.name = "clip"
  with pytest.raises(ValueError, match="config.loss.name='clip' needs config.task='image_text'"):
    config_lib.validate(config)


def test_remat_gives_the_same_steps(data_dir):
  config = tiny(clip_config.get_config("digits"), data_dir)
  with jax.default_matmul_precision("highest"):
    plain = _losses_on(config, jax.devices()[:8], steps=2)
    config.model.remat = True
    remat = _losses_on(config, jax.devices()[:8], steps=2)
  np.testing.assert_allclose(remat, plain, rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params(data_dir):
  config = tiny(clip_config.get_config("digits"), data_dir)
  config.model.dtype = "bfloat16"
  mesh = sharding.make_mesh(config.mesh)
  trainee = Trainee(config, mesh, vocab_size=259)
  assert {x.dtype for x in jax.tree.leaves(trainee.abstract_state["params"])} == {
    np.dtype(np.float32)
  }
  bf16 = _losses_on(config, jax.devices()[:8], steps=3)
  config.model.dtype = "float32"
  f32 = _losses_on(config, jax.devices()[:8], steps=3)
  np.testing.assert_allclose(bf16, f32, rtol=2e-2)  # bf16 matmuls, float32 loss math
