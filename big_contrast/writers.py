"""Where training metrics go: JSONL always, TensorBoard and Weights & Biases by choice, a progress line.

`metrics.jsonl` is the run's own record (results.json's periodic rows and
report.png are read from it); `config.writers` adds the others:
"tensorboard" (event files in `workdir/tb`, written by tensorboardX without
TensorFlow; `tensorboard --logdir workdir/tb`) and "wandb" (Weights & Biases,
the optional `big_contrast[wandb]` extra; its project, entity and mode come from
its usual environment variables, e.g. `WANDB_MODE=offline`, and the run resumes
under one id per workdir). clu's `metric_writers` would serve here but import
TensorFlow, which the core install must not need; the writer keeps their
interface (`write_scalars(step, scalars)`, `flush`, `close`). Only process 0
writes; every process may call.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import tensorboardX
from etils import epath

WRITERS = ("tensorboard", "wandb")  # the choices of config.writers, beside metrics.jsonl


def check_writers(names: Sequence[str]) -> None:
  unknown = [n for n in names if n not in WRITERS]
  if unknown:
    raise ValueError(
      f"config.writers: unknown writer(s) {unknown}; expected some of {list(WRITERS)} "
      "(metrics.jsonl is always written)"
    )


class _Tensorboard:
  def __init__(self, workdir: str):
    self._w = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"), flush_secs=30)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    for name, value in scalars.items():
      self._w.add_scalar(name, value, global_step=step)

  def flush(self) -> None:
    self._w.flush()

  def close(self) -> None:
    self._w.close()


class _Wandb:
  """One W&B run per workdir: its id is kept in `workdir/wandb_run_id`, so a resumed
  training run continues the same W&B run."""

  def __init__(self, workdir: str, config: Mapping[str, Any] | None):
    try:
      import wandb  # noqa: PLC0415 — optional dependency (big_contrast[wandb])
    except ImportError as e:
      raise ImportError(
        "config.writers includes 'wandb' but wandb is not installed: "
        "pip install 'big_contrast[wandb]'"
      ) from e
    id_file = epath.Path(workdir) / "wandb_run_id"
    if not id_file.exists():
      id_file.write_text(uuid.uuid4().hex[:16])
    self._run = wandb.init(
      id=id_file.read_text().strip(),
      name=os.path.basename(os.path.abspath(workdir)),
      dir=workdir,
      config=dict(config or {}),
      resume="allow",
    )

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    self._run.log(dict(scalars), step=step)

  def flush(self) -> None:
    pass  # wandb streams from its own process

  def close(self) -> None:
    self._run.finish()


class MetricWriter:
  """Scalars to `workdir/metrics.jsonl`, one `{"step": …, name: value, …}` line per write,
  and to each of `writers` ("tensorboard", "wandb"); `config` is what W&B records."""

  def __init__(
    self,
    workdir: str,
    writers: Sequence[str] = ("tensorboard",),
    config: Mapping[str, Any] | None = None,
  ):
    check_writers(writers)
    self._jsonl = None
    self._others: list = []
    if jax.process_index() == 0:
      self._jsonl = (epath.Path(workdir) / "metrics.jsonl").open("a")
      if "tensorboard" in writers:
        self._others.append(_Tensorboard(workdir))
      if "wandb" in writers:
        self._others.append(_Wandb(workdir, config))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._jsonl is None:
      return
    values = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
    for w in self._others:
      w.write(step, values)

  def flush(self) -> None:
    if self._jsonl is not None:
      self._jsonl.flush()
      for w in self._others:
        w.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      for w in self._others:
        w.close()
      self._jsonl, self._others = None, []


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
