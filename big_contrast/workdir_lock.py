"""One run per workdir: a lock file that the run holds from set-up to finish.

`WORKDIR/lock.json` names its holder: host, pid, when it started, how many
processes the run has, and a heartbeat that the holder rewrites every
`HEARTBEAT_S` seconds. A second run on the same workdir reads it and stops at
once with `WorkdirLocked`, naming the holder. A lock whose holder is gone is
taken over with a warning:

* on the same host, when its pid no longer runs (or is a different process:
  the pid's start time differs from the one recorded);
* from another host, when its heartbeat is older than `STALE_S` seconds, or
  does not change while this process watches it for that long (clocks of two
  hosts may disagree; the watch does not depend on them).

In a multi-process run process 0 takes the lock for all processes and tells
them whether it got it, so every process of the second run stops with the same
message. Local (and NFS) workdirs are created with O_EXCL, which is atomic; on
an object store (`gs://`) the lock is written, then read back after a pause,
and the run holds it only if it reads its own token (best effort).

Knows nothing of models or training.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

LOCK_FILE = "lock.json"
HEARTBEAT_S = 10.0
STALE_S = 60.0


class WorkdirLocked(RuntimeError):
  """Another live run holds the workdir."""


def _pid_start_time(pid: int) -> str | None:
  """When `pid` started (clock ticks since boot, Linux), to tell a reused pid; None if unknown."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      # The command name (field 2) may hold spaces; the fields after it do not.
      return f.read().rpartition(")")[2].split()[19]
  except (OSError, IndexError):
    return None


def _pid_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process: it runs
    return True
  return True


def describe(holder: dict[str, Any]) -> str:
  """'host H, pid P (N processes), since T': who holds a lock, for messages."""
  n = holder.get("processes", 1)
  procs = f" (process 0 of {n})" if n > 1 else ""
  return f"host {holder.get('host')}, pid {holder.get('pid')}{procs}, since {holder.get('since')}"


