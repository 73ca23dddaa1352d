"""big_vision SigLIP `.npz` checkpoints (`models/proj/image_text/two_towers.py`) ↔ our model.

Architecture: `--arch` is one of the released SigLIP names in `ARCHS` (`SigLIP
B/16 224`, ...: big_vision's `VANITY_NAMES`, with the model configs of its
SigLIP demo) or the path of a JSON of big_vision's `config.model` for
`two_towers` (`image`: `vit` keyword arguments, `text`: `text_transformer`
keyword arguments, `out_dim`, `bias_init`). The image size and text length
are read off the position embeddings.

Names are big_vision's Flax names, '/'-joined as its `.npz` files store them
(an optional leading `params/`): `img/embedding`, `img/pos_embedding`,
`img/cls` (pool_type 'tok'), `img/Transformer/encoderblock_{i}/{LayerNorm_0,
MultiHeadDotProductAttention_0/{query,key,value,out}, LayerNorm_1,
MlpBlock_0/{Dense_0,Dense_1}}`, `img/Transformer/encoder_norm`,
`img/MAPHead_0/{probe, MultiHeadDotProductAttention_0, LayerNorm_0, MlpBlock_0}`,
`img/head` (when `out_dim[0]` is set), `txt/Embed_0`, `txt/pos_embedding`,
`txt/Encoder_0/encoderblock_{i}/...`, `txt/Encoder_0/encoder_norm`, `txt/head`,
`t`, `b`. Scanned checkpoints (one stacked `encoderblock`) are unstacked first.
Exports write the unscanned layout.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import scipy.ndimage

from big_contrast.interop import common
from big_contrast.interop import rules as R

# big_vision models/vit.py `decode_variant`: (width, depth, mlp_dim, num_heads).
VARIANTS = {
  "mu": (32, 1, 128, 2),
  "Ti": (192, 12, 768, 3),
  "S": (384, 12, 1536, 6),
  "M": (512, 12, 2048, 8),
  "B": (768, 12, 3072, 12),
  "L": (1024, 24, 4096, 16),
  "So400m": (1152, 27, 4304, 16),
  "H": (1280, 32, 5120, 16),
  "g": (1408, 40, 6144, 16),
  "g-opt": (1536, 40, 6144, 16),
  "G": (1664, 48, 8192, 16),
  "e": (1792, 56, 15360, 16),
}


def _siglip(image: str, text: str, vocab: int = 32_000) -> dict:
  embed = VARIANTS[text][0]
  return dict(
    image=dict(variant=image, pool_type="map"),
    text=dict(variant=text, vocab_size=vocab),
    out_dim=[None, embed],
    bias_init=-10.0,
    temperature_init=10.0,
  )


# The released SigLIP checkpoints (big_vision's SigLIP demo: image variant, text variant).
ARCHS: dict[str, dict[str, Any]] = {
  "SigLIP B/16 224": _siglip("B/16", "B"),
  "SigLIP B/16 256": _siglip("B/16", "B"),
  "SigLIP B/16 384": _siglip("B/16", "B"),
  "SigLIP B/16 512": _siglip("B/16", "B"),
  "SigLIP L/16 256": _siglip("L/16", "L"),
  "SigLIP L/16 384": _siglip("L/16", "L"),
  "SigLIP So400m/14 224": _siglip("So400m/14", "So400m"),
  "SigLIP So400m/14 384": _siglip("So400m/14", "So400m"),
  "SigLIP B/16-i18n 256": _siglip("B/16", "B", 250_000),
}


def architecture(arch: str | None, weights: str | None = None) -> dict[str, Any]:
  if arch is None:
    raise ValueError(f"--arch is needed for big_vision weights: one of {sorted(ARCHS)} or a JSON")
  if arch in ARCHS:
    return dict(ARCHS[arch], name=arch)
  if arch.endswith(".json") or os.path.isfile(arch):
    return dict(common.read_json(arch, "big_vision two_towers model config"), name=arch)
  raise ValueError(f"--arch {arch!r}: not a SigLIP name we know ({sorted(ARCHS)}) nor a JSON")


def _decode(cfg: dict, where: str) -> dict:
  """big_vision `variant` + explicit keys → (width, depth, mlp_dim, num_heads, patch)."""
  cfg = dict(cfg)
  out = {}
  variant = cfg.pop("variant", None)
  if variant:
    size, _, patch = variant.partition("/")
    if size not in VARIANTS:
      raise ValueError(f"{where}.variant={variant!r}: unknown size {size!r}")
    out = dict(zip(("width", "depth", "mlp_dim", "num_heads"), VARIANTS[size]))
    if patch:
      out["patch_size"] = (int(patch), int(patch))
  out.update(cfg)
  return out


def _dims(arch: dict, source: dict | None = None) -> tuple[dict, dict]:
  image = _decode(arch.get("image") or {}, "image")
  text = _decode(arch.get("text") or {}, "text")
  common.unsupported(image, dict(pool_type=("map", "tok", "gap"), posemb=("learn",)), "image")
  common.unsupported(image, dict(rep_size=(False, 0), scan=(False, True)), "image")
  common.unsupported(text, dict(pool_type=("last",), scan=(False, True)), "text")
  if arch.get("image_model", "vit") != "vit":
    raise ValueError(f"image_model={arch['image_model']!r}: only 'vit' is supported")
  if (
    arch.get("text_model", "proj.image_text.text_transformer") != "proj.image_text.text_transformer"
  ):
    raise ValueError(f"text_model={arch['text_model']!r}: only the text_transformer is supported")
  out_dim = arch.get("out_dim", 128)
  out_dim = list(out_dim) if isinstance(out_dim, (list, tuple)) else [out_dim, out_dim]
  image.setdefault("width", 768)
  image.setdefault("depth", 12)
  image.setdefault("num_heads", 12)
  image.setdefault("mlp_dim", 4 * image["width"])
  image.setdefault("patch_size", (16, 16))
  text.setdefault("width", 512)
  text.setdefault("depth", 12)
  text.setdefault("num_heads", 8)
  text.setdefault("mlp_dim", 2048)
  text.setdefault("vocab_size", 32_000)
  image["out_dim"], text["out_dim"] = out_dim
  return image, text


def _sizes(arch: dict, source: dict) -> tuple[int, int]:
  """(image size, text length) read off the position embeddings."""
  image, _ = _dims(arch)
  n = source["img/pos_embedding"].shape[1]
  grid = int(round(np.sqrt(n)))
  return grid * image["patch_size"][0], source["txt/pos_embedding"].shape[1]


def config(
  arch: dict,
  *,
  image_size: int | None = None,
  tokenizer: str | None = None,
  source: dict | None = None,
):
  if source is None:
    raise ValueError("big_vision: the image size and text length are read from the weights")
  image, text = _dims(arch)
  size, length = _sizes(arch, source)
  embed = text["out_dim"]
  if image["out_dim"] is None and embed != image["width"]:
    raise ValueError(
      f"out_dim={[image['out_dim'], embed]}: without an image head the text out_dim must be the "
      f"image width {image['width']}"
    )
  pool = {"map": "map", "tok": "cls", "gap": "gap"}[image.get("pool_type", "gap")]
  img = dict(
    image_size=image_size or size,
    patch=image["patch_size"][0],
    width=image["width"],
    depth=image["depth"],
    heads=image["num_heads"],
    mlp_dim=image["mlp_dim"],
    pool=pool,
  )
  txt = dict(
    width=text["width"],
    depth=text["depth"],
    heads=text["num_heads"],
    mlp_dim=text["mlp_dim"],
    vocab_size=text["vocab_size"],
    causal=False,
    pool="last",
    mask_pad=False,
  )
  t_init = float(arch.get("temperature_init", 1.0))
  head = dict(
    embed_dim=embed,
    temperature_init=1.0 / t_init,
    min_temperature=None,
    bias_init=arch.get("bias_init"),
    image_proj=image["out_dim"] is not None,
    image_proj_bias=True if image["out_dim"] is not None else None,
    text_proj_bias=True,
  )
  loss = "siglip" if head["bias_init"] is not None else "clip"
  return common.image_text_config(
    image=img, text=txt, head=head, max_len=length, tokenizer=tokenizer, loss=loss
  )


def _block(src: str, ours: str) -> list[R.Rule]:
  out = [R.same(f"{src}/LayerNorm_0/{n}", f"{ours}/ln1/{n}") for n in ("scale", "bias")] + [
    R.same(f"{src}/LayerNorm_1/{n}", f"{ours}/ln2/{n}") for n in ("scale", "bias")
  ]
  return out + _attention_mlp(src, ours, "attn")


def _attention_mlp(src: str, ours: str, attn: str) -> list[R.Rule]:
  out = []
  for proj in ("query", "key", "value", "out"):
    for n in ("kernel", "bias"):
      out.append(
        R.same(f"{src}/MultiHeadDotProductAttention_0/{proj}/{n}", f"{ours}/{attn}/{proj}/{n}")
      )
  for i in (0, 1):
    for n in ("kernel", "bias"):
      out.append(R.same(f"{src}/MlpBlock_0/Dense_{i}/{n}", f"{ours}/mlp/fc{i + 1}/{n}"))
  return out


def rules(arch: dict, source: dict | None = None) -> list[R.Rule]:
  image, text = _dims(arch)
  out = [R.same(f"img/embedding/{n}", f"image/embed/{n}") for n in ("kernel", "bias")]
  out += [R.same("img/pos_embedding", "image/pos")]
  if image.get("pool_type", "gap") == "tok":
    out += [R.same("img/cls", "image/cls")]
  for i in range(image["depth"]):
    out += _block(f"img/Transformer/encoderblock_{i}", f"image/encoder/blocks/{i}")
  out += [
    R.same(f"img/Transformer/encoder_norm/{n}", f"image/encoder/ln/{n}") for n in ("scale", "bias")
  ]
  if image.get("pool_type", "gap") == "map":
    out += [R.same("img/MAPHead_0/probe", "image/map_head/probe")]
    out += [
      R.same(f"img/MAPHead_0/LayerNorm_0/{n}", f"image/map_head/ln/{n}") for n in ("scale", "bias")
    ]
    out += _attention_mlp("img/MAPHead_0", "image/map_head", "attn")
  if image["out_dim"] is not None:
    out += [R.same(f"img/head/{n}", f"image_proj/{n}") for n in ("kernel", "bias")]
  out += [
    R.same("txt/Embed_0/embedding", "text/tok/embedding"),
    R.same("txt/pos_embedding", "text/pos"),
  ]
  for i in range(text["depth"]):
    out += _block(f"txt/Encoder_0/encoderblock_{i}", f"text/encoder/blocks/{i}")
  out += [
    R.same(f"txt/Encoder_0/encoder_norm/{n}", f"text/encoder/ln/{n}") for n in ("scale", "bias")
  ]
  out += [R.same(f"txt/head/{n}", f"text_proj/{n}") for n in ("kernel", "bias")]
  out += [R.negated("t", "log_temperature", (1,))]
  if arch.get("bias_init") is not None:
    out += [R.reshaped("b", "bias", (), (1,))]
  return out


IGNORED = ()

_SCANNED = re.compile(r"(img/Transformer|txt/Encoder_0)/encoderblock/(.*)")


def prepare(source: dict) -> dict:
  """big_vision's loading fix-ups: drop a `params/` prefix, unstack scanned encoder blocks."""
  if source and all(k.startswith("params/") for k in source):
    source = {k[len("params/") :]: v for k, v in source.items()}
  out = {}
  for name, value in source.items():
    m = _SCANNED.fullmatch(name)
    if m:
      for i, layer in enumerate(np.asarray(value)):
        out[f"{m.group(1)}/encoderblock_{i}/{m.group(2)}"] = layer
    else:
      out[name] = value
  return out


def resample(source: dict, arch: dict, image_size: int) -> dict:
  """big_vision's `resample_posemb`: the grid zoomed with scipy's order-1 spline."""
  image, _ = _dims(arch)
  old = np.asarray(source["img/pos_embedding"], np.float32)
  g_old = int(round(np.sqrt(old.shape[1])))
  g_new = image_size // image["patch_size"][0]
  if g_old == g_new:
    return source
  grid = scipy.ndimage.zoom(
    old.reshape(g_old, g_old, -1), (g_new / g_old, g_new / g_old, 1), order=1
  )
  return {**source, "img/pos_embedding": grid.reshape(1, g_new * g_new, -1)}
