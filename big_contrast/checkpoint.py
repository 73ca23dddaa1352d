"""Orbax checkpoints of the whole run: train state, data iterator, config.

One `Checkpointer` per run directory. Saves are asynchronous (training goes on
while arrays are written) and atomic: a step's directory gets its final name
only once it is complete, and old steps are pruned only after a newer one is.
The data iterator's position is snapshotted at the step it belongs to, one file
per process. Restore goes through abstract arrays carrying the *current*
shardings, so a checkpoint written on one mesh restores onto any other.

Recovery always makes progress, and never deletes (docs/checkpointing.md):

* an unreadable checkpoint falls back to the previous one; with
  `move_aside=True` (the trainer) it is first moved to
  `corrupt/<step>-<time>/`, so the run can save that step again; the warning
  names the file that failed and how;
* `move_aside_unfinished` does the same for the `<step>.orbax-checkpoint-tmp*`
  directory of a save that a crash cut short;
* a full disk during a save raises `DiskFull`, naming the step and the
  checkpoints that are intact.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import re
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)

CORRUPT_DIR = "corrupt"
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
# How long a process whose restore failed waits for the others' verdicts.
_AGREE_TIMEOUT_S = 600


class DiskFull(RuntimeError):
  """No space left (or quota exceeded) while writing the run's files."""


class NoReadableCheckpoint(RuntimeError):
  """Checkpoints exist but none of them restores."""


def is_disk_full(exc: BaseException | None) -> bool:
  """Whether `exc` (or an exception it was raised from) is ENOSPC / EDQUOT, also in TensorStore's
  wording (its errors reach Python as ValueError with the OS message inside)."""
  for e in _chain(exc):
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if re.search(r"No space left on device|Disk quota exceeded", str(e)):
      return True
  return False


class _DiskFullLogFilter(logging.Filter):
  """Drops Orbax's own error records of a full disk: each writer thread logs one, with its
  traceback, before the save raises the error to the caller, whose `DiskFull` says it once."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR or "orbax" not in record.pathname:
      return True
    exc = record.exc_info[1] if record.exc_info else None
    full = is_disk_full(exc) or bool(re.search(r"No space left|Errno 28", record.getMessage()))
    return not full


def _quiet_disk_full_logs() -> None:
  absl_logger = logging.getLogger("absl")  # Orbax logs through absl
  if not any(isinstance(f, _DiskFullLogFilter) for f in absl_logger.filters):
    absl_logger.addFilter(_DiskFullLogFilter())


def _chain(exc: BaseException | None):
  """`exc` and the exceptions it was raised from, outermost first (as a traceback shows them)."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    yield exc
    exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def root_cause(exc: BaseException) -> BaseException:
  return list(_chain(exc))[-1]


def _file_in_traceback(exc: BaseException, step_dir: epath.Path) -> epath.Path | None:
  """The innermost file under `step_dir` that a frame of the failure was reading."""
  found = None
  for e in _chain(exc):
    tb = e.__traceback__
    while tb is not None:
      for name in ("path", "file_path", "filename"):
        value = tb.tb_frame.f_locals.get(name)
        if value is not None and os.fspath(value).startswith(os.fspath(step_dir) + "/"):
          if epath.Path(value).is_file():
            found = epath.Path(value)
      tb = tb.tb_next
  return found


def describe_failure(exc: BaseException, step_dir: epath.Path) -> str:
  """Which file of the checkpoint at `step_dir` failed and how, from a restore's exception."""
  root = root_cause(exc)
  text = str(root).splitlines()[0] if str(root) else type(root).__name__
  m = re.search(r"byte range \[(\d+), (\d+)\) is not valid for value of size (\d+)", text)
  if m:  # TensorStore reading an OCDBT data file past its end
    needed, size = int(m.group(2)), int(m.group(3))
    what = re.search(r'Error reading "([^"]+)"', text)
    array = f" (array {what.group(1)})" if what else ""
    # OCDBT data files: <item>/d/* and <item>/ocdbt.process_<i>/d/*.
    for path in [*step_dir.glob("*/d/*"), *step_dir.glob("*/ocdbt.process_*/d/*")]:
      if path.is_file() and path.stat().length == size:
        return (
          f"{path.relative_to(step_dir.parent)} is truncated: {size} bytes, but its data "
          f"runs to byte {needed}{array}"
        )
    return f"a data file is truncated: {size} bytes, its data runs to byte {needed}{array}"
  path = _file_in_traceback(exc, step_dir)
  where = f"{path.relative_to(step_dir.parent)} ({path.stat().length} bytes): " if path else ""
  return f"{where}{type(root).__name__}: {text[:300]}"


