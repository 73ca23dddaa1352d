"""Multi-label linear probe: one-vs-rest logistic regression, scored by mAP and F1.

Same protocol and parametrisation as `linear_probe` (L2 sweep on held-out train, refit on all of
train), with a sigmoid binary cross-entropy per class in place of the softmax. Also holds the
`average_precision` and `f1_scores` it reports (scikit-learn's, with classes that have
no positive left out of the macro averages).

Knows nothing about models or datasets: feature arrays and multi-hot targets in, numbers out.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
import numpy as np

from big_contrast.evaluate import _linear_fit, _validate
from big_contrast.evaluate.linear_probe import DEFAULT_L2_GRID, fit_standardizer


def average_precision(
  scores, targets, average: Literal["macro", "micro"] | None = "macro"
) -> float | np.ndarray:
  r"""Average precision (scikit-learn's `average_precision_score`), per class or averaged.

  For one class, with thresholds at the distinct scores in decreasing order and P_k, R_k the
  precision and recall when predicting positive at or above threshold k:

  .. math:: AP = \sum_k (R_k - R_{k-1}) P_k, \qquad R_0 = 0

  (no interpolation; tied scores form one threshold).

  Args:
    scores: [n, C] real scores (logits or probabilities; only the order matters).
    targets: [n, C] multi-hot {0, 1} ground truth.
    average: "macro": mean of the per-class APs over the classes with at least one positive
      (classes without positives have no defined AP and are excluded, where sklearn would warn
      and count them); "micro": the AP of all n * C (score, target) pairs pooled;
      None: the per-class APs [C], NaN for classes without positives.

  Returns:
    A float in [0, 1] (or [C] array for average=None).
  """
  from sklearn import metrics  # noqa: PLC0415 — scikit-learn (and SciPy) off the trainer's start-up

  scores = np.asarray(scores, np.float64)
  if scores.ndim == 1:
    scores = scores[:, None]
  targets = np.asarray(targets).reshape(scores.shape[0], -1)
  if targets.shape != scores.shape:
    raise ValueError(f"scores {scores.shape} and targets {targets.shape} must have the same shape.")
  if not np.isfinite(scores).all():
    raise ValueError("scores contain NaN or inf.")
  targets = _validate.as_multi_hot(targets, "targets", scores.shape[0])
  if not targets.any():
    raise ValueError("targets has no positive entry; average precision is undefined.")
  if average == "micro":
    return float(metrics.average_precision_score(targets, scores, average="micro"))
  if average not in ("macro", None):
    raise ValueError(f"Unknown average {average!r}; use 'macro', 'micro' or None.")
  present = targets.any(axis=0)
  per_class = np.full(scores.shape[1], np.nan)
  per_class[present] = metrics.average_precision_score(
    targets[:, present], scores[:, present], average=None
  )
  return per_class if average is None else float(np.mean(per_class[present]))


def f1_scores(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
  """Macro and micro F1 of binary predictions [n, C] against multi-hot targets [n, C].

  F1 = 2 TP / (2 TP + FP + FN). "f1_macro" averages the per-class F1 over the classes with at
  least one positive in `targets` (the classes `average_precision` macro-averages over);
  "f1_micro" pools the counts over all classes (0 when there is nothing to count).
  """
  from sklearn import metrics  # noqa: PLC0415 — scikit-learn (and SciPy) off the trainer's start-up

  predictions, targets = np.asarray(predictions, bool), np.asarray(targets, bool)
  present = np.flatnonzero(targets.any(axis=0))
  kw = dict(zero_division=0.0)
  return {
    "f1_macro": float(
      metrics.f1_score(targets, predictions, average="macro", labels=present, **kw)
    ),
    "f1_micro": float(metrics.f1_score(targets, predictions, average="micro", **kw)),
  }


def fit_multilabel_logistic(
  x, targets, l2: float, *, max_iter: int = 1000, tol: float = 1e-5
) -> tuple[np.ndarray, np.ndarray]:
  """One-vs-rest logistic regression, all classes at once, by full-batch L-BFGS (float32).

  Minimises  mean_i sum_c BCE(x_i w_c + b_c, t_ic) + (l2/2) ||W||^2, which separates into C
  binary problems, each sklearn's `LogisticRegression(C=1 / (l2 * n))` on column c.

  Args:
    x: [n, d] features; targets: [n, C] multi-hot.

  Returns:
    W [d, C] and b [C] (numpy float32); a class is predicted when x @ W + b > 0.
  """
  x = _validate.as_features(x, "x")
  targets = _validate.as_multi_hot(targets, "targets", x.shape[0])
  weights = jnp.ones(x.shape[0])
  init = _linear_fit.initial_params(x.shape[1], targets, weights, "sigmoid")
  params, _, _ = _linear_fit.fit_linear(
    x, targets, weights, float(l2), init, max_iter, tol, loss="sigmoid"
  )
  return np.asarray(params["W"]), np.asarray(params["b"])


def multilabel_probe(
  train_x,
  train_Y,
  test_x,
  test_Y,
  *,
  l2_grid=None,
  val_fraction: float = 0.2,
  seed: int = 0,
  standardize: bool = True,
  max_iter: int = 1000,
  tol: float = 1e-5,
) -> dict:
  """One-vs-rest logistic probe with the L2 strength chosen by held-out macro-mAP.

  As `linear_probe`: standardise with train statistics, hold out a random `val_fraction` of
  train (by `seed`), sweep `l2_grid` strongest to weakest with warm starts, keep the best
  held-out macro-mAP (ties to the stronger l2), refit on all of train, score test.

  Args:
    train_x: [n, d] features; train_Y: [n, C] multi-hot targets.
    test_x: [m, d] features; test_Y: [m, C] multi-hot targets.

  Returns:
    {"macro_map", "micro_map": `average_precision` of the test logits (macro excludes classes
     with no positive in test), "f1_macro", "f1_micro": at probability 0.5 (see `f1_scores`),
     "l2": chosen strength, "sweep": {"l2": [...ascending], "val_macro_map": [...]}}.
  """
  train_x = _validate.as_features(train_x, "train_x")
  test_x = _validate.as_features(test_x, "test_x")
  _validate.check_same_dim(train_x, test_x, "train_x", "test_x")
  train_Y = _validate.as_multi_hot(train_Y, "train_Y", train_x.shape[0])
  test_Y = _validate.as_multi_hot(test_Y, "test_Y", test_x.shape[0], train_Y.shape[1])
  l2_grid = np.sort(np.asarray(DEFAULT_L2_GRID if l2_grid is None else l2_grid, np.float64))[::-1]
  if l2_grid.ndim != 1 or l2_grid.size == 0 or np.any(l2_grid < 0):
    raise ValueError(f"l2_grid must be a non-empty list of strengths >= 0, got {l2_grid}.")
  if standardize:
    mean, scale = fit_standardizer(train_x)
    train_x, test_x = (train_x - mean) / scale, (test_x - mean) / scale

  x_dev, targets = jnp.asarray(train_x), jnp.asarray(train_Y)
  all_rows = jnp.ones(train_x.shape[0])
  params = _linear_fit.initial_params(train_x.shape[1], targets, all_rows, "sigmoid")

  def fit(weights, l2, init):
    return _linear_fit.fit_linear(
      x_dev, targets, weights, float(l2), init, max_iter, tol, loss="sigmoid"
    )[0]

  sweep_l2, sweep_map = [], []
  best_l2 = float(l2_grid[0])
  if l2_grid.size > 1:
    n = train_x.shape[0]
    if not 0.0 < val_fraction < 1.0:
      raise ValueError(f"val_fraction must be in (0, 1) to sweep l2, got {val_fraction}.")
    n_val = int(np.clip(round(val_fraction * n), 1, n - 1))
    is_val = np.zeros(n, bool)
    is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    if not train_Y[is_val].any():
      raise ValueError("The held-out split has no positive label; raise val_fraction.")
    fit_weights = jnp.asarray(~is_val, jnp.float32)
    best_map, best_params = -1.0, params
    for l2 in l2_grid:
      params = fit(fit_weights, l2, params)
      scores = train_x[is_val] @ np.asarray(params["W"]) + np.asarray(params["b"])
      val_map = average_precision(scores, train_Y[is_val], "macro")
      sweep_map.append(val_map)
      if val_map > best_map:
        best_map, best_params, best_l2 = val_map, params, float(l2)
    params = best_params
    sweep_l2, sweep_map = [float(v) for v in l2_grid[::-1]], sweep_map[::-1]

  params = fit(all_rows, best_l2, params)
  logits = test_x @ np.asarray(params["W"]) + np.asarray(params["b"])
  return {
    "macro_map": average_precision(logits, test_Y, "macro"),
    "micro_map": average_precision(logits, test_Y, "micro"),
    **f1_scores(logits > 0, test_Y),
    "l2": best_l2,
    "sweep": {"l2": sweep_l2, "val_macro_map": sweep_map},
  }
