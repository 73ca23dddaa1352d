"""Orbax checkpoints of the whole run: train state, data iterator, config.

One `Checkpointer` per run directory. Saves are asynchronous (training goes on
while arrays are written); the data iterator's position is snapshotted at the
step it belongs to, one file per process. Restore goes through abstract arrays
carrying the *current* shardings, so a checkpoint written on one mesh restores
onto any other. An unreadable newest checkpoint (truncated, partly written)
falls back to the previous one, and says so.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import grain
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)


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
        cleanup_tmp_directories=True,
      ),
      item_names=("state", "data", "config"),
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iter=None, config: dict | None = None) -> None:
    """Starts an (async) save of `state` at `step`; returns once arrays are copied off."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iter.get_state()))
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

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
    self, abstract_state: Any, data_iter=None, *, step: int | None = None
  ) -> tuple[int, Any] | None:
    """Restores the newest readable checkpoint onto `abstract_state`'s shardings.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with `.sharding` set;
    `data_iter` (if given) is moved to the saved position in place. Returns
    (step, state), or None when there is no checkpoint. A checkpoint that fails to
    restore is skipped for the previous one. With `step`, only that one is tried.
    """
    self._manager.reload()
    steps = sorted(self._manager.all_steps(), reverse=True)
    if step is not None:
      if step not in steps:
        raise FileNotFoundError(
          f"no checkpoint at step {step} in {self.directory}; there are {sorted(steps)}"
        )
      steps = [step]
    for step in steps:
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
      except Exception as e:  # noqa: BLE001 — any unreadable checkpoint falls back
        log.warning(
          "checkpoint at step %d in %s is unreadable (%s: %s); trying the previous one",
          step,
          self.directory,
          type(e).__name__,
          e,
        )
        print(
          f"WARNING: checkpoint step {step} unreadable ({type(e).__name__}); "
          f"falling back to the previous one",
          flush=True,
        )
        continue
      return step, restored["state"]
    if steps:
      raise RuntimeError(f"no readable checkpoint in {self.directory} (tried steps {steps})")
    return None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
