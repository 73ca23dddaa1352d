r"""Full-size interop checks: random-initialised public architectures import and match.

Three steps, in two environments (nothing is downloaded: every model is built
from its config with random weights; the CLIP vocabulary is the one open_clip ships):

  # 1. The reference libraries write weights, inputs and outputs (torch environment):
  /work/venvs/torch/bin/python tools/check_interop_full.py reference --dir /tmp/full
  # 2. big_contrast imports each and compares (the project's environment); prints JSON:
  python tools/check_interop_full.py compare --dir /tmp/full
  # 3. OpenCLIP strict-loads an export of a run trained here and embeds the same inputs:
  python -m big_contrast.interop export --to openclip --workdir RUN --out /tmp/full/run.safetensors
  python tools/check_interop_full.py embed_run --dir /tmp/full --workdir RUN
  /work/venvs/torch/bin/python tools/check_interop_full.py openclip_run --dir /tmp/full

Sources: OpenCLIP `ViT-B-32`, timm `vit_small_patch14_dinov2` (518 px), Hugging
Face SigLIP base (`SiglipConfig()` defaults: B/16 at 224, 64 tokens, 32k vocabulary).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

TEXTS = ["a photo of a cat", "A diagram of the digit 7!", "two dogs &amp; a \u201cquote\u201d"]


def _images(size, n=2, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def reference(d: str, parts=("openclip", "dinov2", "siglip")) -> None:
  import open_clip  # noqa: PLC0415 — the reference environment only
  import sentencepiece as spm  # noqa: PLC0415
  import timm  # noqa: PLC0415
  import torch  # noqa: PLC0415
  import transformers  # noqa: PLC0415
  from safetensors.torch import save_file  # noqa: PLC0415

  os.makedirs(d, exist_ok=True)

  def pixels(images, mean, std):
    x = torch.from_numpy(images).float() / 255.0
    return ((x - torch.tensor(mean)) / torch.tensor(std)).permute(0, 3, 1, 2).contiguous()

  torch.manual_seed(0)
  if "openclip" in parts:
    _openclip(d, open_clip, torch, save_file, pixels)
  if "dinov2" in parts:
    _dinov2(d, timm, torch, save_file, pixels)
  if "siglip" in parts:
    _siglip(d, spm, transformers, torch, pixels)
  bpe = open_clip.tokenizer.default_bpe()
  versions = {m.__name__: m.__version__ for m in (torch, open_clip, timm, transformers)}
  with open(f"{d}/paths.json", "w") as f:
    json.dump({"bpe": bpe, "versions": versions}, f)


def _openclip(d, open_clip, torch, save_file, pixels):
  """OpenCLIP ViT-B-32 at its own random initialisation."""
  model = open_clip.create_model("ViT-B-32").eval()
  save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{d}/openclip.safetensors")
  tok = open_clip.get_tokenizer("ViT-B-32")
  images = _images(224)
  mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
  with torch.no_grad():
    zi = model.encode_image(pixels(images, mean, std), normalize=True).numpy()
    zt = model.encode_text(tok(TEXTS), normalize=True).numpy()
  np.savez(f"{d}/openclip_ref.npz", images=images, ids=tok(TEXTS).numpy(), image=zi, text=zt)


def _dinov2(d, timm, torch, save_file, pixels):
  """timm's DINOv2 ViT-S/14 at 518 px."""
  model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0).eval()
  save_file(dict(model.state_dict()), f"{d}/dinov2.safetensors")
  images = _images(518)
  cfg = model.pretrained_cfg
  with torch.no_grad():
    z = torch.nn.functional.normalize(model(pixels(images, cfg["mean"], cfg["std"])), dim=-1)
  np.savez(f"{d}/dinov2_ref.npz", images=images, image=z.numpy())


