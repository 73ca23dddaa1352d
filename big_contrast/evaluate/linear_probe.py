"""Linear probe: multinomial logistic regression on frozen features, L2 strength chosen by sweep.

Protocol (as in the CLIP paper's linear-probe evaluation): hold out part of train, fit one probe
per L2 strength on the rest, keep the strength with the best held-out top-1 (ties: the lower
held-out cross-entropy), refit on all of train with it, report on test. Fitting is full-batch
L-BFGS in JAX (float32); a closed-form ridge regression onto one-hot targets is the fast path
for very large problems.

Knows nothing about models, checkpoints or datasets: feature arrays in, python numbers out.

Parametrisation. The logistic probe minimises

    mean_i CE(x_i W + b, y_i) + (l2 / 2) ||W||_F^2        (bias not penalised)

scikit-learn's `LogisticRegression(C=C)` minimises C * sum_i CE + 1/2 ||W||^2; dividing by C * n
shows the two agree when  l2 = 1 / (C * n)  (n = number of training rows).
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
import numpy as np

from big_contrast.evaluate import _linear_fit, _validate
from big_contrast.evaluate.metrics import accuracy_from_ranks, label_ranks

# Half-decade steps; at 1e2 a standardised probe predicts little more than the class prior.
DEFAULT_L2_GRID = tuple(float(v) for v in np.logspace(-6, 2, 17))


def fit_standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature mean [d] and scale [d] of `x` [n, d]; constant features get scale 1."""
  mean = x.mean(axis=0, dtype=np.float64)
  std = x.std(axis=0, dtype=np.float64)
  return mean.astype(np.float32), np.where(std > 1e-12, std, 1.0).astype(np.float32)


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
  """Boolean mask [n] of held-out rows: about `val_fraction` of each class, chosen by `seed`.

  Every class keeps at least one row on the fitting side; a class with one example is never
  held out. Deterministic for a given (y, val_fraction, seed).
  """
  rng = np.random.default_rng(seed)
  perm = rng.permutation(len(y))
  by_class = perm[np.argsort(y[perm], kind="stable")]  # classes contiguous, random order inside
  counts = np.bincount(y)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  position = np.arange(len(y)) - starts[y[by_class]]
  n_val = np.minimum(np.round(val_fraction * counts), np.maximum(counts - 1, 0))
  is_val = np.zeros(len(y), bool)
  is_val[by_class] = position < n_val[y[by_class]]
  return is_val


def fit_logistic(
  x, y, l2: float, num_classes: int | None = None, *, max_iter: int = 1000, tol: float = 1e-5
) -> tuple[np.ndarray, np.ndarray]:
  """Multinomial logistic regression by full-batch L-BFGS (float32).

  Minimises  mean_i CE(x_i W + b, y_i) + (l2/2) ||W||^2, i.e. sklearn's
  `LogisticRegression(C=1 / (l2 * n))`. No feature standardisation is applied here.

  Args:
    x: [n, d] features.
    y: [n] integer labels in [0, num_classes).
    l2: penalty strength λ > 0 (λ = 0 diverges on separable data).
    num_classes: C; defaults to max(y) + 1.
    max_iter: L-BFGS iteration cap.
    tol: stop once the gradient's L2 norm is below this.

  Returns:
    W [d, C] and b [C] as numpy float32; predictions are argmax(x @ W + b).
  """
  x = _validate.as_features(x, "x")
  y = _validate.as_labels(y, "y", x.shape[0], num_classes)
  num_classes = num_classes or _validate.infer_num_classes(y)
  targets = np.eye(num_classes, dtype=np.float32)[y]
  weights = jnp.ones(x.shape[0])
  init = _linear_fit.initial_params(x.shape[1], targets, weights, "softmax")
  params, _, _ = _linear_fit.fit_linear(
    x, targets, weights, float(l2), init, max_iter, tol, loss="softmax"
  )
  return np.asarray(params["W"]), np.asarray(params["b"])