class WorkdirLock:
  """The lock of one workdir; `acquire()` takes it (or raises), `release()` gives it back."""

  def __init__(self, workdir: str, *, processes: int = 1):
    self.path = epath.Path(workdir) / LOCK_FILE
    self._remote = "://" in os.fspath(workdir)
    self._processes = processes
    self._record: dict[str, Any] | None = None
    self._stop = threading.Event()
    self._beat: threading.Thread | None = None

  # ------------------------------------------------------------------ reading

  def _read(self) -> dict[str, Any] | None:
    try:
      return json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except (OSError, ValueError):  # half-written or garbled: nobody can hold it
      return {}

  def stale_reason(self, holder: dict[str, Any]) -> str | None:
    """Why `holder` no longer holds the lock, or None when it may still run."""
    if not holder:
      return "the lock file is unreadable"
    pid = int(holder.get("pid", -1))
    if holder.get("host") == socket.gethostname():
      if not _pid_running(pid):
        return f"pid {pid} is not running on this host"
      started = holder.get("pid_start")
      if started is not None and _pid_start_time(pid) not in (None, started):
        return f"pid {pid} is now another process"
      return None
    age = time.time() - float(holder.get("heartbeat", 0))
    if age > STALE_S:
      return f"its heartbeat is {age:.0f} s old (> {STALE_S:.0f} s)"
    # Another host's clock may be ahead: watch whether the heartbeat still moves.
    deadline = time.monotonic() + STALE_S
    while time.monotonic() < deadline:
      time.sleep(min(1.0, HEARTBEAT_S / 4))
      now = self._read()
      if now is None:
        return "it released the lock"
      if now.get("token") != holder.get("token") or now.get("heartbeat") != holder.get("heartbeat"):
        return None
    return f"its heartbeat did not change in {STALE_S:.0f} s"

  # ------------------------------------------------------------------ writing

  def _new_record(self) -> dict[str, Any]:
    pid = os.getpid()
    return {
      "host": socket.gethostname(),
      "pid": pid,
      "pid_start": _pid_start_time(pid),
      "processes": self._processes,
      "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
      "heartbeat": time.time(),
      "token": uuid.uuid4().hex,
    }

  def _create(self, record: dict[str, Any]) -> bool:
    """Writes the lock if no lock file exists; whether this call created it."""
    data = json.dumps(record, indent=1)
    if self._remote:
      if self.path.exists():
        return False
      self.path.write_text(data)
      time.sleep(2.0)  # let a concurrent writer's object land, then see who won
      return (self._read() or {}).get("token") == record["token"]
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(data)
    return True

  def _remove_stale(self, holder: dict[str, Any]) -> None:
    """Removes the stale lock `holder`, unless someone replaced it meanwhile."""
    if self._remote:
      if (self._read() or {}).get("token") == holder.get("token"):
        self.path.unlink(missing_ok=True)
      return
    # Renaming is atomic: of two runs taking over the same stale lock, one moves it.
    aside = self.path.with_name(f"{LOCK_FILE}.stale-{uuid.uuid4().hex[:8]}")
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    if (self._read_path(aside) or {}).get("token") not in (None, holder.get("token")):
      # A new holder's lock got there first: put it back.
      os.rename(aside, self.path)
      return
    aside.unlink(missing_ok=True)

  @staticmethod
  def _read_path(path) -> dict[str, Any] | None:
    try:
      return json.loads(epath.Path(path).read_text())
    except (OSError, ValueError):
      return None

  def acquire(self) -> None:
    """Takes the lock, taking over a stale one with a warning; raises WorkdirLocked if held."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
      record = self._new_record()
      if self._create(record):
        self._record = record
        self._beat = threading.Thread(target=self._heartbeat, name="workdir-lock", daemon=True)
        self._beat.start()
        return
      holder = self._read()
      if holder is None:
        continue  # released meanwhile
      reason = self.stale_reason(holder)
      if reason is None:
        raise WorkdirLocked(
          f"{self.path.parent} is in use by another run ({describe(holder)}); stop that run, "
          f"or give this one another --workdir (the lock is {self.path})"
        )
      message = (
        f"taking over the stale lock {self.path} of {describe(holder) if holder else '?'}: {reason}"
      )
      log.warning(message)
      print(f"WARNING: {message}", flush=True)
      self._remove_stale(holder)
    raise WorkdirLocked(f"could not take the lock {self.path}: other runs keep replacing it")

  def _heartbeat(self) -> None:
    warned = False
    while not self._stop.wait(HEARTBEAT_S):
      record = dict(self._record, heartbeat=time.time())
      try:
        if self._remote:
          self.path.write_text(json.dumps(record, indent=1))
        else:
          tmp = self.path.with_name(f"{LOCK_FILE}.{record['token'][:8]}.tmp")
          tmp.write_text(json.dumps(record, indent=1))
          os.replace(tmp, self.path)
        self._record = record
      except OSError as e:  # a full disk must not stop the run here; the save will say so
        if not warned:
          log.warning("could not refresh the heartbeat of %s: %s", self.path, e)
          warned = True

  def release(self) -> None:
    """Gives the lock back (only if this run still holds it)."""
    if self._record is None:
      return
    self._stop.set()
    if self._beat is not None:
      self._beat.join(timeout=5)
    try:
      if (self._read() or {}).get("token") == self._record["token"]:
        self.path.unlink(missing_ok=True)
    except OSError as e:
      log.warning("could not remove %s: %s", self.path, e)
    self._record = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def acquire_for_run(workdir: str) -> WorkdirLock:
  """Process 0 takes the lock for the whole run; every process raises WorkdirLocked if it is held."""
  lock = WorkdirLock(workdir, processes=jax.process_count())
  error = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except WorkdirLocked as e:
      error = e
  if jax.process_count() > 1:
    got = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not int(got) and error is None:
      error = WorkdirLocked(
        f"{workdir} is in use by another run ({describe(lock._read() or {})}); stop that run, "
        "or give this one another --workdir"
      )
  if error is not None:
    raise error
  return lock
