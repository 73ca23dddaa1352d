"""Train a SentencePiece tokenizer offline from captions; prints a JSON summary.

Captions come from one of:
  --input captions.txt          one caption per line
  --input pairs.jsonl           one JSON object per line (--key, default "caption")
  --tfds NAME_OR_DIR --split train   a TFDS dataset's caption feature (--key)

  python tools/train_tokenizer.py --tfds bc_digits --output /tmp/tok/digits --vocab_size 200
  then: --config.tokenizer=/tmp/tok/digits.model (or make_tokenizer(path)).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

from big_contrast.data.sources import load_source
from big_contrast.data.tokenizer import make_tokenizer, train_sentencepiece


def _captions_from_file(path: str, key: str) -> Iterator[str]:
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      if path.endswith(".jsonl"):
        try:
          yield str(json.loads(line)[key])
        except (json.JSONDecodeError, KeyError) as e:
          raise SystemExit(
            f"{path}:{line_no}: no {key!r} field ({e}); use --key to name the caption field."
          ) from e
      else:
        yield line


def _captions_from_tfds(name: str, split: str, data_dir: str | None, key: str) -> Iterator[str]:
  source = load_source(name, split, data_dir)
  for i in range(len(source)):
    caption = source[i][key]
    yield caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--input", help="a .txt (one caption per line) or .jsonl file")
  src.add_argument("--tfds", help="a bundled dataset name, TFDS name or dataset dir")
  parser.add_argument("--split", default="train")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--key", default="caption", help="caption field (jsonl / tfds)")
  parser.add_argument("--output", required=True, help="model prefix; writes PREFIX.model")
  parser.add_argument("--vocab_size", type=int, default=8000)
  parser.add_argument("--model_type", default="unigram", choices=["unigram", "bpe", "char", "word"])
  args = parser.parse_args(argv)

  if args.input:
    captions = list(_captions_from_file(args.input, args.key))
  else:
    captions = list(_captions_from_tfds(args.tfds, args.split, args.data_dir, args.key))
  if not captions:
    raise SystemExit("No captions found; nothing to train on.")
  path = train_sentencepiece(captions, args.output, args.vocab_size, args.model_type)
  tok = make_tokenizer(path)
  summary = {
    "model": path,
    "vocab_size": tok.vocab_size,
    "num_captions": len(captions),
    "example": {captions[0]: tok.encode(captions[0])},
  }
  print(json.dumps(summary))
  return summary


if __name__ == "__main__":
  main(sys.argv[1:])
