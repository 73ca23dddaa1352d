"""Where training metrics go: TensorBoard event files (no TensorFlow) and a progress line.

Only process 0 writes; every process may call.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import jax
from etils import epath


class MetricWriter:
  """Scalars to `workdir/tb` as TensorBoard events (tensorboardX) and to
  `workdir/metrics.jsonl`, one `{"step": …, name: value, …}` line per write."""

  def __init__(self, workdir: str):
    self._writer = self._jsonl = None
    if jax.process_index() == 0:
      import tensorboardX  # noqa: PLC0415 — only the writing process needs it

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
