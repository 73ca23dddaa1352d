r"""The fit table of docs/scaling.md: every recipe compiled for TPU slices by tools/compile_for.py.

  nice -n 10 python tools/scaling_table.py [--out_dir=/tmp/scaling_table] [--rows=REGEX] [--jobs=N]
  python tools/scaling_table.py --render_only   # the table from the JSON already there

Runs `python tools/compile_for.py --topology=SLICE --config=CONFIG ... --fit --noeval`
for every row of `TABLE`, each in its own process, `--jobs` of them at a time
(a compile keeps about one core busy for minutes and takes a few GiB: one job
per core, memory allowing), writing each row's JSON to `--out_dir` and its
console to a `.log` beside it as it finishes, and prints the Markdown table
with the command that made each row beside its figures; a row with no JSON is
printed as not computed. A row whose JSON is
already in `--out_dir` is reused: delete the directory to recompute everything
(e.g. after the losses change), or pass `--rows` to (re)run some.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys

GiB = 2**30

# (config, overrides, slices): each config is compiled with --fit for each slice.
TABLE_SLICES = ("v5e-256", "v4-32", "v5p-128")
TABLE = (
  # CLIP ViT-B/16 at B = 2^20 (ring loss, gradient caching): the largest v5e slice
  # and the smallest it can fit on (on a v5e-8 the batch alone, 18.4 GiB per chip,
  # is more than the HBM); the slices between fit if these two do.
  ("configs/clip.py:vit_b16", ("--config.batch_size=1048576",), ("v5e-256", "v5e-16")),
  ("configs/clip.py:vit_b16", (), TABLE_SLICES),
  ("configs/siglip.py:vit_b16", (), TABLE_SLICES),
  ("configs/simclr.py:resnet50", (), TABLE_SLICES),
  ("configs/simclr.py:vit_b16", (), TABLE_SLICES),
  ("configs/supcon.py:resnet50", (), TABLE_SLICES),
  ("configs/polyview.py:resnet50", (), TABLE_SLICES),
  ("configs/softcon.py:s2_vitb14", (), TABLE_SLICES),
  ("configs/simcse.py:bert_base", (), ("v4-32", "v5p-128")),
  # B = 64 does not split over 256 chips; the smallest batch that does.
  ("configs/simcse.py:bert_base", ("--config.batch_size=256",), ("v5e-256",)),
)


def table_commands() -> list[list[str]]:
  out = []
  for config, overrides, slices in TABLE:
    for s in slices:
      out.append(
        ["python", "tools/compile_for.py", f"--topology={s}", f"--config={config}", *overrides]
        + ["--fit", "--noeval"]
      )
  return out


def _row_file(out_dir: str, cmd: list[str]) -> str:
  key = re.sub(r"[^A-Za-z0-9]+", "_", " ".join(cmd[2:]).replace("--config.", "")).strip("_")
  return os.path.join(out_dir, key + ".json")


def run_table(
  out_dir: str, only: str, render_only: bool, jobs: int = 1
) -> list[tuple[list[str], dict | None]]:
  """Each row in its own process (the compiler's memory is returned between rows).

  A row that is not computed (render_only, or its compile failed) is (cmd, None).
  """
  os.makedirs(out_dir, exist_ok=True)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  commands = table_commands()
  todo = [
    cmd
    for cmd in commands
    if not render_only
    and (re.search(only, " ".join(cmd)) if only else not os.path.exists(_row_file(out_dir, cmd)))
  ]

  def run(cmd):
    path = _row_file(out_dir, cmd)
    with open(path.removesuffix(".json") + ".log", "w") as log:
      rc = subprocess.run(
        [sys.executable, *cmd[1:], f"--json_out={path}"],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
      ).returncode
    print(
      f"{'done' if not rc else f'failed (exit {rc}; the row is not computed)'}: {shlex.join(cmd)}",
      flush=True,
    )

  for cmd in todo:
    print("queued: " + shlex.join(cmd), flush=True)
  with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
    list(pool.map(run, todo))
  rows = []
  for cmd in commands:
    path = _row_file(out_dir, cmd)
    if os.path.exists(path):
      with open(path) as f:
        rows.append((cmd, json.load(f)))
    else:
      rows.append((cmd, None))
  return rows


def _gib(x) -> str:
  return f"{x / GiB:.2f}"


def markdown_table(rows) -> str:
  head = (
    "| config | slice | B | as configured | microbatches | block | GiB/chip (of usable) | fits | "
    "examples/s at 50% MFU | compile s | command |\n"
    "|---|---|---:|---|---:|---:|---:|---|---:|---:|---|\n"
  )
  lines = []
  for cmd, r in rows:
    config = cmd[3].removeprefix("--config=configs/")
    if r is None:
      slice_ = cmd[2].removeprefix("--topology=")
      lines.append(f"| {config} | {slice_} | not computed | | | | | | | | `{shlex.join(cmd)}` |")
      continue
    total = r["per_chip"].get("total")
    mem = (
      f"{_gib(total)} ({_gib(r['hbm_usable_bytes'])})"
      if total is not None
      else f"refused: {r.get('refused_gib', '?')} GiB {r.get('refused_what', '')}"
    )
    compile_s = sum(t["compile_s"] for t in r.get("tried", [r]))
    # The config's own microbatches, the search's first probe: does the recipe fit as written?
    own = r.get("tried", [r])[0]
    as_configured = f"{own['microbatches']}: " + (
      "fits"
      if own["fits"]
      else "no, " + (f"{_gib(own['total'])} GiB" if own.get("total") else "refused")
    )
    # The command that produced these figures (the JSON keeps it), less where it wrote them.
    ran = [
      a for a in shlex.split(r.get("command", shlex.join(cmd))) if not a.startswith("--json_out")
    ]
    lines.append(
      f"| {config} | {r['topology']} | {r['batch_size']:,} | {as_configured} | {r['microbatches']} | "
      f"{r['block_size'] or '—'} | {mem} | {'yes' if r['fits'] else '**no**'} | "
      f"{r['projected_examples_per_s']:,.0f} | {compile_s:.0f} | `{shlex.join(ran)}` |"
    )
  return head + "\n".join(lines) + "\n"


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--out_dir", default="/tmp/scaling_table", help="one JSON per row")
  p.add_argument("--rows", default="", help="only (re)run rows whose command matches this regex")
  p.add_argument("--render_only", action="store_true", help="compile nothing; print the table")
  p.add_argument("--jobs", type=int, default=1, help="compiles at a time (one per core)")
  args = p.parse_args(argv)
  print(markdown_table(run_table(args.out_dir, args.rows, args.render_only, args.jobs)))


if __name__ == "__main__":
  main()
