r"""Writes the interop test fixtures by running the reference libraries on tiny random models.

Runs in a separate environment with PyTorch and the reference libraries (never
the project's own):

  python3 -m venv /work/venvs/torch && /work/venvs/torch/bin/pip install \
      torch==2.14.1 torchvision==0.29.1 open_clip_torch timm transformers safetensors sentencepiece
  /work/venvs/torch/bin/python tools/make_interop_fixtures.py --out tests/fixtures/interop

For each source it builds a tiny model from a config with random weights
(width 32, one or two blocks, 12-16 px images; nothing is downloaded), stores
the weights as the source stores them (float16, so the file is exact, and the
reference computes in float32 from the same values), its architecture file,
the inputs (uint8 images, captions) and the reference library's outputs:
token ids and L2-normalised image and text embeddings.

  openclip/    open_clip.CLIP (native ViT + text tower, GELU), OpenCLIP state dict
  hf_clip/     transformers.CLIPModel (QuickGELU), save_pretrained + tokenizer.json
  hf_siglip/   transformers.SiglipModel, save_pretrained + SiglipTokenizer's spiece.model
  big_vision/  a big_vision SigLIP .npz written by name (models/vit.py,
               proj/image_text/{two_towers,text_transformer}.py), loaded into the
               reference by OpenCLIP's own big_vision reader (open_clip.convert.
               load_big_vision_weights) with big_vision's tanh GELU
  timm/        timm VisionTransformer, DINOv2 style (LayerScale), also loaded at
               another resolution through timm's checkpoint_filter_fn
  timm_reg/    the same with 4 registers and no class-token position (`reg4` DINOv2)
  vocab/       a CLIP merges file cut to its first merges, a 128-piece SentencePiece model
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os

import numpy as np
import open_clip
import sentencepiece as spm
import timm
import torch
import transformers
from open_clip import convert as oc_convert
from open_clip import tokenizer as oc_tokenizer
from safetensors.torch import save_file
from timm.models import vision_transformer as timm_vit

TEXTS = [
  "a photo of a cat",
  "A PHOTO of the Digit 7!",
  "two dogs &amp; a \u201ccurly\u201d quote's end",
  "caf\u00e9 na\u00efve r\u00e9sum\u00e9, 123 and 4567",
  "a very long caption that goes on and on past the end of the context window",
]
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
N_MERGES = 128


def _images(size: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (3, size, size, 3), dtype=np.uint8)


def _pixels(images: np.ndarray, mean, std) -> torch.Tensor:
  x = torch.from_numpy(images).float() / 255.0
  x = (x - torch.tensor(mean)) / torch.tensor(std)
  return x.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def _randomise(model: torch.nn.Module, seed: int, keep=("logit_scale", "logit_bias")) -> None:
  """Every parameter random (LayerNorm scales too, so a swapped name changes the output),
  then rounded to float16 so the stored file holds exactly the values computed with."""
  gen = torch.Generator().manual_seed(seed)
  for name, p in model.named_parameters():
    if name.split(".")[-1] not in keep:
      p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    p.copy_(p.half().float())


def _half(sd: dict) -> dict:
  return {k: v.detach().half().contiguous() for k, v in sd.items()}


def _save_reference(path: str, **arrays) -> None:
  np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})


def _np(t: torch.Tensor) -> np.ndarray:
  return t.detach().float().numpy()


def clip_vocab(out: str) -> str:
  """A merges file with OpenCLIP's header and its first N_MERGES merges (no trailing newline)."""
  with gzip.open(oc_tokenizer.default_bpe(), "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")[: 1 + N_MERGES]
  path = os.path.join(out, "vocab", "bpe_tiny.txt.gz")
  with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
    f.write("\n".join(lines).encode("utf-8"))
  return path


def sentencepiece_vocab(out: str) -> str:
  """A 128-piece unigram model with SigLIP's ids: 0 = <pad>, 1 = </s>, 2 = <unk>."""
  words = "a photo of the cat dog digit two quote end long caption goes on past context window"
  words = words.split() + ["cafe", "naive", "resume", "seven", "picture", "small", "number"]
  rng = np.random.default_rng(0)
  letters = list("abcdefghijklmnopqrstuvwxyz")
  words += ["".join(rng.choice(letters, rng.integers(2, 7))) for _ in range(300)]
  sentences = [" ".join(rng.choice(words, rng.integers(3, 9))) for _ in range(3000)]
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(sentences),
    model_writer=buf,
    vocab_size=128,
    model_type="unigram",
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    pad_piece="<pad>",
    eos_piece="</s>",
    unk_piece="<unk>",
    character_coverage=1.0,
    # No NFKC table: it would make the model file 240 KB; the ids' rules are the same.
    normalization_rule_name="identity",
    minloglevel=2,
  )
  path = os.path.join(out, "vocab", "siglip_tiny.model")
  with open(path, "wb") as f:
    f.write(buf.getvalue())
  return path


