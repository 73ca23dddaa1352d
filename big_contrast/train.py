r"""Trains a contrastive model from a config, then evaluates it.

  python -m big_contrast.train --config=configs/clip.py:digits --workdir=/tmp/clip \
      [--config.total_steps=200 --config.mesh.fsdp=2 ...]

Re-running the same command on the same workdir resumes from the newest
checkpoint; a second run on a workdir in use stops at once, naming the holder
(`workdir_lock`). The library entry point is `train_and_evaluate(config, workdir)`:
set-up (data, state restored or initialised, the step compiled ahead of time),
the loop (step, log, evaluate, checkpoint, preemption), and the final evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import flags
from clu import parameter_overview
from etils import epath
from jax.experimental import multihost_utils

from big_contrast import (
  checkpoint,
  config_lib,
  data,
  launch,
  losses,
  microbatch,
  models,
  objectives,
  report,
  sharding,
  tasks,
  workdir_lock,
  writers,
)
from big_contrast.data import device_augment, pipeline
from big_contrast.evaluate import Encoder, evaluators
from big_contrast.models import pretrained
from big_contrast.state import Trainee

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- Update step ---


def _momentum_at(step, m0: float, total_steps: int):
  """MoCo v3's schedule: the EMA decay rises from m0 to 1 along a half cosine."""
  progress = jnp.minimum(step / total_steps, 1.0)
  return 1.0 - (1.0 - m0) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))


def _clamp_temperature(params, min_temperature):
  """The learnable temperature's parameter kept at or above its floor, after the update
  (as OpenCLIP clamps `logit_scale`), so its gradient never vanishes below the floor."""
  if "log_temperature" not in params or min_temperature is None:
    return params
  log_t = losses.clamp_log_temperature(params["log_temperature"], min_temperature)
  return dict(params, log_temperature=log_t)


