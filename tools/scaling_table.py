r"""The fit table of docs/scaling.md: every recipe compiled for TPU slices by tools/compile_for.py.

  python tools/scaling_table.py [--out_dir=/tmp/scaling_table] [--rows=REGEX]

Runs `python tools/compile_for.py --topology=SLICE --config=CONFIG ... --fit` for
every row of `TABLE`, each in its own process, one after another (a compile
takes minutes and gigabytes), and prints the Markdown table with each row's
command beside its figures. A row whose JSON is already in `--out_dir` is
reused: delete the directory to recompute everything (e.g. after the losses
change), or pass `--rows` to (re)run some.
"""

from __future__ import annotations

import argparse
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
  # CLIP ViT-B/16 at B = 2^20 (ring loss, gradient caching) on v5e slices.
  (
    "configs/clip.py:vit_b16",
    ("--config.batch_size=1048576",),
    ("v5e-256", "v5e-128", "v5e-64", "v5e-32", "v5e-16"),
  ),
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
        + ["--fit"]
      )
  return out


def _row_file(out_dir: str, cmd: list[str]) -> str:
  key = re.sub(r"[^A-Za-z0-9]+", "_", " ".join(cmd[2:]).replace("--config.", "")).strip("_")
  return os.path.join(out_dir, key + ".json")


def run_table(out_dir: str, only: str) -> list[tuple[list[str], dict]]:
  """Each row in its own process (the compiler's memory is returned between rows)."""
  os.makedirs(out_dir, exist_ok=True)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  rows = []
  for cmd in table_commands():
    if only and not re.search(only, " ".join(cmd)):
      continue
    path = _row_file(out_dir, cmd)
    if only or not os.path.exists(path):
      print("$ " + shlex.join(cmd), flush=True)
      subprocess.run([sys.executable, *cmd[1:], f"--json_out={path}"], cwd=root, check=True)
    with open(path) as f:
      rows.append((cmd, json.load(f)))
  return rows


def _gib(x) -> str:
  return f"{x / GiB:.2f}"


def markdown_table(rows) -> str:
  head = (
    "| config | slice | B | microbatches | block | GiB/chip (of usable) | fits | "
    "examples/s at 50% MFU | compile s | command |\n"
    "|---|---|---:|---:|---:|---:|---|---:|---:|---|\n"
  )
  lines = []
  for cmd, r in rows:
    config = cmd[3].removeprefix("--config=configs/")
    total = r["per_chip"].get("total")
    mem = (
      f"{_gib(total)} ({_gib(r['hbm_usable_bytes'])})"
      if total is not None
      else f"refused: {r.get('refused_gib', '?')} GiB {r.get('refused_what', '')}"
    )
    compile_s = sum(t["compile_s"] for t in r.get("tried", [r]))
    lines.append(
      f"| {config} | {r['topology']} | {r['batch_size']:,} | {r['microbatches']} | "
      f"{r['block_size'] or '—'} | {mem} | {'yes' if r['fits'] else '**no**'} | "
      f"{r['projected_examples_per_s']:,.0f} | {compile_s:.0f} | `{shlex.join(cmd)}` |"
    )
  return head + "\n".join(lines) + "\n"


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--out_dir", default="/tmp/scaling_table", help="one JSON per row")
  p.add_argument("--rows", default="", help="only rows whose command matches this regex")
  args = p.parse_args(argv)
  print(markdown_table(run_table(args.out_dir, args.rows)))


if __name__ == "__main__":
  main()
