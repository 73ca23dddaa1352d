r"""Trains a contrastive model from a config, then evaluates it.

  python -m big_contrast.train --config=configs/clip.py:digits --workdir=/tmp/clip \
      [--config.total_steps=200 --config.mesh.fsdp=2 ...]

Re-running the same command on the same workdir resumes from the newest
checkpoint. The library entry point is `train_and_evaluate(config, workdir)`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax import nnx

from big_contrast import (
  checkpoint,
  config_lib,
  microbatch,
  models,
  objectives,
  optim,
  sharding,
  writers,
)
from big_contrast.data import device_augment, pipeline
from big_contrast.data import tokenizer as tokenizer_lib
from big_contrast.models import pretrained

# -------------------------------------------------------------- Model & state ---


class Trainee:
  """The model's graph, the train state's abstract shape and shardings, and init.

  Train state: dict(step, params, rest, opt_state) of plain pytrees; `rest` holds
  non-trainable variables (fixed position tables, batch statistics).
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, vocab_size: int | None):
    self.config, self.mesh = config, mesh
    self.model_kwargs = dict(
      task=config.task, vocab_size=vocab_size, text_max_len=config.get("text", {}).get("max_len")
    )
    self.tx, self.schedule = optim.make_optimizer(config.optim, config.total_steps)
    self.graphdef = nnx.graphdef(
      nnx.eval_shape(
        lambda: models.build_model(config.model, rngs=nnx.Rngs(0), **self.model_kwargs)
      )
    )
    abstract = jax.eval_shape(self._init, jax.random.key(0))
    specs = sharding.param_specs(abstract, mesh, config.get("sharding_rules", ((".*", "fsdp"),)))
    self.shardings = sharding.to_shardings(specs, mesh)
    self.abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, self.shardings
    )

  def _init(self, rng):
    model = models.build_model(self.config.model, rngs=nnx.Rngs(rng), **self.model_kwargs)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    return dict(
      step=jnp.zeros((), jnp.int32), params=params, rest=rest, opt_state=self.tx.init(params)
    )

  def init(self, seed: int) -> dict:
    """The initial state, born sharded (never materialised on one device)."""
    return jax.jit(self._init, out_shardings=self.shardings)(jax.random.key(seed))

  def model(self, params, rest) -> nnx.Module:
    return nnx.merge(self.graphdef, params, rest)


# ---------------------------------------------------------------- Update step ---