def make_train_step(trainee: Trainee):
  """The jitted step (state, global batch) → (state, metrics), state donated."""
  config, mesh, task = trainee.config, trainee.mesh, trainee.task
  loss_fn = objectives.make_loss_fn(config.loss, mesh)
  momentum = trainee.momentum
  # Dropout (SimCSE's two views): the key is a function of (seed, step) only, so a
  # resumed run draws the same masks as an uninterrupted one.
  dropout = float(config.model.text.dropout) if task.dropout_key else 0.0
  if dropout > 0 and config.microbatches > 1:
    raise ValueError(
      f"config.model.text.dropout={dropout} with config.microbatches="
      f"{config.microbatches}: gradient caching recomputes each chunk's forward pass "
      "and cannot yet replay its dropout masks; use microbatches=1 or dropout 0"
    )

  batch_sharding = sharding.batch_sharding(mesh)
  # data.augment.device: the host only cropped and flipped; jitter, grayscale, blur
  # and solarize run here, per example, keyed by the batch's `augment_seed`.
  augment_on_device = "views" in task.inputs and bool(config.data.augment.device)

  def train_step(state, batch):
    if augment_on_device:
      batch = dict(
        batch,
        views=device_augment.photometric(
          batch["views"], batch["augment_seed"], config.data.augment
        ),
      )
    kwargs = {}
    if dropout > 0:
      kwargs["dropout_key"] = jax.random.fold_in(jax.random.key(config.seed), state["step"])

    def apply_fn(params, *xs):  # → (outputs, updated BatchNorm statistics)
      return models.apply_and_update(trainee.graphdef, params, state["rest"], *xs, **kwargs)

    step_loss_fn = loss_fn
    if momentum is not None:
      # Keys from the momentum encoder (MoCo v3): the EMA of the parameters (the
      # parameters themselves at step 0, so a run initialised from elsewhere starts
      # its EMA there), no gradient. Its BatchNorm statistics are discarded.
      ema = jax.tree.map(
        lambda e, p: jnp.where(state["step"] == 0, p, e), state["ema_params"], state["params"]
      )
      key_out, _ = apply_fn(ema, *(batch[name] for name in task.inputs))
      keys = {
        f"{k}_key": jax.lax.stop_gradient(key_out[k]) for k in ("z", "zimg", "ztxt") if k in key_out
      }
      step_loss_fn = lambda out, batch: loss_fn({**out, **keys}, batch)

    loss, out, grads, rest = microbatch.loss_and_grads(
      apply_fn,
      step_loss_fn,
      state["params"],
      batch,
      inputs=task.inputs,
      microbatches=config.microbatches,
      batch_sharding=batch_sharding,
    )
    updates, opt_state = trainee.tx.update(grads, state["opt_state"], state["params"])
    params = _clamp_temperature(
      optax.apply_updates(state["params"], updates), trainee.min_temperature
    )
    metrics = dict(
      loss=loss,
      grad_norm=optax.global_norm(grads),
      lr=trainee.schedule(state["step"]),
      nonfinite_in_a_row=opt_state.notfinite_count,
      nonfinite_total=opt_state.total_notfinite,
    )
    if "skipped" in batch:  # undecodable records the pipeline dropped for this batch
      metrics["data/skipped"] = batch["skipped"].sum()
    for name in ("temperature", "bias"):
      if name in out:
        metrics[name] = out[name]
    # A skipped (non-finite) step keeps the old statistics along with the old params.
    finite = opt_state.notfinite_count == 0
    rest = jax.tree.map(lambda new, old: jnp.where(finite, new, old), rest, state["rest"])
    new_state = dict(step=state["step"] + 1, params=params, rest=rest, opt_state=opt_state)
    if momentum is not None:
      m = _momentum_at(state["step"], momentum, config.total_steps)
      ema = jax.tree.map(lambda e, p: jnp.where(finite, m * e + (1.0 - m) * p, e), ema, params)
      new_state["ema_params"] = ema
      metrics["momentum"] = m
    return new_state, metrics

  return jax.jit(
    train_step,
    in_shardings=(trainee.shardings, batch_sharding),
    out_shardings=(trainee.shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )


# --------------------------------------------------------------------- Set-up ---


@dataclasses.dataclass
class _Run:
  """What a run holds from set-up to finish."""

  config: ml_collections.ConfigDict
  workdir: str
  trainee: Trainee
  tokenizer: Any
  train_iter: grain.DatasetIterator
  ckpt: checkpoint.Checkpointer
  writer: writers.MetricWriter

  @property
  def mesh(self):
    return self.trainee.mesh


def _train_iterator(config, task: tasks.Task, tokenizer) -> grain.DatasetIterator:
  return pipeline.train_iterator(
    config.data,
    kind=task.data_kind,
    global_batch_size=config.batch_size,
    seed=config.seed,
    tokenizer=tokenizer,
    text_max_len=config.text.max_len if tokenizer else 0,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )


def _init_from_pretrained(init_cfg, trainee: Trainee, state: dict) -> dict:
  """Continual pretraining: parameters from a .npz or a big_contrast run, by name."""
  path = init_cfg.path
  source = pretrained.read_npz(path) if path.endswith(".npz") else pretrained.read_checkpoint(path)
  state, loaded = pretrained.load_into_state(
    state, trainee.shardings, source, rename=tuple(init_cfg.rename), adapt=init_cfg.adapt
  )
  print(f"Initialised from {path}:\n{loaded.summary()}", flush=True)
  return state


def _restore_or_init(run: _Run) -> dict:
  """The newest readable checkpoint (with the data iterator's position), else a new state."""
  config, trainee = run.config, run.trainee
  # Unreadable steps are moved aside (never deleted), so the run can save them again.
  restored = run.ckpt.restore(trainee.abstract_state, run.train_iter, move_aside=True)
  if restored is None:
    state = trainee.init(config.seed)
    print(f"Initialised a new run in {run.workdir}", flush=True)
    if config.init_from.path:
      state = _init_from_pretrained(config.init_from, trainee, state)
  else:
    step, state = restored
    print(f"Resumed from the checkpoint at step {step} in {run.workdir}", flush=True)
  n_params = parameter_overview.count_parameters(state["params"])
  print(f"{n_params / 1e6:.2f}M parameters on mesh {dict(run.mesh.shape)}", flush=True)
  launch.log_shapes(config, "params", state["params"])
  return state


def _compile(train_step, state, first_batch, debug: str):
  """Compiles the step ahead of time and says how much memory it needs per device."""
  if debug:  # op-by-op NaN checks need the jit path (and nojit cannot compile ahead)
    return train_step
  compiled = train_step.lower(state, first_batch).compile()
  mem = compiled.memory_analysis()
  if mem is not None:
    print(
      f"train step: {mem.temp_size_in_bytes / 2**20:.1f} MiB temporaries, "
      f"{mem.argument_size_in_bytes / 2**20:.1f} MiB arguments per device",
      flush=True,
    )
  return compiled


def _set_up(config: ml_collections.ConfigDict, workdir: str) -> _Run:
  mesh = sharding.make_mesh(config.mesh)
  if config.batch_size % mesh.size:
    raise launch.ConfigError(
      f"config.batch_size={config.batch_size} must be divisible by the "
      f"{mesh.size} devices of the mesh {dict(mesh.shape)}"
    )
  task = tasks.get(config.task)
  try:  # the checks of the input pipeline's set-up are all about the user's data or paths
    tokenizer = (
      data.make_tokenizer(config.text.tokenizer, config.data.data_dir)
      if task.needs_tokenizer
      else None
    )
    train_iter = _train_iterator(config, task, tokenizer)
  except (ValueError, FileNotFoundError) as e:
    if isinstance(e, data.DataError):
      raise
    raise data.DataError(str(e)) from e
  trainee = Trainee(config, mesh, vocab_size=tokenizer.vocab_size if tokenizer else None)
  ckpt = checkpoint.Checkpointer(
    os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_ckpts
  )
  if jax.process_index() == 0:
    ckpt.move_aside_unfinished()  # saves a crash cut short: kept in checkpoints/corrupt/
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("big_contrast:unfinished_moved")
  writer = writers.MetricWriter(
    workdir, tuple(config.writers), json.loads(config.to_json_best_effort())
  )
  return _Run(config, workdir, trainee, tokenizer, train_iter, ckpt, writer)


# ----------------------------------------------------------------------- Loop ---


class _Preemption:
  """Turns SIGTERM into a flag the loop polls: save at the current step, exit 0.

  In a multi-process run JAX's coordination service owns SIGTERM instead (see
  `requested`), so this handler is installed for one process only.
  """

  def __init__(self):
    self._flag = False
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self._flag = True

  def requested(self, step: int) -> bool:
    """Whether to save and stop now; every process must agree on the step."""
    if jax.process_count() > 1:
      # The coordination service turns SIGTERM (and TPU maintenance events) on any
      # host into one agreed step for all hosts.
      return multihost_utils.reached_preemption_sync_point(step)
    return self._flag

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _periodic_eval(run: _Run, state: dict, ev) -> dict[str, float]:
  """One `config.evals` entry: an evaluator on (optionally) other data, every `ev.every` steps."""
  ev = ml_collections.ConfigDict(dict(ev))
  ev_config = run.config.copy_and_resolve_references()
  with ev_config.unlocked():
    for key, value in ev.get("data", {}).items():
      ev_config.data[key] = value
  encoder = Encoder(run.trainee, state, run.tokenizer)
  results = evaluators.run([ev.evaluator], ev_config, encoder)
  prefix = ev.get("name", ev.evaluator)
  # A skipped evaluator has printed why; its reason is not a scalar to log.
  return {f"eval/{prefix}/{k}": v for k, v in results.items() if k != "skipped"}


def _save(run: _Run, step: int, state: dict) -> None:
  if not bool(_all_finite(state["params"])):
    raise FloatingPointError(
      f"parameters are not finite at step {step}; refusing to write a checkpoint from "
      "them (lower config.optim.lr?)"
    )
  run.ckpt.save(step, state, run.train_iter, json.loads(run.config.to_json_best_effort()))


def _train(run: _Run, state: dict, debug: str) -> dict | None:
  """Steps until `config.total_steps`; None when preempted (the state is saved)."""
  config, mesh = run.config, run.mesh
  first = sharding.host_batch_to_global(next(run.train_iter), mesh)
  launch.log_shapes(config, "first batch", first)
  step_fn = _compile(make_train_step(run.trainee), state, first, debug)
  step = int(state["step"])
  progress = writers.Progress(config.total_steps, config.batch_size, step)
  window = writers.MetricWindow(config.max_nonfinite_steps)
  preempt = _Preemption()
  batch = first
  failing = False
  try:
    while step < config.total_steps:
      state, metrics = step_fn(state, batch)
      step += 1
      window.add(metrics)
      last = step == config.total_steps
      if step % config.log_every == 0 or last:
        scalars = window.reduce(step)
        run.writer.write_scalars(step, scalars)
        if jax.process_index() == 0:
          shown = {k: scalars[k] for k in ("loss", "temperature", "lr") if k in scalars}
          print(progress.line(step, shown), flush=True)
      for ev in config.evals:
        if ev["every"] and step % ev["every"] == 0 and not last:
          run.writer.write_scalars(step, _periodic_eval(run, state, ev))
      preempted = preempt.requested(step)
      if step % config.ckpt_every == 0 or last or preempted:
        _save(run, step, state)
      if preempted:
        run.ckpt.wait()
        print(f"Preempted: saved step {step}; re-run the same command to resume", flush=True)
        return None
      if not last:
        batch = sharding.host_batch_to_global(next(run.train_iter), mesh)
  except BaseException:
    failing = True
    raise
  finally:
    preempt.restore()
    _stop_writing(run, quietly=failing)
  return state


def _stop_writing(run: _Run, *, quietly: bool) -> None:
  """Flushes the metrics and finishes the checkpoint in flight. After a failure an error
  here (the same full disk, say) is only logged (at INFO), so the first one is what the
  user sees."""
  for finish in (run.writer.flush, run.ckpt.close):
    try:
      finish()
    except Exception as e:
      if not quietly:
        raise
      log.info("while stopping after an error: %s: %s", type(e).__name__, e)


# --------------------------------------------------------------------- Finish ---


def _periodic_results(metrics_path: epath.Path) -> list[dict]:
  """The `config.evals` results logged so far (across restarts), from metrics.jsonl."""
  if not metrics_path.exists():
    return []
  rows = []
  for line in metrics_path.read_text().splitlines():
    row = json.loads(line)
    evals = {k: v for k, v in row.items() if k.startswith("eval/")}
    if evals:
      rows.append({"step": row["step"], **evals})
  return rows


def _finish(run: _Run, state: dict) -> dict[str, Any]:
  """Evaluates the trained encoder; writes the results to the writers, results.json and
  report.png."""
  t0 = time.perf_counter()
  results = evaluators.evaluate_run(run.config, Encoder(run.trainee, state, run.tokenizer))
  results["eval_seconds"] = round(time.perf_counter() - t0, 1)
  run.writer.write_scalars(
    results["step"],
    {f"final/{k}": v for k, v in results.items() if k != "step" and isinstance(v, (int, float))},
  )
  run.writer.close()
  if jax.process_index() == 0:
    periodic = _periodic_results(epath.Path(run.workdir) / "metrics.jsonl")
    if periodic:
      results["periodic"] = periodic
    (epath.Path(run.workdir) / "results.json").write_text(json.dumps(results, indent=2))
    print(evaluators.format_table(results), flush=True)
    print(f"Curves and table: {report.write(run.workdir)}", flush=True)
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains per `config` in `workdir` (resuming if a checkpoint is there), then evaluates.

  Returns the final evaluation results (also written to `workdir/results.json`),
  or {} when the run was preempted (it saved its step; run it again to resume).
  """
  _validate(config)
  debug = launch.apply_debug(config)
  workdir = os.fspath(workdir)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  lock = workdir_lock.acquire_for_run(workdir)
  try:
    run = _set_up(config, workdir)
    state = _train(run, _restore_or_init(run), debug)
    return {} if state is None else _finish(run, state)
  except Exception as e:
    if checkpoint.is_disk_full(e) and not isinstance(e, checkpoint.DiskFull):
      raise checkpoint.DiskFull(
        f"no space left on the device of {workdir} ({checkpoint.root_cause(e)}); the "
        "checkpoints are intact: free space and re-run the same command to resume"
      ) from e
    raise
  finally:
    lock.release()


def _validate(config: ml_collections.ConfigDict) -> None:
  try:
    config_lib.validate(config)
  except (ValueError, TypeError, KeyError) as e:
    if isinstance(e, launch.ConfigError):
      raise
    raise launch.ConfigError(str(e).strip("'\"")) from e


def main(argv):
  del argv
  config = flags.FLAGS.config
  _validate(config)  # before joining the other processes: a bad config stops every one alike
  launch.maybe_initialize_distributed(config.peer_timeout_s)
  train_and_evaluate(config, flags.FLAGS.workdir)


# How the command line reports these (launch.run): a user's mistake exits 2, a run stopped by
# its environment or its numerics (FloatingPointError: non-finite steps) 1, both with their
# message only.
USER_ERRORS = (data.DataError, workdir_lock.WorkdirLocked)
STOP_ERRORS = (checkpoint.DiskFull, checkpoint.NoReadableCheckpoint, FloatingPointError)

if __name__ == "__main__":
  launch.run(main, user_errors=USER_ERRORS, stop_errors=STOP_ERRORS)
