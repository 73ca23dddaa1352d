"""A full disk, for real: the run's workdir on a small tmpfs that fills up mid-run.

The trainer runs in its own mount namespace (`unshare`; as root, or as a user through a user
namespace), on a tmpfs mounted there. Once its first checkpoint is complete, a filler file
takes every free byte; the next save then fails with ENOSPC inside TensorStore's writer
thread. The run must stop at once with one clear error (not hang, not a wall of tracebacks),
and the checkpoint it had must still restore.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from big_contrast.models import pretrained

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import reliability_support as support

pytestmark = pytest.mark.slow

# Run inside the namespace: mount, train, fill the disk after the first checkpoint, wait for
# the end, copy what is left out, report as JSON on the last line.
_DRIVER = textwrap.dedent(
  """
  import json, os, shutil, subprocess, sys, time
  mount, out, cmd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
  subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mount], check=True)
  workdir = os.path.join(mount, "run")
  cmd = [a.replace("@WORKDIR@", workdir) for a in cmd]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  filled = None
  while proc.poll() is None and filled is None:
    if os.path.isdir(os.path.join(workdir, "checkpoints", "20")):
      with open(os.path.join(mount, "filler"), "wb") as f:
        try:
          while True:
            f.write(b"\\0" * 65536)
            f.flush()
        except OSError as e:
          filled = e.strerror
    time.sleep(0.05)
  t0 = time.monotonic()
  try:
    output, _ = proc.communicate(timeout=240)
    rc = proc.returncode
  except subprocess.TimeoutExpired:
    proc.kill()
    output, rc = proc.communicate()[0], "hung"
  stop_s = time.monotonic() - t0
  os.remove(os.path.join(mount, "filler"))
  shutil.copytree(os.path.join(workdir, "checkpoints"), os.path.join(out, "checkpoints"))
  subprocess.run(["umount", mount])
  print(json.dumps(dict(rc=rc, filled=filled, stop_s=stop_s, output=output)))
  """
)


def _unshare() -> list[str] | None:
  """The prefix that runs a command in a new mount namespace, or None if this host forbids it."""
  if not shutil.which("unshare"):
    return None
  for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode == 0:
      return prefix
  return None


@pytest.fixture(scope="module")
def full(tmp_path_factory, data_dir):
  prefix = _unshare()
  if prefix is None:
    pytest.skip("needs a mount namespace (unshare) to put the workdir on a small tmpfs")
  data_dir = support.digits_dir(data_dir)
  mount, out = tmp_path_factory.mktemp("tmpfs"), tmp_path_factory.mktemp("left")
  cmd = support.train_cmd("@WORKDIR@", data_dir, "--config.keep_ckpts=10")
  proc = subprocess.run(
    [*prefix, sys.executable, "-c", _DRIVER, str(mount), str(out), json.dumps(cmd)],
    cwd=support.REPO,
    env=support.env(tmp_path_factory),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(json.loads(proc.stdout.splitlines()[-1]), left=out)


def test_a_full_disk_stops_the_run_with_one_clear_error(full):
  assert full["filled"] == "No space left on device"
  assert full["rc"] == 1, full["output"][-3000:]
  assert full["stop_s"] < 120  # no hang in the writer threads
  errors = [line for line in full["output"].splitlines() if line.startswith("error:")]
  assert len(errors) == 1, full["output"][-3000:]
  assert "no space left on the device" in errors[0]
  assert "The checkpoints of steps [20] are intact" in full["output"]
  assert "Traceback" not in full["output"], full["output"][-3000:]


def test_the_checkpoints_before_the_full_disk_still_restore(full):
  left = full["left"] / "checkpoints"
  assert sorted(s for s in os.listdir(left) if s.isdigit()) == ["20"]
  params = pretrained.read_checkpoint(str(left), step=20)
  assert params and all(np.isfinite(v).all() for v in params.values())
