"""Convert an image folder tree (root/class_name/*.jpg) to a TFDS ArrayRecord dataset.

  python tools/convert_image_folder.py --root /data/pets --out /data/tfds/pets \
      --test_fraction 0.1 --seed 0 --num_workers 8

Writes OUT/dataset_info.json + sharded ArrayRecord files (image bytes unchanged,
`label` ClassLabel from the folder names, `index`) and OUT/conversion_report.json
listing skipped files; prints a JSON summary. Train with --config.data.name=OUT.
A killed run restarted with the same arguments resumes from its finished shards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from big_contrast.data import convert


def add_common_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--out", required=True, help="dataset directory to create")
  parser.add_argument("--name", default=None, help="TFDS name (default: from --out)")
  parser.add_argument(
    "--test_fraction",
    type=float,
    default=0.0,
    help="share of examples put in split 'test' (seeded hash of the key)",
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1))
  parser.add_argument(
    "--verify",
    default="decode",
    choices=["decode", "header", "none"],
    help="decode: full decode check; header: format only; none: trust",
  )
  parser.add_argument("--overwrite", action="store_true")


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, help="folder with one sub-folder per class")
  parser.add_argument(
    "--split_subdirs", action="store_true", help="root/<split>/<class>/... gives the splits"
  )
  parser.add_argument(
    "--shard_size", type=int, default=convert.DEFAULT_SHARD_SIZE, help="images per output shard"
  )
  add_common_flags(parser)
  args = parser.parse_args(argv)
  report = convert.convert_image_folder(
    args.root,
    args.out,
    test_fraction=args.test_fraction,
    seed=args.seed,
    split_subdirs=args.split_subdirs,
    name=args.name,
    shard_size=args.shard_size,
    num_workers=args.num_workers,
    verify=args.verify,
    overwrite=args.overwrite,
  )
  summary = convert.report_summary(report)
  print(json.dumps(summary, indent=1))
  return summary


if __name__ == "__main__":
  main()
