"""Where training metrics go: TensorBoard event files (no TensorFlow) and a progress line.

Only process 0 writes; every process may call.
"""
from __future__ import annotations

import time
from collections.abc import Mapping

import jax


class MetricWriter:
  """Scalars to `workdir/tb` as TensorBoard events, written with tensorboardX."""

  def __init__(self, logdir: str):
    self._writer = None
    if jax.process_index() == 0:
      import tensorboardX  # noqa: PLC0415 — only the writing process needs it
      self._writer = tensorboardX.SummaryWriter(logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is None:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), global_step=step)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


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
