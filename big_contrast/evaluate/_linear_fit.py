"""Full-batch L-BFGS fit of an L2-regularised linear classifier, shared by both probes.

One jitted program serves the whole L2 sweep and the refit: the data shapes never change, only
the per-example weights (0 for held-out rows, 1 for rows being fit), the strength and the warm
start do, so XLA compiles it once per (n, d, C).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

# In float32 the objective stops going down well before the gradient norm reaches a tight `tol`
# on ill-conditioned inputs; _PATIENCE steps in a row without any decrease mean the fit is done.
# (A relative-decrease test stops too early: real late progress is ~1e-8 of the objective.)
_PATIENCE = 10


def penalised_loss(params, x, targets, weights, l2, loss: str):
  r"""Weighted mean loss plus ridge penalty on the weights (not on the bias).

  .. math::
      f(W, b) = \frac{\sum_i w_i\, \ell(x_i W + b, t_i)}{\sum_i w_i}
                + \frac{\lambda}{2} \|W\|_F^2

  with :math:`\ell` the softmax cross-entropy (`loss="softmax"`, t one-hot [C]) or the sum over
  classes of the sigmoid binary cross-entropy (`loss="sigmoid"`, t multi-hot [C]).
  """
  logits = x @ params["W"] + params["b"]
  if loss == "softmax":
    per_example = optax.softmax_cross_entropy(logits, targets)
  elif loss == "sigmoid":
    per_example = optax.sigmoid_binary_cross_entropy(logits, targets).sum(axis=-1)
  else:
    raise ValueError(f"Unknown loss {loss!r}; use 'softmax' or 'sigmoid'.")
  data_term = jnp.sum(weights * per_example) / jnp.sum(weights)
  return data_term + 0.5 * l2 * jnp.sum(params["W"] ** 2)


def minimize_lbfgs(fun, init_params, max_iter, tol):
  """Minimises `fun` by optax L-BFGS (zoom line search) inside a `lax.while_loop`.

  Stops when the gradient's L2 norm falls to `tol`, after `_PATIENCE` steps in a row that do
  not lower the objective, or after `max_iter` iterations. Traceable (call it under `jit`).

  Returns:
    (params, num_iterations, final gradient norm).
  """
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    params, state, it, stalled = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
    params = optax.apply_updates(params, updates)
    new_value = optax.tree.get(state, "value")
    return params, state, it + 1, jnp.where(new_value < value, 0, stalled + 1)

  def keep_going(carry):
    _, state, it, stalled = carry
    grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
    return (it == 0) | ((it < max_iter) & (grad_norm > tol) & (stalled < _PATIENCE))

  carry = (init_params, opt.init(init_params), jnp.asarray(0), jnp.asarray(0))
  params, state, it, _ = jax.lax.while_loop(keep_going, step, carry)
  return params, it, optax.tree.norm(optax.tree.get(state, "grad"))


@functools.partial(jax.jit, static_argnames="loss")
def fit_linear(x, targets, weights, l2, init_params, max_iter, tol, *, loss: str):
  """Fits {"W": [d, C], "b": [C]} minimising `penalised_loss`, warm-started at `init_params`.

  Args:
    x: [n, d] float32 features.
    targets: [n, C] one-hot (softmax) or multi-hot (sigmoid) float32 targets.
    weights: [n] per-example weights; 0 leaves a row out (used for the held-out split).
    l2: scalar strength λ.
    init_params: warm start, same structure as the result.
    max_iter, tol: see `minimize_lbfgs`.

  Returns:
    (params, num_iterations, final gradient norm).
  """
  fun = functools.partial(penalised_loss, x=x, targets=targets, weights=weights, l2=l2, loss=loss)
  return minimize_lbfgs(fun, init_params, max_iter, tol)


def initial_params(d: int, targets, weights, loss: str) -> dict[str, jax.Array]:
  """W = 0 [d, C] and b [C] at the class prior (log-frequencies, or log-odds for sigmoid).

  That is the exact optimum as λ → ∞, and it matters: the bias is unpenalised and its
  curvature (~1/C) is far below that of a strongly penalised W (~λ), so starting from b = 0
  costs L-BFGS a hundred ill-conditioned iterations before the sweep's first fit converges.
  """
  targets, weights = jnp.asarray(targets), jnp.asarray(weights, jnp.float32)
  rate = jnp.clip((weights @ targets) / jnp.sum(weights), 1e-6, 1 - 1e-6)
  bias = jnp.log(rate) if loss == "softmax" else jnp.log(rate) - jnp.log1p(-rate)
  return {"W": jnp.zeros((d, targets.shape[1]), jnp.float32), "b": bias.astype(jnp.float32)}