def fit_ridge(x, y, l2: float, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Closed-form ridge regression onto one-hot targets (the probe's fast path).

  Minimises  mean_i ||x_i W + b - onehot(y_i)||^2 / 2 + (l2/2) ||W||^2, solved as
  W = (Xc^T Xc / n + l2 I)^{-1} Xc^T Yc / n with Xc, Yc the centred inputs and targets.

  Returns:
    W [d, C] and b [C] as numpy float32.
  """
  x = _validate.as_features(x, "x")
  y = _validate.as_labels(y, "y", x.shape[0], num_classes)
  num_classes = num_classes or _validate.infer_num_classes(y)
  ridge = _RidgePath(x, y, num_classes)
  return ridge.solve(float(l2))


class _RidgePath:
  """Eigendecomposition of the centred Gram matrix, so each strength costs one [d, C] rescale."""

  def __init__(self, x: np.ndarray, y: np.ndarray, num_classes: int):
    self.x_mean = x.mean(axis=0)
    xc = x - self.x_mean
    n = x.shape[0]
    targets = np.eye(num_classes, dtype=np.float32)[y]
    self.y_mean = targets.mean(axis=0)
    gram = (xc.T @ xc).astype(np.float64) / n
    self.eigvals, self.eigvecs = np.linalg.eigh(gram)
    self.eigvals = np.clip(self.eigvals, 0.0, None)
    self.rotated_xty = self.eigvecs.T @ (xc.T @ (targets - self.y_mean)).astype(np.float64) / n

  def solve(self, l2: float) -> tuple[np.ndarray, np.ndarray]:
    w = self.eigvecs @ (self.rotated_xty / (self.eigvals + l2)[:, None])
    w = w.astype(np.float32)
    return w, (self.y_mean - self.x_mean @ w).astype(np.float32)


def linear_probe(
  train_x,
  train_y,
  test_x,
  test_y,
  *,
  num_classes: int | None = None,
  l2_grid=None,
  val_fraction: float = 0.2,
  seed: int = 0,
  standardize: bool = True,
  max_iter: int = 1000,
  tol: float = 1e-5,
  solver: Literal["lbfgs", "ridge"] = "lbfgs",
) -> dict:
  """Linear-probe accuracy with the L2 strength chosen on held-out train.

  1. Standardise features with train mean/std (`standardize=True`; statistics from all train).
  2. Hold out `val_fraction` of each class of train (`stratified_split`, by `seed`).
  3. For each l2 in `l2_grid`, from strongest to weakest, fit on the rest, warm-starting from
     the previous solution, and score top-1 on the held-out rows. Strengths tied on top-1 are
     told apart by the held-out cross-entropy (lower wins; then the stronger l2): a small or
     easy held-out set often scores 100% at many strengths, and "the strongest of the tied"
     then picks by an accident of rounding, not by how well the probe fits unseen rows.
  4. Refit on all train with the best l2 (warm-started from its sweep solution); score test.

  `solver="lbfgs"` fits the logistic objective of `fit_logistic`; `solver="ridge"` the
  least-squares one of `fit_ridge` (seconds even for 50k x 768 x 1000, usually a few points
  below logistic). A single-value `l2_grid` skips the sweep.

  Args:
    train_x: [n, d] features; train_y: [n] int labels.
    test_x: [m, d] features; test_y: [m] int labels.
    num_classes: C; defaults to 1 + the largest label in train or test.
    l2_grid: strengths to sweep; default `DEFAULT_L2_GRID` (1e-6 .. 1e2, 17 values).

  Returns:
    {"top1", "top5" (only when C >= 10), "mean_per_class": test metrics in [0, 1],
     "l2": chosen strength,
     "sweep": {"l2": [...ascending], "val_top1": [...], "val_cross_entropy": [...]}
     (empty lists when not swept)}.
  """
  train_x, train_y, test_x, test_y, num_classes = _validate.train_test_classes(
    train_x, train_y, test_x, test_y, num_classes
  )
  l2_grid = np.sort(np.asarray(DEFAULT_L2_GRID if l2_grid is None else l2_grid, np.float64))[::-1]
  if l2_grid.ndim != 1 or l2_grid.size == 0 or np.any(l2_grid < 0):
    raise ValueError(f"l2_grid must be a non-empty list of strengths >= 0, got {l2_grid}.")
  if solver not in ("lbfgs", "ridge"):
    raise ValueError(f"Unknown solver {solver!r}; use 'lbfgs' or 'ridge'.")

  if standardize:
    mean, scale = fit_standardizer(train_x)
    train_x, test_x = (train_x - mean) / scale, (test_x - mean) / scale

  sweep_l2, sweep_acc, sweep_ce = [], [], []
  best_l2, init = float(l2_grid[0]), None
  if l2_grid.size > 1:
    if not 0.0 < val_fraction < 1.0:
      raise ValueError(f"val_fraction must be in (0, 1) to sweep l2, got {val_fraction}.")
    is_val = stratified_split(train_y, val_fraction, seed)
    if not is_val.any():
      raise ValueError("The held-out split is empty; raise val_fraction or add train data.")
    if solver == "lbfgs":
      scores, init = _sweep_lbfgs(train_x, train_y, is_val, l2_grid, num_classes, max_iter, tol)
    else:
      scores = _sweep_ridge(train_x, train_y, is_val, l2_grid, num_classes)
    best_l2 = float(l2_grid[_best(scores)])
    sweep_l2 = [float(v) for v in l2_grid[::-1]]
    sweep_acc = [top1 for top1, _ in scores[::-1]]
    sweep_ce = [ce for _, ce in scores[::-1]]

  if solver == "lbfgs":
    targets = np.eye(num_classes, dtype=np.float32)[train_y]
    weights = jnp.ones(train_x.shape[0])
    if init is None:
      init = _linear_fit.initial_params(train_x.shape[1], targets, weights, "softmax")
    params, _, _ = _linear_fit.fit_linear(
      train_x, targets, weights, best_l2, init, max_iter, tol, loss="softmax"
    )
    w, b = np.asarray(params["W"]), np.asarray(params["b"])
  else:
    w, b = _RidgePath(train_x, train_y, num_classes).solve(best_l2)

  ranks = label_ranks(test_x @ w + b, test_y)
  result = accuracy_from_ranks(ranks, test_y, num_classes)
  result["l2"] = best_l2
  result["sweep"] = {"l2": sweep_l2, "val_top1": sweep_acc, "val_cross_entropy": sweep_ce}
  return result


def held_out_score(result: dict) -> tuple[float, ...]:
  """How a probe's own sweep scored on held-out train at the strength it chose; larger is
  better: (top-1, -cross-entropy) for `linear_probe`, (macro mAP,) for `multilabel_probe`.

  The score for choosing between feature sets of the same examples (e.g. one block or the
  last two), each probed with the same `seed`, hence on the same held-out rows; it never
  reads the test split.
  """
  sweep = result["sweep"]
  if not sweep["l2"]:
    raise ValueError("held_out_score needs a swept probe (an l2_grid of more than one value)")
  i = sweep["l2"].index(result["l2"])
  if "val_top1" in sweep:
    return (sweep["val_top1"][i], -sweep["val_cross_entropy"][i])
  return (sweep["val_macro_map"][i],)


def _val_scores(x_val: np.ndarray, y_val: np.ndarray, w, b) -> tuple[float, float]:
  """(top-1, mean cross-entropy in nats) of the probe (w, b) on held-out rows."""
  logits = (x_val @ np.asarray(w) + np.asarray(b)).astype(np.float64)
  top1 = float(np.mean(label_ranks(logits, y_val) < 1))
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_z = np.log(np.exp(shifted).sum(axis=1))
  return top1, float(np.mean(log_z - shifted[np.arange(len(y_val)), y_val]))


def _best(scores: list[tuple[float, float]]) -> int:
  """Index of the highest top-1, ties to the lowest cross-entropy, then to the first
  (the strongest l2, as the sweep runs from strongest to weakest)."""
  return min(range(len(scores)), key=lambda i: (-scores[i][0], scores[i][1], i))


def _sweep_lbfgs(x, y, is_val, l2_desc, num_classes, max_iter, tol):
  """Held-out (top-1, cross-entropy) per strength, and the solution at the best one (`_best`),
  the refit's warm start."""
  x_dev = jnp.asarray(x)
  targets = jnp.asarray(np.eye(num_classes, dtype=np.float32)[y])
  fit_weights = jnp.asarray(~is_val, jnp.float32)
  params = best_params = _linear_fit.initial_params(x.shape[1], targets, fit_weights, "softmax")
  scores = []
  for l2 in l2_desc:
    params, _, _ = _linear_fit.fit_linear(
      x_dev, targets, fit_weights, float(l2), params, max_iter, tol, loss="softmax"
    )
    scores.append(_val_scores(x[is_val], y[is_val], params["W"], params["b"]))
    if _best(scores) == len(scores) - 1:
      best_params = params
  return scores, best_params


def _sweep_ridge(x, y, is_val, l2_desc, num_classes):
  """Held-out (top-1, cross-entropy) per strength from one eigendecomposition of the fitting
  rows (the cross-entropy of the least-squares scores read as logits: only a tie-break)."""
  path = _RidgePath(x[~is_val], y[~is_val], num_classes)
  return [_val_scores(x[is_val], y[is_val], *path.solve(float(l2))) for l2 in l2_desc]
