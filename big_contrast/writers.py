"""Where training metrics go: TensorBoard event files (no TensorFlow), JSONL, a progress line.

clu's `metric_writers` and `periodic_actions` would serve here but import
TensorFlow, which the core install must not need; the writer keeps their
interface (`write_scalars(step, scalars)`, `flush`, `close`). Only process 0
writes; every process may call.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import jax
import numpy as np
import tensorboardX
from etils import epath


class MetricWriter:
  """Scalars to `workdir/tb` as TensorBoard events (tensorboardX) and to
  `workdir/metrics.jsonl`, one `{"step": …, name: value, …}` line per write."""

  def __init__(self, workdir: str):
    self._writer = self._jsonl = None
    if jax.process_index() == 0:
      self._writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"), flush_secs=30)
      self._jsonl = (epath.Path(workdir) / "metrics.jsonl").open("a")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is None:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), global_step=step)
    self._jsonl.write(
      json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n"
    )

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._jsonl.close()
      self._writer = self._jsonl = None


class MetricWindow:
  """The train step's metrics between two log lines, reduced when the line is due.

  Steps are kept on the device until `reduce`, which fetches them in one
  transfer and returns each metric's mean over the window; `data/skipped` (bad
  records dropped by the input pipeline) becomes the running total since this
  process started. `reduce` also stops the run once `max_nonfinite_steps`
  updates in a row were skipped for non-finite gradients, naming the step.
  """

  def __init__(self, max_nonfinite_steps: int):
    self._pending: list[dict] = []
    self._limit = max_nonfinite_steps
    self._skipped_total = 0

  def add(self, metrics: Mapping[str, jax.Array]) -> None:
    self._pending.append(metrics)

  def reduce(self, step: int) -> dict[str, float]:
    """Means over the steps added since the last call; `step` is the last one's number."""
    fetched = jax.device_get(self._pending)
    self._pending = []
    first = step - len(fetched) + 1
    for i, m in enumerate(fetched):
      if int(m["nonfinite_in_a_row"]) >= self._limit:
        raise FloatingPointError(
          f"{int(m['nonfinite_in_a_row'])} non-finite steps in a row at step {first + i} "
          f"(config.max_nonfinite_steps={self._limit}); those updates were skipped, the "
          "parameters are the last finite ones, and no checkpoint was written from "
          "non-finite values"
        )
    scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    if "data/skipped" in scalars:
      self._skipped_total += sum(int(m["data/skipped"]) for m in fetched)
      scalars["data/skipped"] = self._skipped_total
    return scalars


class Progress:
  """`step 120/1200 (10%) | loss 2.31 | 850 ex/s | ETA 4m12s`, from the steps' wall clock."""

  def __init__(self, total_steps: int, global_batch_size: int, start_step: int):
    self.total, self.batch = total_steps, global_batch_size
    self._t0, self._s0 = time.perf_counter(), start_step
    self._last_t, self._last_s = self._t0, start_step

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    now = time.perf_counter()
    rate = (step - self._last_s) / max(now - self._last_t, 1e-9)
    self._last_t, self._last_s = now, step
    eta = (self.total - step) / max(rate, 1e-9)
    parts = [f"step {step}/{self.total} ({100 * step / self.total:.0f}%)"]
    parts += [f"{k} {v:.4g}" for k, v in scalars.items()]
    parts += [f"{rate * self.batch:.0f} ex/s", f"ETA {int(eta // 60)}m{int(eta % 60):02d}s"]
    return " | ".join(parts)
