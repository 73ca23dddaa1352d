r"""Runs a config over several seeds and prints each run's table row and job time, then the summary.

  python tools/seed_table.py --config=configs/clip.py:digits --root=/tmp/seeds [--seeds=0,1,2] \
      [-- --config.total_steps=800 ...]

Each seed is `python -m big_contrast.train --config=CONFIG --workdir=ROOT/seedN
--config.seed=N [overrides]`, run one after the other (so each has the machine to
itself), timed from start to exit; a workdir that already has results.json is
read, not rerun. Prints one JSON line per seed (job seconds and the headline
metrics) and a last line with each metric's mean, min and max, and the trained
probe's margin over raw pixels. The dataset is built before the first timed run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADLINE = (
  "probe/top1",
  "probe_raw_pixels/top1",
  "probe_random_init/top1",
  "zero_shot/top1",
  "knn/top1",
)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", required=True, help="e.g. configs/clip.py:digits")
  p.add_argument("--root", required=True, help="workdirs go to ROOT/seedN")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("overrides", nargs="*", help="after --: --config.key=value for every seed")
  args = p.parse_args()
  sys.path.insert(0, REPO)
  from big_contrast import data  # noqa: PLC0415 — after argparse, so --help is instant

  data.ensure_built("bc_digits")  # not part of any seed's job time
  rows = []
  for seed in [int(s) for s in args.seeds.split(",")]:
    workdir = os.path.join(args.root, f"seed{seed}")
    results_path = os.path.join(workdir, "results.json")
    seconds = None
    if not os.path.exists(results_path):
      cmd = [
        sys.executable,
        "-m",
        "big_contrast.train",
        f"--config={args.config}",
        f"--workdir={workdir}",
        f"--config.seed={seed}",
        *args.overrides,
      ]
      t = time.perf_counter()
      proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
      seconds = round(time.perf_counter() - t, 1)
      if proc.returncode:
        sys.exit(f"seed {seed} failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    with open(results_path) as f:
      results = json.load(f)
    row = {"seed": seed, "job_seconds": seconds}
    row.update({k: round(100 * results[k], 1) for k in HEADLINE if k in results})
    rows.append(row)
    print(json.dumps(row), flush=True)
  summary = {"config": args.config, "overrides": args.overrides, "seeds": len(rows)}
  for key in [*HEADLINE, "job_seconds"]:
    values = [r[key] for r in rows if r.get(key) is not None]
    if values:
      summary[key] = dict(mean=round(float(np.mean(values)), 1), min=min(values), max=max(values))
  if all("probe/top1" in r and "probe_raw_pixels/top1" in r for r in rows):
    margins = [r["probe/top1"] - r["probe_raw_pixels/top1"] for r in rows]
    summary["probe_minus_raw_pixels"] = dict(
      mean=round(float(np.mean(margins)), 1), min=round(min(margins), 1)
    )
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()
