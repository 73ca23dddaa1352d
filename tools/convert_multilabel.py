"""Convert multi-label annotations (a list of label names per image) to TFDS ArrayRecord.

  python tools/convert_multilabel.py --manifest tags.jsonl --labels_key labels \
      --out /data/tfds/tags --test_fraction 0.1
  # CSV: labels as one string, separated by --label_sep (default ';'): "sky;tree"

Writes `image` (bytes unchanged), multi-hot `labels` int64 [C] (what the
pipeline reads as `labels`), `index`, optionally `caption` (--caption_key);
the class names go to OUT/metadata.json (`builder.info.metadata["label_names"]`).
--label_names FILE (one per line) fixes the vocabulary and its order; rows with
other names are skipped as `unknown_label`. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

_TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_TOOLS, os.path.dirname(_TOOLS)]  # Runnable without installing.
from convert_image_folder import add_common_flags  # noqa: E402

from big_contrast.data import convert  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--manifest", required=True, help=".jsonl / .csv / .tsv")
  parser.add_argument("--image_key", default="image_path")
  parser.add_argument("--labels_key", default="labels")
  parser.add_argument("--label_sep", default=";", help="separator of names in CSV cells")
  parser.add_argument("--label_names", default=None, help="file: one class name per line")
  parser.add_argument("--caption_key", default=None, help="also keep a caption column")
  parser.add_argument("--split_key", default=None, help="manifest column holding the split")
  parser.add_argument("--image_root", default=None)
  parser.add_argument("--shard_size", type=int, default=convert.DEFAULT_SHARD_SIZE)
  add_common_flags(parser)
  args = parser.parse_args(argv)
  names = None
  if args.label_names:
    with open(args.label_names, encoding="utf-8") as f:
      names = [line.strip() for line in f if line.strip()]
  report = convert.convert_manifest(
    args.manifest,
    args.out,
    image_key=args.image_key,
    caption_key=args.caption_key,
    labels_key=args.labels_key,
    label_names=names,
    label_sep=args.label_sep,
    split_key=args.split_key,
    image_root=args.image_root,
    shard_size=args.shard_size,
    name=args.name,
    seed=args.seed,
    test_fraction=args.test_fraction,
    num_workers=args.num_workers,
    verify=args.verify,
    overwrite=args.overwrite,
  )
  summary = convert.report_summary(report)
  print(json.dumps(summary, indent=1))
  return summary


if __name__ == "__main__":
  main()
