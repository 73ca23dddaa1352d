r"""Command line: import a public checkpoint as a run directory, or export a run.

  python -m big_contrast.interop import --from {openclip,timm,hf,big_vision} --weights FILE \
      [--arch NAME] [--tokenizer FILE] [--image_size N] --out DIR
  python -m big_contrast.interop export --to {openclip,timm,hf,big_vision} --workdir DIR \
      --out FILE [--arch NAME] [--step N]

`--arch` takes the source's own model name (`ViT-B-32`, `vit_small_patch14_dinov2`,
`SigLIP B/16 224`) or a file describing it (an OpenCLIP model-config JSON, timm
arguments as JSON, a Hugging Face config.json, a big_vision model config JSON).
"""

from __future__ import annotations

import argparse
import sys

from big_contrast.interop import convert


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m big_contrast.interop", description=__doc__.split("\n")[0]
  )
  sub = p.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("import", help="a public checkpoint → a big_contrast run directory")
  imp.add_argument("--from", dest="source", required=True, choices=sorted(convert.SOURCES))
  imp.add_argument("--weights", required=True, help=".safetensors, .npz, or .pt/.bin (torch)")
  imp.add_argument("--arch", help="the source's model name, or a file describing it")
  imp.add_argument("--tokenizer", help="the source's vocabulary file (text towers)")
  imp.add_argument("--image_size", type=int, help="load at this resolution (default: the arch's)")
  imp.add_argument("--out", required=True, help="the run directory to write (new or empty)")
  exp = sub.add_parser("export", help="a big_contrast run → a public checkpoint file")
  exp.add_argument("--to", required=True, choices=sorted(convert.SOURCES))
  exp.add_argument("--workdir", required=True, help="the run directory")
  exp.add_argument("--out", required=True, help="the file to write")
  exp.add_argument("--arch", help="the target's model name or file (OpenCLIP: read off the run)")
  exp.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
  return p


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == "import":
      config = convert.import_checkpoint(
        args.source,
        args.weights,
        args.out,
        arch=args.arch,
        tokenizer=args.tokenizer,
        image_size=args.image_size,
      )
      tok = config.text.tokenizer if "text" in config else None
      print(f"wrote {args.out}: a {config.task} run at step 0 (tokenizer: {tok})")
    else:
      spec = convert.export_checkpoint(
        args.workdir, args.to, args.out, arch=args.arch, step=args.step
      )
      print(f"wrote {args.out}: {args.to} layout of {spec.get('name', 'the run')}")
  except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
