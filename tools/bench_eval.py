r"""Times the evaluation library at ImageNet-probe scale; prints JSON lines.

  python tools/bench_eval.py [--n=50000 --test=10000 --dim=768 --classes=1000 --lbfgs_iters=30]

Features are synthetic Gaussian class clusters (the probe's cost depends on the
shapes, not on where the features came from). Reports:
  * the closed-form ridge probe: 17-value L2 sweep on a held-out 20% + refit;
  * the L-BFGS logistic probe at one strength for `--lbfgs_iters` iterations
    (its per-iteration cost, to size a full sweep);
  * weighted kNN (k = 20) of the test rows against the train rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--n", type=int, default=50_000)
  p.add_argument("--test", type=int, default=10_000)
  p.add_argument("--dim", type=int, default=768)
  p.add_argument("--classes", type=int, default=1_000)
  p.add_argument("--lbfgs_iters", type=int, default=30, help="0 skips the L-BFGS timing")
  args = p.parse_args()

  from big_contrast import evaluate  # noqa: PLC0415 — after argparse, so --help is instant

  rng = np.random.default_rng(0)
  centers = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
  y_train = rng.integers(0, args.classes, args.n)
  y_test = rng.integers(0, args.classes, args.test)
  x_train = centers[y_train] * 0.15 + rng.standard_normal((args.n, args.dim), dtype=np.float32)
  x_test = centers[y_test] * 0.15 + rng.standard_normal((args.test, args.dim), dtype=np.float32)
  base = dict(
    n_train=args.n, n_test=args.test, dim=args.dim, classes=args.classes, cpus=os.cpu_count()
  )

  t = time.perf_counter()
  r = evaluate.linear_probe(x_train, y_train, x_test, y_test, solver="ridge")
  print(
    json.dumps(
      dict(
        base,
        probe="ridge, 17-value L2 sweep + refit",
        seconds=round(time.perf_counter() - t, 2),
        top1=round(r["top1"], 4),
        l2=r["l2"],
      )
    ),
    flush=True,
  )

  if args.lbfgs_iters:
    t = time.perf_counter()
    r = evaluate.linear_probe(
      x_train, y_train, x_test, y_test, l2_grid=[1e-3], max_iter=args.lbfgs_iters
    )
    s = time.perf_counter() - t
    print(
      json.dumps(
        dict(
          base,
          probe=f"L-BFGS logistic, one L2, {args.lbfgs_iters} iterations",
          seconds=round(s, 2),
          seconds_per_iteration=round(s / args.lbfgs_iters, 3),
          top1=round(r["top1"], 4),
        )
      ),
      flush=True,
    )

  t = time.perf_counter()
  r = evaluate.knn_accuracy(x_train, y_train, x_test, y_test, k=20)
  print(
    json.dumps(
      dict(
        base,
        probe="weighted cosine kNN, k=20",
        seconds=round(time.perf_counter() - t, 2),
        top1=round(r["top1"], 4),
      )
    ),
    flush=True,
  )


if __name__ == "__main__":
  main()
