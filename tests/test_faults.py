"""The trainer under faults: preemption, corrupt checkpoints, non-finite steps, resharding."""

import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from big_contrast import checkpoint, sharding, train
from big_contrast.state import Trainee

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import clip as clip_config  # noqa: E402
from tests.test_train import tiny  # noqa: E402


def _cmd(workdir, data_dir, *overrides):
  return [
    sys.executable,
    "-m",
    "big_contrast.train",
    "--config=configs/clip.py:digits",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    "--config.log_every=1",
    "--config.batch_size=32",
    "--config.model.image.width=32",
    "--config.model.image.depth=1",
    "--config.model.text.width=32",
    "--config.model.text.depth=1",
    "--config.eval.baselines=False",
    *overrides,
  ]


def _small_trainee(data_dir, mesh_cfg, devices=None):
  config = tiny(clip_config.get_config("digits"), data_dir)
  config.model.image.update(width=128, mlp_dim=256)
  config.mesh.update(mesh_cfg)
  return Trainee(config, sharding.make_mesh(config.mesh, devices=devices), vocab_size=259)


def test_sigterm_saves_the_current_step_and_exits_0(tmp_path, data_dir):
  proc = subprocess.Popen(
    _cmd(tmp_path, data_dir, "--config.total_steps=1000", "--config.ckpt_every=1000"),
    cwd=REPO,
    env=dict(os.environ, PYTHONUNBUFFERED="1"),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("step 3/"):
      proc.send_signal(signal.SIGTERM)
  assert proc.wait() == 0, "".join(lines[-30:])
  saved = [line for line in lines if line.startswith("Preempted: saved step")]
  assert saved, "".join(lines[-30:])
  step = int(saved[0].split()[3].rstrip(";"))
  assert step >= 3
  assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [step]


def test_nonfinite_run_halts_naming_the_step(tmp_path, data_dir):
  # A learning rate of 1e30 makes the first update finite but huge; every
  # gradient after it is NaN, so those updates are skipped until the limit.
  out = subprocess.run(
    _cmd(
      tmp_path,
      data_dir,
      "--config.total_steps=50",
      "--config.ckpt_every=50",
      "--config.optim.lr=1e30",
      "--config.optim.warmup_steps=0",
      "--config.max_nonfinite_steps=3",
    ),
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert out.returncode != 0
  assert "3 non-finite steps in a row at step 4" in out.stderr
  assert not os.path.exists(tmp_path / "checkpoints" / "50")


def test_nonfinite_gradient_skips_the_update(data_dir):
  trainee = _small_trainee(data_dir, {"data": -1, "fsdp": 1})
  state = trainee.init(0)
  before = jax.device_get(state["params"])
  step = train.make_train_step(trainee)
  b = 32
  host = dict(
    image=np.full((b, 32, 32, 3), np.nan, np.float32),
    text=np.full((b, 32), 5, np.int32),
    text_id=np.arange(b, dtype=np.int32),
  )
  state, metrics = step(state, sharding.host_batch_to_global(host, trainee.mesh))
  assert not np.isfinite(float(metrics["loss"]))
  assert int(metrics["nonfinite_in_a_row"]) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state["params"]), before)


def test_truncated_latest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
  state = {"w": jnp.arange(4096.0).reshape(64, 64), "step": jnp.asarray(0)}
  ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=3)
  ckpt.save(1, state)
  ckpt.save(2, jax.tree.map(lambda x: x + 1, state))
  ckpt.close()
  # Truncate every data file of the newest checkpoint, as a crash mid-write would.
  for root, _, files in os.walk(tmp_path / "2" / "state"):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])
    ),
    state,
  )
  step, restored = checkpoint.Checkpointer(str(tmp_path)).restore(abstract)
  assert step == 1
  np.testing.assert_array_equal(restored["w"], state["w"])
  warning = capsys.readouterr().out
  assert f"checkpoint step 2 in {tmp_path} is unreadable: 2/state/" in warning
  # Restoring did not move anything: only the trainer (move_aside=True) does.
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_restore_onto_other_meshes(tmp_path, data_dir):
  src = _small_trainee(data_dir, {"data": 8, "fsdp": 1})
  state = src.init(3)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(7, state)
  ckpt.close()
  expected = jax.device_get(state["params"])
  for mesh_cfg, devices in (
    ({"data": 2, "fsdp": 4}, None),
    ({"data": 1, "fsdp": 1}, jax.devices()[:1]),
  ):
    dst = _small_trainee(data_dir, mesh_cfg, devices)
    step, restored = checkpoint.Checkpointer(str(tmp_path)).restore(dst.abstract_state)
    assert step == 7
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored["params"]), expected)
    same = jax.tree.map(
      lambda x, want: x.sharding.is_equivalent_to(want, x.ndim),
      restored["params"],
      dst.shardings["params"],
    )
    assert all(jax.tree.leaves(same)), mesh_cfg