def make_openclip(out: str, bpe: str) -> None:
  d = os.path.join(out, "openclip")
  os.makedirs(d, exist_ok=True)
  tok = oc_tokenizer.SimpleTokenizer(bpe_path=bpe)
  arch = dict(
    embed_dim=24,
    vision_cfg=dict(image_size=12, layers=1, width=32, head_width=16, mlp_ratio=2.0, patch_size=4),
    text_cfg=dict(
      context_length=16, vocab_size=tok.vocab_size, width=32, heads=2, layers=1, mlp_ratio=2.0
    ),
  )
  with open(os.path.join(d, "arch.json"), "w") as f:
    json.dump(arch, f, indent=1)
  model = open_clip.model.CLIP(**arch).eval()
  _randomise(model, 1)
  save_file(_half(model.state_dict()), os.path.join(d, "open_clip_model.safetensors"))
  images = _images(12, 1)
  ids = tok(TEXTS, context_length=16)
  with torch.no_grad():
    zimg = model.encode_image(_pixels(images, OPENAI_MEAN, OPENAI_STD), normalize=True)
    ztxt = model.encode_text(ids, normalize=True)
  _save_reference(
    os.path.join(d, "reference.npz"),
    images=images,
    ids=ids.numpy(),
    image=_np(zimg),
    text=_np(ztxt),
  )


def _hf_clip_tokenizer(d: str, bpe: str) -> transformers.CLIPTokenizer:
  """Hugging Face's CLIPTokenizer over the same merges (its specials named <|...|>)."""
  with gzip.open(bpe, "rt", encoding="utf-8") as f:
    merges = f.read().split("\n")[1 : 1 + N_MERGES]
  base = list(oc_tokenizer.bytes_to_unicode().values())
  tokens = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges]
  tokens += ["<|startoftext|>", "<|endoftext|>"]
  pairs = [tuple(m.split()) for m in merges]
  tok = transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=pairs)
  tok.save_pretrained(d)
  for extra in ("special_tokens_map.json", "vocab.json", "merges.txt"):
    if os.path.exists(os.path.join(d, extra)):
      os.remove(os.path.join(d, extra))
  return transformers.CLIPTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"))


