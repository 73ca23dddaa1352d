"""Checkpoint recovery makes progress and never deletes: an unreadable step is moved aside so
the run can save it again, every step unreadable stops with all of them named and nothing
moved, and a process killed during an asynchronous save leaves the older steps restorable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_contrast import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(value: float) -> dict:
  return {"w": jnp.full((64, 64), value), "step": jnp.asarray(int(value))}


def _abstract(state: dict) -> dict:
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


def _truncate(step_dir) -> None:
  for root, _, files in os.walk(step_dir / "state"):
    for name in files:
      path = os.path.join(root, name)
      os.truncate(path, os.path.getsize(path) // 3)


def _saved(directory, steps) -> None:
  ckpt = checkpoint.Checkpointer(str(directory), max_to_keep=5)
  for step in steps:
    ckpt.save(step, _state(step))
  ckpt.close()


def test_an_unreadable_step_is_moved_aside_and_can_be_saved_again(tmp_path, capsys):
  _saved(tmp_path, [1, 2])
  _truncate(tmp_path / "2")
  ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=5)
  step, restored = ckpt.restore(_abstract(_state(0)), move_aside=True)
  assert step == 1
  np.testing.assert_array_equal(restored["w"], _state(1)["w"])
  out = capsys.readouterr().out
  assert f"checkpoint step 2 in {tmp_path} is unreadable: 2/state/" in out
  (moved,) = os.listdir(tmp_path / "corrupt")
  assert moved.startswith("2-") and f"moved the unreadable checkpoint step 2 to {tmp_path}" in out
  assert os.path.isdir(tmp_path / "corrupt" / moved / "state")  # kept whole, not deleted
  # The resumed run reaches step 2 again and saves it (Orbax refused: the step existed).
  ckpt.save(2, _state(22))
  ckpt.close()
  step, restored = checkpoint.Checkpointer(str(tmp_path)).restore(_abstract(_state(0)))
  assert step == 2
  np.testing.assert_array_equal(restored["w"], _state(22)["w"])


def test_every_step_unreadable_stops_naming_each_and_moves_nothing(tmp_path):
  _saved(tmp_path, [1, 2])
  for step in (1, 2):
    _truncate(tmp_path / str(step))
  before = sorted(os.listdir(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoint.NoReadableCheckpoint) as e:
    ckpt.restore(_abstract(_state(0)), move_aside=True)
  message = str(e.value)
  assert message.startswith(f"no readable checkpoint in {tmp_path}: step 2: 2/state/")
  assert "; step 1: 1/state/" in message and "restore a backup" in message
  assert sorted(os.listdir(tmp_path)) == before


# Saves step 1, starts the asynchronous save of a larger step 2, and is killed (SIGKILL) as
# soon as the save has copied the arrays off and returned, while they are being written.
_KILLED_WHILE_SAVING = textwrap.dedent(
  """
  import os, signal, sys
  import jax.numpy as jnp
  from big_contrast import checkpoint
  ckpt = checkpoint.Checkpointer(sys.argv[1])
  ckpt.save(1, {"w": jnp.full((64, 64), 1.0)})
  ckpt.wait()
  ckpt.save(2, {"w": jnp.ones((64, 64)), "big": jnp.ones((2048, 2048, 4))})
  os.kill(os.getpid(), signal.SIGKILL)
  """
)


@pytest.mark.slow
def test_a_process_killed_during_an_async_save_leaves_the_older_steps_restorable(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-c", _KILLED_WHILE_SAVING, str(tmp_path)],
    cwd=REPO,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  unfinished = [n for n in os.listdir(tmp_path) if n.startswith("2.orbax-checkpoint-tmp")]
  assert unfinished, os.listdir(tmp_path)  # it was killed mid-save
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  assert ckpt.all_steps() == [1]
  assert ckpt.move_aside_unfinished() == unfinished
  (moved,) = os.listdir(tmp_path / "corrupt")
  assert moved.startswith("2-") and moved.endswith("-unfinished")
  step, restored = ckpt.restore(_abstract({"w": jnp.zeros((64, 64))}))
  assert step == 1
  np.testing.assert_array_equal(restored["w"], np.full((64, 64), 1.0))
