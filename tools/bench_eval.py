r"""Times the evaluation library at ImageNet-probe scale; prints JSON lines.

  python tools/bench_eval.py [--n=50000 --test=10000 --dim=768 --classes=1000 --lbfgs_iters=30]
  python tools/bench_eval.py --only knn          # one part: ridge, lbfgs, sklearn, knn

Features are synthetic Gaussian class clusters (the probe's cost depends on the
shapes, not on where the features came from). Reports:
  * ridge: the closed-form ridge probe, 17-value L2 sweep on a held-out 20% + refit;
  * lbfgs / sklearn: our L-BFGS logistic probe and scikit-learn's
    `LogisticRegression(solver="lbfgs")` side by side on the same standardised
    features, at the same L2 (ours: mean CE + l2/2 ||W||², sklearn: C = 1 / (l2 n)),
    each for at most `--lbfgs_iters` iterations: seconds, iterations, the objective
    reached (computed the same way for both) and test top-1;
  * knn: weighted kNN (k = 20) of the test rows against the train rows, beside the
    time of its matrix products alone (the same [chunk, d] × [d, n] blocks, no top-k):
    the floor kNN cannot beat.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

PARTS = ("ridge", "lbfgs", "sklearn", "knn")


def _objective(x, y, w, b, l2) -> float:
  """mean_i CE(x_i W + b, y_i) + l2/2 ||W||², in float64."""
  logits = (x @ w + b).astype(np.float64)
  logits -= logits.max(axis=1, keepdims=True)
  log_z = np.log(np.exp(logits).sum(axis=1))
  ce = log_z - logits[np.arange(len(y)), y]
  return float(ce.mean() + 0.5 * l2 * np.sum(w.astype(np.float64) ** 2))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--n", type=int, default=50_000)
  p.add_argument("--test", type=int, default=10_000)
  p.add_argument("--dim", type=int, default=768)
  p.add_argument("--classes", type=int, default=1_000)
  p.add_argument("--lbfgs_iters", type=int, default=30, help="L-BFGS iteration cap, both solvers")
  p.add_argument("--l2", type=float, default=1e-3, help="L2 strength of the side-by-side fits")
  p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
  args = p.parse_args()
  parts = set(args.only.split(","))
  if parts - set(PARTS):
    p.error(f"--only: unknown parts {sorted(parts - set(PARTS))}; expected some of {PARTS}")

  import jax  # noqa: PLC0415 — after argparse, so --help is instant
  import jax.numpy as jnp  # noqa: PLC0415 — likewise

  from big_contrast import evaluate  # noqa: PLC0415 — likewise
  from big_contrast.evaluate import _linear_fit  # noqa: PLC0415 — likewise
  from big_contrast.evaluate.linear_probe import fit_standardizer  # noqa: PLC0415 — likewise

  rng = np.random.default_rng(0)
  centers = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
  y_train = rng.integers(0, args.classes, args.n)
  y_test = rng.integers(0, args.classes, args.test)
  x_train = centers[y_train] * 0.15 + rng.standard_normal((args.n, args.dim), dtype=np.float32)
  x_test = centers[y_test] * 0.15 + rng.standard_normal((args.test, args.dim), dtype=np.float32)
  base = dict(
    n_train=args.n, n_test=args.test, dim=args.dim, classes=args.classes, cpus=os.cpu_count()
  )

  def emit(**fields):
    print(json.dumps(dict(base, **fields)), flush=True)

  if "ridge" in parts:
    t = time.perf_counter()
    r = evaluate.linear_probe(x_train, y_train, x_test, y_test, solver="ridge")
    emit(
      probe="ridge, 17-value L2 sweep + refit",
      seconds=round(time.perf_counter() - t, 2),
      top1=round(r["top1"], 4),
      l2=r["l2"],
    )

  mean, scale = fit_standardizer(x_train)
  xs_train, xs_test = (x_train - mean) / scale, (x_test - mean) / scale
  if "lbfgs" in parts:
    targets = np.eye(args.classes, dtype=np.float32)[y_train]
    weights = jnp.ones(args.n)
    init = _linear_fit.initial_params(args.dim, targets, weights, "softmax")
    # max_iter is traced, not static: a 1-iteration fit compiles the program the timed fit runs.
    jax.block_until_ready(
      _linear_fit.fit_linear(xs_train, targets, weights, args.l2, init, 1, 1e-5, loss="softmax")
    )
    t = time.perf_counter()
    params, iters, _ = _linear_fit.fit_linear(
      xs_train, targets, weights, args.l2, init, args.lbfgs_iters, 1e-5, loss="softmax"
    )
    w, b = np.asarray(params["W"]), np.asarray(params["b"])
    s = time.perf_counter() - t
    emit(
      probe=f"ours: L-BFGS logistic (optax, JAX), l2={args.l2}, <= {args.lbfgs_iters} iterations",
      seconds=round(s, 2),
      iterations=int(iters),
      seconds_per_iteration=round(s / max(int(iters), 1), 3),
      objective=round(_objective(xs_train, y_train, w, b, args.l2), 5),
      top1=round(float(np.mean(np.argmax(xs_test @ w + b, 1) == y_test)), 4),
    )
  if "sklearn" in parts:
    import warnings  # noqa: PLC0415 — only this part needs it

    from sklearn.exceptions import ConvergenceWarning  # noqa: PLC0415 — likewise
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 — likewise

    clf = LogisticRegression(
      solver="lbfgs", C=1.0 / (args.l2 * args.n), max_iter=args.lbfgs_iters, tol=1e-12
    )
    t = time.perf_counter()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", ConvergenceWarning)  # the cap is the point
      clf.fit(xs_train, y_train)
    s = time.perf_counter() - t
    w, b = clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32)
    emit(
      probe=f"scikit-learn LogisticRegression(solver='lbfgs'), C=1/(l2 n), "
      f"<= {args.lbfgs_iters} iterations",
      seconds=round(s, 2),
      iterations=int(np.max(clf.n_iter_)),
      seconds_per_iteration=round(s / max(int(np.max(clf.n_iter_)), 1), 3),
      objective=round(_objective(xs_train, y_train, w, b, args.l2), 5),
      top1=round(float(clf.score(xs_test, y_test)), 4),
    )

  if "knn" in parts:
    # Compile both on a small slice first, so the figures are steady-state times.
    evaluate.knn_accuracy(x_train, y_train, x_test[:8], y_test[:8], k=20)
    t = time.perf_counter()
    r = evaluate.knn_accuracy(x_train, y_train, x_test, y_test, k=20)
    knn_s = time.perf_counter() - t
    chunk = max(8, 2**25 // args.n)  # knn's default chunk on one device
    product = jax.jit(lambda q, x: q @ x.T)
    train_dev = jnp.asarray(x_train)
    queries = np.pad(x_test, ((0, -args.test % chunk), (0, 0)))  # kNN pads its last chunk too
    jax.block_until_ready(product(jnp.asarray(queries[:chunk]), train_dev))
    t = time.perf_counter()
    for i in range(0, len(queries), chunk):
      jax.block_until_ready(product(jnp.asarray(queries[i : i + chunk]), train_dev))
    matmul_s = time.perf_counter() - t
    emit(
      probe="weighted cosine kNN, k=20",
      seconds=round(knn_s, 2),
      matmul_only_seconds=round(matmul_s, 2),
      ratio_to_matmul=round(knn_s / matmul_s, 2),
      devices=jax.device_count(),
      top1=round(r["top1"], 4),
    )


if __name__ == "__main__":
  main()
