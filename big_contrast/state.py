"""The train state of a config: model graph, abstract shape and shardings, initialisation.

Train state: dict(step, params, rest, opt_state) of plain pytrees; `rest` holds
non-trainable variables (fixed position tables, batch statistics). With a
momentum encoder (`config.loss.momentum`, MoCo v3 style) it also holds
`ema_params`, the exponential moving average of `params` that embeds the keys,
sharded exactly like `params` and saved with them. Its shardings come from
`config.sharding_rules`, so save, restore and evaluation need nothing else. Used
by the trainer and by `big_contrast.evaluate.load_encoder`; knows nothing of the
training loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from big_contrast import objectives, optim, sharding, tasks


class Trainee:
  """A config's model (`graphdef`), optimizer, train-state shape, shardings and `init`."""

  def __init__(self, config: ml_collections.ConfigDict, mesh, *, vocab_size: int | None):
    self.config, self.mesh = config, mesh
    self._apply_fns: dict = {}  # method -> jitted apply (`apply_fn`)
    self._init_jit = self._init_model_jit = None  # jitted once, on first use
    self.task = tasks.get(config.task)
    text_max_len = config.text.max_len if self.task.needs_tokenizer else None
    self._build = lambda rngs: self.task.build_model(
      config.model, vocab_size=vocab_size, text_max_len=text_max_len, rngs=rngs
    )
    self.tx, self.schedule = optim.make_optimizer(config.optim, config.total_steps)
    # The momentum encoder's EMA decay at step 0, or None (no momentum encoder).
    self.momentum = objectives.momentum(config.loss)
    abstract_model = nnx.eval_shape(lambda: self._build(nnx.Rngs(0)))
    self.graphdef = nnx.graphdef(abstract_model)
    # The learnable temperature's floor (CLIP: 0.01), which the trainer keeps the
    # parameter above after each update; None when there is none.
    self.min_temperature = getattr(abstract_model, "min_temperature", None)
    abstract = jax.eval_shape(self._init, jax.random.key(0))
    specs = sharding.param_specs(abstract, mesh, config.sharding_rules)
    if self.momentum is not None:
      specs["ema_params"] = specs["params"]  # sharded like the parameters it follows
    self.shardings = sharding.to_shardings(specs, mesh)
    self.abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, self.shardings
    )

  def _init_model(self, rng) -> dict:
    _, params, rest = nnx.split(self._build(nnx.Rngs(rng)), nnx.Param, ...)
    return dict(params=nnx.to_pure_dict(params), rest=nnx.to_pure_dict(rest))

  def _init(self, rng):
    model = self._init_model(rng)
    params, rest = model["params"], model["rest"]
    state = dict(
      step=jnp.zeros((), jnp.int32), params=params, rest=rest, opt_state=self.tx.init(params)
    )
    if self.momentum is not None:
      # A copy, not an alias: the train step donates the state.
      state["ema_params"] = jax.tree.map(jnp.copy, params)
    return state

  def init(self, seed: int) -> dict:
    """The initial state, born sharded (never materialised on one device)."""
    if self._init_jit is None:
      self._init_jit = jax.jit(self._init, out_shardings=self.shardings)
    return self._init_jit(jax.random.key(seed))

  def init_model(self, seed: int) -> dict:
    """dict(params, rest) as `init(seed)` gives them, without the optimizer state.

    What a frozen encoder needs (the random-init baseline): the same values as
    `init(seed)`'s. When this trainee has run `init` (a run that started here), its
    compiled program is reused and the optimizer state dropped: on CPU the random
    initialisation takes seconds to compile (7.5 s for configs/clip.py:digits) and a
    moment to run. Otherwise a program without the optimizer's initialisation is
    compiled, once.
    """
    if self._init_jit is not None:
      state = self.init(seed)
      return {k: state[k] for k in ("params", "rest")}
    if self._init_model_jit is None:
      out = {k: self.shardings[k] for k in ("params", "rest")}
      self._init_model_jit = jax.jit(self._init_model, out_shardings=out)
    return self._init_model_jit(jax.random.key(seed))

  def apply_fn(self, method: str, **static):
    """`(params, rest, x) -> model.<method>(x, **static)`, jitted once per trainee, method
    and static arguments (hashable, e.g. `last_blocks=2`).

    Shared by every encoder of this trainee (the trained one, its random-init
    baseline), so a second set of parameters of the same shapes compiles nothing.
    """
    key = (method, tuple(sorted(static.items())))
    if key not in self._apply_fns:

      def apply(params, rest, x):
        return getattr(self.model(params, rest), method)(x, **static)

      self._apply_fns[key] = jax.jit(apply)
    return self._apply_fns[key]

  def model(self, params, rest) -> nnx.Module:
    return nnx.merge(self.graphdef, params, rest)