def make_train_step(trainee: Trainee):
  config, mesh = trainee.config, trainee.mesh
  loss_fn = objectives.make_loss_fn(config.loss, mesh)
  inputs = {"image_text": ("image", "text"), "text": ("text",)}.get(config.task, ("views",))
  # Dropout (SimCSE's two views): the key is a function of (seed, step) only, so a
  # resumed run draws the same masks as an uninterrupted one.
  dropout = (
    float(config.model.get("text", {}).get("dropout", 0.0)) if config.task == "text" else 0.0
  )
  microbatches = config.get("microbatches", 1)
  if dropout > 0 and microbatches > 1:
    raise ValueError(
      f"config.model.text.dropout={dropout} with config.microbatches="
      f"{microbatches}: gradient caching recomputes each chunk's forward pass "
      f"and cannot yet replay its dropout masks; use microbatches=1 or dropout 0"
    )

  batch_sharding = sharding.batch_sharding(mesh)
  # data.augment.device: the host only cropped and flipped; jitter, grayscale, blur
  # and solarize run here, per example, keyed by the batch's `augment_seed`.
  augment_cfg = config.data.get("augment", None) or {}
  augment_on_device = config.task == "multiview" and bool(augment_cfg.get("device", False))

  def train_step(state, batch):
    if augment_on_device:
      batch = dict(
        batch, views=device_augment.photometric(batch["views"], batch["augment_seed"], augment_cfg)
      )
    kwargs = {}
    if dropout > 0:
      kwargs["dropout_key"] = jax.random.fold_in(jax.random.key(config.seed), state["step"])

    def apply_fn(params, *xs):  # → (outputs, updated BatchNorm statistics)
      return models.apply_and_update(trainee.graphdef, params, state["rest"], *xs, **kwargs)

    loss, out, grads, rest = microbatch.loss_and_grads(
      apply_fn,
      loss_fn,
      state["params"],
      batch,
      inputs=inputs,
      microbatches=microbatches,
      batch_sharding=batch_sharding,
    )
    updates, opt_state = trainee.tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(
      loss=loss,
      grad_norm=optax.global_norm(grads),
      lr=trainee.schedule(state["step"]),
      nonfinite_in_a_row=opt_state.notfinite_count,
      nonfinite_total=opt_state.total_notfinite,
    )
    if "skipped" in batch:  # undecodable records the pipeline dropped for this batch
      metrics["data/skipped"] = batch["skipped"].sum()
    if "temperature" in out:
      metrics["temperature"] = out["temperature"]
    if "bias" in out:
      metrics["bias"] = out["bias"]
    # A skipped (non-finite) step keeps the old statistics along with the old params.
    finite = opt_state.notfinite_count == 0
    rest = jax.tree.map(lambda new, old: jnp.where(finite, new, old), rest, state["rest"])
    new_state = dict(step=state["step"] + 1, params=params, rest=rest, opt_state=opt_state)
    return new_state, metrics

  return jax.jit(
    train_step,
    in_shardings=(trainee.shardings, batch_sharding),
    out_shardings=(trainee.shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )


# ---------------------------------------------------------------------- Loop ---


class _Preemption:
  """Turns SIGTERM into a flag the loop polls: save at the current step, exit 0.

  In a multi-process run JAX's coordination service owns SIGTERM instead (see
  `_preemption_requested`), so this handler is installed for one process only.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_nonfinite(fetched: list[dict], step: int, limit: int) -> None:
  """Stops the run once `limit` updates in a row were skipped for non-finite gradients."""
  first = step - len(fetched) + 1
  for i, m in enumerate(fetched):
    if int(m["nonfinite_in_a_row"]) >= limit:
      raise FloatingPointError(
        f"{int(m['nonfinite_in_a_row'])} non-finite steps in a row at step {first + i} "
        f"(config.max_nonfinite_steps={limit}); those updates were skipped, the parameters "
        f"are the last finite ones, and no checkpoint was written from non-finite values"
      )


def _preemption_requested(preempt: _Preemption, step: int) -> bool:
  """Whether to save and stop now; every process must agree on the step."""
  if jax.process_count() > 1:
    # The coordination service turns SIGTERM (and TPU maintenance events) on any
    # host into one agreed step for all hosts.
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return multihost_utils.reached_preemption_sync_point(step)
  return preempt.requested


def _periodic_eval(ev, config, trainee, state, tokenizer) -> dict[str, float]:
  """One `config.evals` entry: an evaluator on (optionally) other data, every `ev.every` steps."""
  from big_contrast.evaluate import standard  # noqa: PLC0415

  ev = ml_collections.ConfigDict(dict(ev))
  ev_config = config.copy_and_resolve_references()
  with ev_config.unlocked():
    for key, value in ev.get("data", {}).items():
      ev_config.data[key] = value
  results = standard.run_evaluators([ev.evaluator], ev_config, trainee, state, tokenizer=tokenizer)
  prefix = ev.get("name", ev.evaluator)
  return {f"eval/{prefix}/{k}": v for k, v in results.items()}


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


def _load_pretrained(init_cfg, trainee: Trainee, state: dict) -> dict:
  """Continual pretraining: parameters from a .npz or a big_contrast run, by name."""
  path = init_cfg.path
  source = pretrained.read_npz(path) if path.endswith(".npz") else pretrained.read_checkpoint(path)
  state, report = pretrained.load_into_state(
    state,
    trainee.shardings,
    source,
    rename=tuple(init_cfg.get("rename", ())),
    adapt=init_cfg.get("adapt"),
  )
  print(f"Initialised from {path}:\n{report.summary()}", flush=True)
  return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains per `config` in `workdir` (resuming if a checkpoint is there), then evaluates.

  Returns the final evaluation results (also written to `workdir/results.json`).
  """
  config_lib.validate(config)
  debug = config_lib.apply_debug(config)
  workdir = os.fspath(workdir)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh)
  n_proc, proc = jax.process_count(), jax.process_index()
  if config.batch_size % mesh.size:
    raise ValueError(
      f"config.batch_size={config.batch_size} must be divisible by the "
      f"{mesh.size} devices of the mesh {dict(mesh.shape)}"
    )

  # Data.
  tok = (
    tokenizer_lib.make_tokenizer(config.text.tokenizer, config.data.get("data_dir"))
    if config.task in ("image_text", "text")
    else None
  )
  train_iter = pipeline.train_iterator(
    config.data,
    kind=config.task,
    global_batch_size=config.batch_size,
    seed=config.seed,
    tokenizer=tok,
    text_max_len=config.get("text", {}).get("max_len", 32),
    process_index=proc,
    process_count=n_proc,
  )

  # Model, optimizer and state, restored if a checkpoint exists.
  trainee = Trainee(config, mesh, vocab_size=tok.vocab_size if tok else None)
  ckpt = checkpoint.Checkpointer(
    os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_ckpts
  )
  restored = ckpt.restore(trainee.abstract_state, train_iter)
  if restored is None:
    state = trainee.init(config.seed)
    print(f"Initialised a new run in {workdir}", flush=True)
    if config.get("init_from") and config.init_from.get("path"):
      state = _load_pretrained(config.init_from, trainee, state)
  else:
    step, state = restored
    print(f"Resumed from the checkpoint at step {step} in {workdir}", flush=True)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  print(f"{n_params / 1e6:.2f}M parameters on mesh {dict(mesh.shape)}", flush=True)
  config_lib.log_shapes(config, "params", state["params"])

  # Compile ahead of time, and say how much memory a step needs.
  train_step = make_train_step(trainee)
  first = sharding.host_batch_to_global(next(train_iter), mesh)
  config_lib.log_shapes(config, "first batch", first)
  if debug:  # op-by-op NaN checks need the jit path (and nojit cannot compile ahead)
    compiled, mem = train_step, None
  else:
    compiled = train_step.lower(state, first).compile()
    mem = compiled.memory_analysis()
  if mem is not None:
    print(
      f"train step: {mem.temp_size_in_bytes / 2**20:.1f} MiB temporaries, "
      f"{mem.argument_size_in_bytes / 2**20:.1f} MiB arguments per device",
      flush=True,
    )

  writer = writers.MetricWriter(workdir)
  step = int(state["step"])
  progress = writers.Progress(config.total_steps, config.batch_size, step)
  preempt = _Preemption()
  config_json = json.loads(config.to_json_best_effort())
  pending: list[dict] = []
  skipped_total = 0
  batch = first
  try:
    while step < config.total_steps:
      state, metrics = compiled(state, batch)
      step += 1
      pending.append(metrics)
      if step % config.log_every == 0 or step == config.total_steps:
        fetched = jax.device_get(pending)
        pending.clear()
        _check_nonfinite(fetched, step, config.max_nonfinite_steps)
        scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        if "data/skipped" in scalars:
          skipped_total += sum(int(m["data/skipped"]) for m in fetched)
          scalars["data/skipped"] = skipped_total
        writer.write_scalars(step, scalars)
        if proc == 0:
          shown = {k: scalars[k] for k in ("loss", "temperature", "lr") if k in scalars}
          print(progress.line(step, shown), flush=True)
      for ev in config.get("evals", ()):
        if ev["every"] and step % ev["every"] == 0 and step < config.total_steps:
          writer.write_scalars(step, _periodic_eval(ev, config, trainee, state, tok))
      preempted = _preemption_requested(preempt, step)
      if step % config.ckpt_every == 0 or step == config.total_steps or preempted:
        if not bool(_all_finite(state["params"])):
          raise FloatingPointError(
            f"parameters are not finite at step {step}; refusing to "
            f"write a checkpoint from them (lower config.optim.lr?)"
          )
        ckpt.save(step, state, train_iter, config_json)
      if preempted:
        ckpt.wait()
        print(f"Preempted: saved step {step}; re-run the same command to resume", flush=True)
        return {}
      if step < config.total_steps:
        batch = sharding.host_batch_to_global(next(train_iter), mesh)
  finally:
    preempt.restore()
    writer.flush()
    ckpt.close()

  # Evaluation of the trained encoder.
  from big_contrast.evaluate import standard  # noqa: PLC0415 — keeps training imports light

  t0 = time.perf_counter()
  results = standard.evaluate_run(config, trainee, state, tokenizer=tok)
  results["eval_seconds"] = round(time.perf_counter() - t0, 1)
  writer.write_scalars(
    step,
    {f"final/{k}": v for k, v in results.items() if k != "step" and isinstance(v, (int, float))},
  )
  writer.close()
  if proc == 0:
    periodic = _periodic_results(epath.Path(workdir) / "metrics.jsonl")
    if periodic:
      results["periodic"] = periodic
    (epath.Path(workdir) / "results.json").write_text(json.dumps(results, indent=2))
    print(standard.format_table(results), flush=True)
  return results


def main(argv):
  del argv
  from absl import flags  # noqa: PLC0415

  config_lib.maybe_initialize_distributed()
  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  config_lib.run(main)