def make_hf_clip(out: str, bpe: str) -> None:
  d = os.path.join(out, "hf_clip")
  os.makedirs(d, exist_ok=True)
  tok = _hf_clip_tokenizer(d, bpe)
  tok = transformers.AutoTokenizer.from_pretrained(d)
  vocab = len(tok)
  config = transformers.CLIPConfig(
    text_config=dict(
      vocab_size=vocab,
      hidden_size=32,
      intermediate_size=64,
      num_hidden_layers=1,
      num_attention_heads=2,
      max_position_embeddings=16,
      bos_token_id=vocab - 2,
      eos_token_id=vocab - 1,
      pad_token_id=vocab - 1,
    ),
    vision_config=dict(
      hidden_size=32,
      intermediate_size=64,
      num_hidden_layers=1,
      num_attention_heads=2,
      image_size=12,
      patch_size=4,
    ),
    projection_dim=24,
  )
  model = transformers.CLIPModel(config).eval()
  _randomise(model, 2)
  model.half().save_pretrained(d)
  model.float()
  images = _images(12, 2)
  enc = tok(TEXTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
  with torch.no_grad():
    o = model(
      input_ids=enc["input_ids"],
      attention_mask=enc["attention_mask"],
      pixel_values=_pixels(images, OPENAI_MEAN, OPENAI_STD),
    )
  _save_reference(
    os.path.join(d, "reference.npz"),
    images=images,
    ids=enc["input_ids"].numpy(),
    image=_np(o.image_embeds),
    text=_np(o.text_embeds),
  )


def make_hf_siglip(out: str, spiece: str) -> None:
  d = os.path.join(out, "hf_siglip")
  os.makedirs(d, exist_ok=True)
  tok = transformers.SiglipTokenizer(vocab_file=spiece, model_max_length=12)
  tok.save_pretrained(d)
  for extra in ("special_tokens_map.json", "added_tokens.json"):
    if os.path.exists(os.path.join(d, extra)):
      os.remove(os.path.join(d, extra))
  tok = transformers.SiglipTokenizer.from_pretrained(d)
  config = transformers.SiglipConfig(
    text_config=dict(
      vocab_size=128,
      hidden_size=32,
      intermediate_size=64,
      num_hidden_layers=1,
      num_attention_heads=2,
      max_position_embeddings=12,
    ),
    vision_config=dict(
      hidden_size=32,
      intermediate_size=64,
      num_hidden_layers=1,
      num_attention_heads=2,
      image_size=12,
      patch_size=4,
    ),
  )
  model = transformers.SiglipModel(config).eval()
  _randomise(model, 3)
  model.half().save_pretrained(d)
  model.float()
  images = _images(12, 3)
  ids = tok(TEXTS, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
  with torch.no_grad():
    o = model(input_ids=ids["input_ids"], pixel_values=_pixels(images, (0.5,) * 3, (0.5,) * 3))
  _save_reference(
    os.path.join(d, "reference.npz"),
    images=images,
    ids=ids["input_ids"].numpy(),
    image=_np(o.image_embeds),
    text=_np(o.text_embeds),
  )
  # The tests read the tokenizer from vocab/ (one copy of the model file).
  for extra in ("spiece.model", "tokenizer_config.json"):
    os.remove(os.path.join(d, extra))


def _big_vision_tree(rng, *, width, depth, mlp, heads, patch, grid, vocab, length) -> dict:
  """A SigLIP two_towers parameter tree by big_vision's names and shapes (random, fp16-exact)."""

  def r(*shape):
    return (rng.standard_normal(shape) * 0.3).astype(np.float16).astype(np.float32)

  dh = width // heads

  def block(prefix):
    out = {}
    for ln in ("LayerNorm_0", "LayerNorm_1"):
      out[f"{prefix}/{ln}/scale"], out[f"{prefix}/{ln}/bias"] = r(width), r(width)
    for p in ("query", "key", "value"):
      out[f"{prefix}/MultiHeadDotProductAttention_0/{p}/kernel"] = r(width, heads, dh)
      out[f"{prefix}/MultiHeadDotProductAttention_0/{p}/bias"] = r(heads, dh)
    out[f"{prefix}/MultiHeadDotProductAttention_0/out/kernel"] = r(heads, dh, width)
    out[f"{prefix}/MultiHeadDotProductAttention_0/out/bias"] = r(width)
    out[f"{prefix}/MlpBlock_0/Dense_0/kernel"], out[f"{prefix}/MlpBlock_0/Dense_0/bias"] = (
      r(width, mlp),
      r(mlp),
    )
    out[f"{prefix}/MlpBlock_0/Dense_1/kernel"], out[f"{prefix}/MlpBlock_0/Dense_1/bias"] = (
      r(mlp, width),
      r(width),
    )
    return out

  t = {"img/embedding/kernel": r(patch, patch, 3, width), "img/embedding/bias": r(width)}
  t["img/pos_embedding"] = r(1, grid * grid, width)
  for i in range(depth):
    t.update(block(f"img/Transformer/encoderblock_{i}"))
  t["img/Transformer/encoder_norm/scale"], t["img/Transformer/encoder_norm/bias"] = (
    r(width),
    r(width),
  )
  # The MAP head: attention, one LayerNorm (LayerNorm_0) and the MLP.
  t.update({k: v for k, v in block("img/MAPHead_0").items() if "LayerNorm_1" not in k})
  t["img/MAPHead_0/probe"] = r(1, 1, width)
  t["txt/Embed_0/embedding"] = r(vocab, width)
  t["txt/pos_embedding"] = r(1, length, width)
  for i in range(depth):
    t.update(block(f"txt/Encoder_0/encoderblock_{i}"))
  t["txt/Encoder_0/encoder_norm/scale"], t["txt/Encoder_0/encoder_norm/bias"] = r(width), r(width)
  t["txt/head/kernel"], t["txt/head/bias"] = r(width, width), r(width)
  t["t"] = np.log(np.asarray([10.0], np.float32))
  t["b"] = np.asarray([-10.0], np.float32)
  return t


def _big_vision_tokens(spiece: str, texts, length: int) -> np.ndarray:
  """big_vision's `tokenize(max_len, eos='sticky', pad_value=1)`: lower case, EOS kept last."""
  sp = spm.SentencePieceProcessor(model_file=spiece)
  out = np.full((len(texts), length), sp.eos_id(), np.int32)
  for i, text in enumerate(texts):
    ids = sp.encode(text.lower())[: length - 1] + [sp.eos_id()]
    out[i, : len(ids)] = ids
  return out


def make_big_vision(out: str, spiece: str) -> None:
  d = os.path.join(out, "big_vision")
  os.makedirs(d, exist_ok=True)
  dims = dict(width=32, depth=1, mlp=64, heads=2, patch=4, grid=3, vocab=128, length=12)
  tree = _big_vision_tree(np.random.default_rng(4), **dims)
  np.savez(
    os.path.join(d, "siglip.npz"),
    **{f"params/{k}": (v if k in ("t", "b") else v.astype(np.float16)) for k, v in tree.items()},
  )
  arch = dict(
    image=dict(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=[4, 4], pool_type="map"),
    text=dict(width=32, depth=1, mlp_dim=64, num_heads=2, vocab_size=128),
    out_dim=[None, 32],
    bias_init=-10.0,
    temperature_init=10.0,
  )
  with open(os.path.join(d, "arch.json"), "w") as f:
    json.dump(arch, f, indent=1)
  # The reference: OpenCLIP's SigLIP layout (a timm MAP-pooled ViT, its text tower
  # bidirectional, 'last' pooling, a biased head), with big_vision's tanh GELU and
  # LayerNorm epsilon 1e-6, loaded by OpenCLIP's big_vision reader.
  trunk = timm_vit.VisionTransformer(
    img_size=12,
    patch_size=4,
    embed_dim=32,
    depth=1,
    num_heads=2,
    mlp_ratio=2.0,
    class_token=False,
    global_pool="map",
    num_classes=0,
    act_layer="gelu_tanh",
  )
  model = open_clip.model.CustomTextCLIP(
    embed_dim=32,
    vision_cfg=dict(
      image_size=12,
      timm_model_name="vit_base_patch16_siglip_224",
      timm_pool="map",
      timm_proj="none",
    ),
    text_cfg=dict(
      context_length=12,
      vocab_size=128,
      width=32,
      heads=2,
      layers=1,
      mlp_ratio=2.0,
      no_causal_mask=True,
      proj_bias=True,
      pool_type="last",
      norm_kwargs=dict(eps=1e-6),
      act_kwargs=dict(approximate="tanh"),
    ),
    init_logit_bias=-10.0,
  ).eval()
  model.visual.trunk = trunk.eval()
  with torch.no_grad():
    oc_convert.load_big_vision_weights(model, os.path.join(d, "siglip.npz"))
  images = _images(12, 4)
  ids = _big_vision_tokens(spiece, TEXTS, 12)
  with torch.no_grad():
    zimg = model.encode_image(_pixels(images, (0.5,) * 3, (0.5,) * 3), normalize=True)
    ztxt = model.encode_text(torch.from_numpy(ids).long(), normalize=True)
  _save_reference(
    os.path.join(d, "reference.npz"), images=images, ids=ids, image=_np(zimg), text=_np(ztxt)
  )


def make_timm(out: str, name: str, **kwargs) -> None:
  d = os.path.join(out, name)
  os.makedirs(d, exist_ok=True)
  arch = dict(patch_size=4, embed_dim=32, num_heads=2, mlp_ratio=2.0, init_values=1e-5, **kwargs)
  model = timm_vit.VisionTransformer(img_size=16, num_classes=0, **arch).eval()
  _randomise(model, 5)
  sd = model.state_dict()
  save_file(_half(sd), os.path.join(d, "model.safetensors"))
  with open(os.path.join(d, "arch.json"), "w") as f:
    json.dump(dict(arch, img_size=16, mean=IMAGENET_MEAN, std=IMAGENET_STD), f, indent=1)
  images = _images(16, 5)
  with torch.no_grad():
    z = torch.nn.functional.normalize(model(_pixels(images, IMAGENET_MEAN, IMAGENET_STD)), dim=-1)
  # The same weights at 12 px: timm resamples pos_embed while loading.
  small = timm_vit.VisionTransformer(img_size=12, num_classes=0, **arch).eval()
  small.load_state_dict(timm_vit.checkpoint_filter_fn(sd, small))
  images12 = _images(12, 6)
  with torch.no_grad():
    z12 = torch.nn.functional.normalize(
      small(_pixels(images12, IMAGENET_MEAN, IMAGENET_STD)), dim=-1
    )
  _save_reference(
    os.path.join(d, "reference.npz"),
    images=images,
    image=_np(z),
    images12=images12,
    image12=_np(z12),
  )


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="tests/fixtures/interop")
  args = p.parse_args()
  torch.manual_seed(0)
  os.makedirs(os.path.join(args.out, "vocab"), exist_ok=True)
  with open(os.path.join(args.out, "texts.json"), "w") as f:
    json.dump(TEXTS, f, indent=1, ensure_ascii=False)
  bpe = clip_vocab(args.out)
  spiece = sentencepiece_vocab(args.out)
  make_openclip(args.out, bpe)
  make_hf_clip(args.out, bpe)
  make_hf_siglip(args.out, spiece)
  make_big_vision(args.out, spiece)
  make_timm(args.out, "timm", depth=2)
  make_timm(args.out, "timm_reg", depth=1, reg_tokens=4, no_embed_class=True)
  versions = {m.__name__: m.__version__ for m in (torch, open_clip, timm, transformers)}
  with open(os.path.join(args.out, "versions.json"), "w") as f:
    json.dump(versions, f, indent=1)
  total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args.out) for f in fs)
  print(f"wrote {args.out}: {total / 1024:.0f} KiB; {versions}")


if __name__ == "__main__":
  main()
