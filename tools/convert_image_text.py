"""Convert image-text pairs (JSONL/CSV manifest or WebDataset .tar shards) to TFDS ArrayRecord.

  # a manifest: one row per pair, image paths relative to --image_root (default: its folder)
  python tools/convert_image_text.py --manifest pairs.jsonl --out /data/tfds/pairs \
      --test_fraction 0.01
  # WebDataset-style shards: KEY.jpg + KEY.txt per sample
  python tools/convert_image_text.py --tars 'shards/train-*.tar' \
      --test_tars 'shards/val-*.tar' --out /data/tfds/pairs

Writes `image` (bytes unchanged), `caption`, `index` (manifest row, or
tar_number * 10**9 + sample) and OUT/conversion_report.json (missing files,
undecodable images, empty captions); prints a JSON summary.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

_TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_TOOLS, os.path.dirname(_TOOLS)]  # Runnable without installing.
from convert_image_folder import add_common_flags  # noqa: E402

from big_contrast.data import convert  # noqa: E402


def _expand(patterns: list[str]) -> list[str]:
  paths = []
  for pattern in patterns:
    matched = sorted(glob.glob(pattern))
    if not matched:
      raise SystemExit(f"No tar shard matches {pattern!r}.")
    paths.extend(matched)
  return paths


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--manifest", help=".jsonl / .csv / .tsv with image path + caption")
  src.add_argument("--tars", nargs="+", help=".tar shards or glob patterns (train)")
  parser.add_argument("--test_tars", nargs="*", default=[], help="tar shards for split 'test'")
  parser.add_argument("--image_key", default="image_path")
  parser.add_argument("--caption_key", default="caption")
  parser.add_argument("--caption_ext", default="txt", help="caption member extension (tars)")
  parser.add_argument("--split_key", default=None, help="manifest column holding the split")
  parser.add_argument("--image_root", default=None)
  parser.add_argument("--shard_size", type=int, default=convert.DEFAULT_SHARD_SIZE)
  add_common_flags(parser)
  args = parser.parse_args(argv)
  common = dict(
    name=args.name,
    seed=args.seed,
    test_fraction=args.test_fraction,
    num_workers=args.num_workers,
    verify=args.verify,
    overwrite=args.overwrite,
  )
  if args.manifest:
    report = convert.convert_manifest(
      args.manifest,
      args.out,
      image_key=args.image_key,
      caption_key=args.caption_key,
      split_key=args.split_key,
      image_root=args.image_root,
      shard_size=args.shard_size,
      **common,
    )
  else:
    report = convert.convert_webdataset(
      _expand(args.tars),
      args.out,
      test_tars=_expand(args.test_tars),
      caption_ext=args.caption_ext,
      **common,
    )
  summary = convert.report_summary(report)
  print(json.dumps(summary, indent=1))
  return summary


if __name__ == "__main__":
  main()
