"""The workdir lock: one run per workdir; a dead holder's lock is taken over, a live one's not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from big_contrast import workdir_lock
from big_contrast.workdir_lock import WorkdirLock, WorkdirLocked


def _plant(workdir, **holder) -> None:
  record = {"host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00", "token": "t0"}
  (workdir / workdir_lock.LOCK_FILE).write_text(json.dumps({**record, **holder}))


def _dead_pid() -> int:
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


def test_a_held_lock_stops_a_second_writer_naming_the_holder(tmp_path):
  with WorkdirLock(str(tmp_path)):
    holder = json.loads((tmp_path / "lock.json").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(WorkdirLocked) as e:
      WorkdirLock(str(tmp_path)).acquire()
    assert f"host {socket.gethostname()}, pid {os.getpid()}, since {holder['since']}" in str(
      e.value
    )
  assert not (tmp_path / "lock.json").exists()
  WorkdirLock(str(tmp_path)).acquire()  # free again


def test_the_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, capsys):
  dead = _dead_pid()
  _plant(tmp_path, pid=dead)
  lock = WorkdirLock(str(tmp_path))
  lock.acquire()
  assert f"pid {dead} is not running on this host" in capsys.readouterr().out
  assert json.loads((tmp_path / "lock.json").read_text())["pid"] == os.getpid()
  lock.release()


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path, capsys):
  _plant(tmp_path, pid=os.getpid(), pid_start="1")  # this pid, but another process's start
  with WorkdirLock(str(tmp_path)):
    assert "is now another process" in capsys.readouterr().out


def test_another_hosts_lock_is_judged_by_its_heartbeat(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "STALE_S", 2.0)
  # An old heartbeat: stale at once.
  _plant(tmp_path, host="elsewhere", pid=1, heartbeat=time.time() - 3600)
  with WorkdirLock(str(tmp_path)):
    pass
  # A heartbeat that is recent but stands still: stale once it has not moved for STALE_S.
  _plant(tmp_path, host="elsewhere", pid=1, heartbeat=time.time())
  t0 = time.monotonic()
  with WorkdirLock(str(tmp_path)):
    assert time.monotonic() - t0 >= 2.0
  # A heartbeat that moves: a live run on that host.
  _plant(tmp_path, host="elsewhere", pid=1, heartbeat=time.time())
  stop = threading.Event()

  def beat():
    while not stop.wait(0.3):
      _plant(tmp_path, host="elsewhere", pid=1, heartbeat=time.time())

  threading.Thread(target=beat, daemon=True).start()
  try:
    with pytest.raises(WorkdirLocked, match="host elsewhere, pid 1"):
      WorkdirLock(str(tmp_path)).acquire()
  finally:
    stop.set()


def test_the_holder_refreshes_its_heartbeat(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.1)
  with WorkdirLock(str(tmp_path)):
    first = json.loads((tmp_path / "lock.json").read_text())["heartbeat"]
    time.sleep(0.5)
    assert json.loads((tmp_path / "lock.json").read_text())["heartbeat"] > first
