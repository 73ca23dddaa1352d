"""A multi-process run whose peer dies: the survivor exits within the configured bound,
naming the lost process, instead of waiting in a collective for ever.

Two local processes over gloo (one CPU device each) start a run; once process 0 has its
state (it goes on to compile and step, meeting its peer in collectives), process 1 gets
SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import reliability_support as support

pytestmark = pytest.mark.slow

PEER_TIMEOUT_S = 10


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_a_killed_peer_stops_the_survivor_within_the_bound_naming_it(
  tmp_path, tmp_path_factory, data_dir
):
  data_dir = support.digits_dir(data_dir)
  port = _free_port()
  cmd = support.train_cmd(
    tmp_path / "run",
    data_dir,
    "--config.total_steps=100000",  # it must still be running when its peer dies
    "--config.ckpt_every=100000",
    f"--config.peer_timeout_s={PEER_TIMEOUT_S}",
  )
  procs = [
    subprocess.Popen(
      cmd,
      cwd=support.REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=support.env(
        tmp_path_factory,
        BIG_CONTRAST_COORDINATOR=f"127.0.0.1:{port}",
        BIG_CONTRAST_NUM_PROCESSES="2",
        BIG_CONTRAST_PROCESS_ID=str(i),
      ),
    )
    for i in range(2)
  ]
  survivor, victim = procs
  try:
    lines = []
    for line in survivor.stdout:
      lines.append(line)
      if line.startswith("Initialised a new run"):
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        break
    else:
      pytest.fail("process 0 ended before its state was made:\n" + "".join(lines[-40:]))
    out, _ = survivor.communicate(timeout=PEER_TIMEOUT_S + 120)
    elapsed = time.monotonic() - killed
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert survivor.returncode == 1, out[-3000:]
  # The watch beats every timeout/6 s and judges every 0.5 s: the bound plus a little
  # (and a loaded CI machine's scheduling).
  assert elapsed < PEER_TIMEOUT_S + 15, elapsed
  errors = [line for line in out.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, out[-3000:]
  assert errors[0].startswith(f"error: lost process 1 of 2 (host {socket.gethostname()}, pid ")
  assert f"pid {victim.pid})" in errors[0]
  assert f"config.peer_timeout_s={PEER_TIMEOUT_S}" in errors[0]