def _siglip(d, spm, transformers, torch, pixels):
  """Hugging Face SigLIP base (32k embedding table); an 8k SentencePiece model trained here."""
  os.makedirs(f"{d}/siglip", exist_ok=True)
  rng = np.random.default_rng(0)
  letters = list("abcdefghijklmnopqrstuvwxyz")
  words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(20000)]
  words += "a photo of cat diagram the digit two dogs quote".split()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(" ".join(rng.choice(words, 12)) for _ in range(20000)),
    model_prefix=f"{d}/siglip/spiece",
    vocab_size=8000,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    pad_piece="<pad>",
    eos_piece="</s>",
    unk_piece="<unk>",
    minloglevel=2,
  )
  model = transformers.SiglipModel(transformers.SiglipConfig()).eval()
  model.save_pretrained(f"{d}/siglip")
  tok = transformers.SiglipTokenizer(vocab_file=f"{d}/siglip/spiece.model")
  ids = tok(TEXTS, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
  images = _images(224)
  with torch.no_grad():
    o = model(input_ids=ids["input_ids"], pixel_values=pixels(images, (0.5,) * 3, (0.5,) * 3))
  np.savez(
    f"{d}/siglip_ref.npz",
    images=images,
    ids=ids["input_ids"].numpy(),
    image=o.image_embeds.numpy(),
    text=o.text_embeds.numpy(),
  )


def compare(d: str) -> None:
  import tempfile  # noqa: PLC0415

  import jax  # noqa: PLC0415

  from big_contrast import interop  # noqa: PLC0415 — the project's environment only
  from big_contrast.evaluate import load_encoder  # noqa: PLC0415

  paths = json.load(open(f"{d}/paths.json"))
  cases = {
    "openclip ViT-B-32": (
      "openclip",
      f"{d}/openclip.safetensors",
      "ViT-B-32",
      paths["bpe"],
      "openclip_ref",
    ),
    "timm vit_small_patch14_dinov2": (
      "timm",
      f"{d}/dinov2.safetensors",
      "vit_small_patch14_dinov2",
      None,
      "dinov2_ref",
    ),
    "hf SigLIP base": (
      "hf",
      f"{d}/siglip/model.safetensors",
      None,
      f"{d}/siglip/spiece.model",
      "siglip_ref",
    ),
  }
  results = {}
  for name, (source, weights, arch, tok, ref_name) in cases.items():
    out = tempfile.mkdtemp(dir=d) + "/run"
    interop.import_checkpoint(source, weights, out, arch=arch, tokenizer=tok)
    ref = np.load(f"{d}/{ref_name}.npz")
    with jax.default_matmul_precision("highest"):
      enc = load_encoder(out)
      r = {"image_max_abs": float(np.abs(enc.encode_image(ref["images"]) - ref["image"]).max())}
      if "text" in ref:
        r["ids_equal"] = bool(np.array_equal(enc.tokenize(TEXTS), ref["ids"]))
        r["text_max_abs"] = float(np.abs(enc.encode_text(TEXTS) - ref["text"]).max())
    results[name] = r
  print(json.dumps(results, indent=1))


def embed_run(d: str, workdir: str) -> None:
  """Our embeddings of fixed inputs from a run trained here (for `openclip_run` to compare)."""
  import jax  # noqa: PLC0415

  from big_contrast.evaluate import load_encoder  # noqa: PLC0415

  with jax.default_matmul_precision("highest"):
    enc = load_encoder(workdir)
    images = _images(enc.config.model.image.image_size, n=4, seed=1)
    np.savez(
      f"{d}/run_ours.npz",
      images=images,
      ids=enc.tokenize(TEXTS),
      image=enc.encode_image(images),
      text=enc.encode_text(TEXTS),
    )


def openclip_run(d: str, arch: str) -> None:
  import open_clip  # noqa: PLC0415
  import torch  # noqa: PLC0415
  from safetensors.torch import load_file  # noqa: PLC0415

  model = open_clip.create_model(arch).eval()
  missing_unexpected = model.load_state_dict(load_file(f"{d}/run.safetensors"), strict=True)
  ours = np.load(f"{d}/run_ours.npz")
  tok = open_clip.get_tokenizer(arch)
  x = torch.from_numpy(ours["images"]).float() / 255.0
  mean, std = (
    torch.tensor(open_clip.OPENAI_DATASET_MEAN),
    torch.tensor(open_clip.OPENAI_DATASET_STD),
  )
  x = ((x - mean) / std).permute(0, 3, 1, 2)
  with torch.no_grad():
    zi = model.encode_image(x, normalize=True).numpy()
    zt = model.encode_text(tok(TEXTS), normalize=True).numpy()
  print(
    json.dumps(
      {
        "strict_load": str(missing_unexpected),
        "ids_equal": bool(np.array_equal(tok(TEXTS).numpy(), ours["ids"])),
        "image_max_abs": float(np.abs(zi - ours["image"]).max()),
        "text_max_abs": float(np.abs(zt - ours["text"]).max()),
      },
      indent=1,
    )
  )


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("step", choices=["reference", "compare", "embed_run", "openclip_run"])
  p.add_argument("--dir", default="/tmp/full")
  p.add_argument("--workdir", help="embed_run: the run directory")
  p.add_argument("--arch", default="ViT-B-32", help="openclip_run: the OpenCLIP model name")
  p.add_argument("--parts", default="openclip,dinov2,siglip", help="reference: which models")
  a = p.parse_args()
  if a.step == "reference":
    reference(a.dir, a.parts.split(","))
  elif a.step == "compare":
    compare(a.dir)
  elif a.step == "embed_run":
    embed_run(a.dir, a.workdir)
  else:
    openclip_run(a.dir, a.arch)


if __name__ == "__main__":
  main()