def _timestamp() -> str:
  return datetime.datetime.now().strftime("%Y%m%dT%H%M%S")


def _distributed_client():
  """JAX's coordination-service client (a multi-process run), for its key-value store."""
  from jax._src import distributed  # noqa: PLC0415 — no public handle on the client

  return distributed.global_state.client


class _IteratorSnapshot:
  """A frozen iterator state, so an async save records the step it was taken at.

  grain's handler writes `get_state()` of anything that is not a live
  `DatasetIterator` as already-serialised bytes; restoring into the live
  iterator parses the same JSON back.
  """

  def __init__(self, state: dict[str, Any]):
    self._state = json.dumps(state, indent=1).encode()

  def get_state(self) -> bytes:
    return self._state


class Checkpointer:
  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    # Orbax needs absolute paths; remote ones (gs://…) already are.
    self.directory = epath.Path(directory if "://" in directory else os.path.abspath(directory))
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=async_save,
        # Unfinished saves are moved aside by the writer (move_aside_unfinished), never
        # deleted: a reader (the evaluate CLI) must not touch a live run's save.
        cleanup_tmp_directories=False,
      ),
      item_names=("state", "data", "config"),
    )
    self._saving: int | None = None  # the step of the save in flight
    _quiet_disk_full_logs()
    self._agreements = 0

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  # ---------------------------------------------------------------- saving

  def _disk_full(self, e: BaseException) -> DiskFull:
    self._manager.reload()
    intact = self.all_steps()
    resume = f"resume from step {intact[-1]}" if intact else "start over"
    return DiskFull(
      f"no space left on the device of {self.directory} while saving the checkpoint of step "
      f"{self._saving} ({root_cause(e)}). The checkpoints of steps {intact} are intact; free "
      f"space (or lower config.keep_ckpts) and re-run the same command to {resume}",
    )

  def save(self, step: int, state: Any, data_iter=None, config: dict | None = None) -> None:
    """Starts an (async) save of `state` at `step`; returns once arrays are copied off.

    Raises DiskFull when this save, or the one before it, ran out of space.
    """
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iter.get_state()))
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    try:
      self._manager.wait_until_finished()  # the previous save's error is raised here
      self._saving = step
      self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    except Exception as e:
      if is_disk_full(e):
        raise self._disk_full(e) from e
      raise

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      if is_disk_full(e):
        raise self._disk_full(e) from e
      raise

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._manager.close()

  # ---------------------------------------------------------------- recovery

  def _aside(self, step: int, kind: str = "") -> epath.Path:
    return self.directory / CORRUPT_DIR / f"{step}-{_timestamp()}{kind}"

  def _move(self, src: epath.Path, dst: epath.Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
      src.rename(dst)
    except OSError as e:
      raise OSError(f"could not move {src} aside to {dst} ({e}); move it by hand and re-run") from e

  def move_aside_unfinished(self) -> list[str]:
    """Moves the directories of saves that never finished to `corrupt/`; returns their names.

    Call only from the run that writes here (it holds the workdir lock), on
    process 0 of a multi-process run.
    """
    moved = []
    if not self.directory.exists():
      return moved
    for path in sorted(self.directory.iterdir()):
      m = re.fullmatch(rf"(\d+){re.escape(_TMP_SUFFIX)}.*", path.name)
      if not m:
        continue
      dst = self._aside(int(m.group(1)), "-unfinished")
      self._move(path, dst)
      message = (
        f"{path} was left by a save of step {m.group(1)} that did not finish (the run was "
        f"killed or crashed while saving); moved it to {dst}"
      )
      log.warning(message)
      print(f"WARNING: {message}", flush=True)
      moved.append(path.name)
    if moved:
      self._manager.reload()
    return moved

  def _agree(self, ok: bool, step: int, problem: str) -> tuple[bool, str]:
    """Whether every process restored `step` (multi-process); else the first problem seen.

    Through the coordination service's key-value store, not a collective: a
    process whose restore failed must not meet the others inside Orbax's barrier.
    """
    if jax.process_count() == 1:
      return ok, problem
    client = _distributed_client()
    self._agreements += 1
    prefix = f"big_contrast/restore/{self._agreements}-{step}"
    client.key_value_set(f"{prefix}/{jax.process_index()}", "ok" if ok else f"failed: {problem}")
    verdicts = []
    for p in range(jax.process_count()):
      try:
        verdicts.append(client.blocking_key_value_get(f"{prefix}/{p}", _AGREE_TIMEOUT_S * 1000))
      except Exception as e:
        raise NoReadableCheckpoint(
          f"checkpoint step {step} in {self.directory} is unreadable on process "
          f"{jax.process_index()} ({problem}), and process {p} gave no verdict in "
          f"{_AGREE_TIMEOUT_S} s: it probably read the checkpoint. Move {self.directory / str(step)} "
          f"to {self.directory / CORRUPT_DIR}/ by hand and re-run"
        ) from e
    failed = [v for v in verdicts if v != "ok"]
    return not failed, (failed[0].removeprefix("failed: ") if failed else "")

  def restore_config(self, step: int | None = None) -> ml_collections.ConfigDict:
    """The config a run was saved with (newest checkpoint, or `step`), locked."""
    self._manager.reload()
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    saved = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    config = ml_collections.ConfigDict(saved["config"])
    config.lock()
    return config

  def restore(
    self, abstract_state: Any, data_iter=None, *, step: int | None = None, move_aside: bool = False
  ) -> tuple[int, Any] | None:
    """Restores the newest readable checkpoint onto `abstract_state`'s shardings.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with `.sharding` set;
    `data_iter` (if given) is moved to the saved position in place. Returns
    (step, state), or None when there is no checkpoint. A checkpoint that fails to
    restore is skipped for the previous one, with a warning naming the file and
    the problem; with `move_aside` (the writer of the run) it is first moved to
    `corrupt/<step>-<time>/`. With `step`, only that one is tried.
    """
    self._manager.reload()
    steps = sorted(self._manager.all_steps(), reverse=True)
    if step is not None:
      if step not in steps:
        raise FileNotFoundError(
          f"no checkpoint at step {step} in {self.directory}; there are {sorted(steps)}"
        )
      steps = [step]
    failed: list[tuple[int, str]] = []
    for step in steps:
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
      restored, problem = None, ""
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
      except Exception as e:
        log.debug("restoring step %d failed", step, exc_info=True)
        problem = describe_failure(e, self.directory / str(step))
      ok, problem = self._agree(restored is not None, step, problem)
      if ok:
        if move_aside and failed:
          self._move_aside_failed([s for s, _ in failed])
        return step, restored["state"]
      failed.append((step, problem))
      message = f"checkpoint step {step} in {self.directory} is unreadable: {problem}"
      log.warning(message)
      print(f"WARNING: {message}; trying the previous one", flush=True)
    if failed:
      # Nothing readable: touch nothing, so a backup or a closer look still has it all.
      raise NoReadableCheckpoint(
        f"no readable checkpoint in {self.directory}: "
        + "; ".join(f"step {s}: {p}" for s, p in failed)
        + f". Move them to {self.directory / CORRUPT_DIR}/ to start afresh, or restore a backup"
      )
    return None

  def _move_aside_failed(self, steps: list[int]) -> None:
    """Moves unreadable steps to `corrupt/`, so the resumed run can save those steps again."""
    for step in steps:
      dst = self._aside(step)
      if jax.process_index() == 0:
        self._move(self.directory / str(step), dst)
      message = f"moved the unreadable checkpoint step {step} to {dst}"
      log.warning(message)
      print(f"WARNING: {message}", flush=True)
    if jax.process_count() > 1:
      self._agree(True, -1, "")  # a barrier: every process sees the moves before it reloads
    self._manager.reload()
