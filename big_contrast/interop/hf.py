"""Hugging Face `CLIPModel` and `SiglipModel` checkpoints ↔ our two-tower model.

Architecture: the model's `config.json` (`--arch PATH`, default the
`config.json` beside the weights), read with the defaults of transformers'
`CLIPConfig` / `SiglipConfig` for the keys a saved config leaves out.

Names are `transformers`' own: `vision_model.embeddings.{patch_embedding,
class_embedding, position_embedding}`, `vision_model.pre_layrnorm` (CLIP),
`vision_model.encoder.layers.{i}.{layer_norm1, self_attn.{q,k,v,out}_proj,
layer_norm2, mlp.fc1, mlp.fc2}`, `vision_model.post_layernorm`,
`vision_model.head` (SigLIP's attention-pooling head), `visual_projection`
(CLIP), `text_model.{embeddings, encoder, final_layer_norm}`, `text_projection`
(CLIP) or `text_model.head` (SigLIP), `logit_scale`, `logit_bias` (SigLIP).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from big_contrast.interop import common
from big_contrast.interop import rules as R
from big_contrast.models import layers

# transformers' defaults for the keys `config.json` may omit (configuration_clip.py,
# configuration_siglip.py).
_DEFAULTS = {
  "clip": dict(
    text=dict(
      vocab_size=49408,
      hidden_size=512,
      intermediate_size=2048,
      num_hidden_layers=12,
      num_attention_heads=8,
      max_position_embeddings=77,
      hidden_act="quick_gelu",
      layer_norm_eps=1e-5,
      eos_token_id=49407,
    ),
    vision=dict(
      hidden_size=768,
      intermediate_size=3072,
      num_hidden_layers=12,
      num_attention_heads=12,
      num_channels=3,
      image_size=224,
      patch_size=32,
      hidden_act="quick_gelu",
      layer_norm_eps=1e-5,
    ),
    top=dict(projection_dim=512, logit_scale_init_value=2.6592),
  ),
  "siglip": dict(
    text=dict(
      vocab_size=32000,
      hidden_size=768,
      intermediate_size=3072,
      num_hidden_layers=12,
      num_attention_heads=12,
      max_position_embeddings=64,
      hidden_act="gelu_pytorch_tanh",
      layer_norm_eps=1e-6,
      projection_size=None,
    ),
    vision=dict(
      hidden_size=768,
      intermediate_size=3072,
      num_hidden_layers=12,
      num_attention_heads=12,
      num_channels=3,
      image_size=224,
      patch_size=16,
      hidden_act="gelu_pytorch_tanh",
      layer_norm_eps=1e-6,
      vision_use_head=True,
    ),
    top=dict(),
  ),
}
_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu_exact", "gelu_pytorch_tanh": "gelu_tanh"}
_ACTS["gelu_new"] = "gelu_tanh"


def architecture(arch: str | None, weights: str | None = None) -> dict[str, Any]:
  """`config.json` (given, or beside the weights) with transformers' defaults filled in."""
  if arch is None:
    if weights is None:
      raise ValueError("--arch: the path of the model's config.json")
    arch = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.json")
  cfg = common.read_json(arch, "Hugging Face config.json")
  kind = cfg.get("model_type")
  if kind not in _DEFAULTS:
    raise ValueError(f"{arch}: model_type {kind!r}; supported: {sorted(_DEFAULTS)}")
  d = _DEFAULTS[kind]
  text = {**d["text"], **(cfg.get("text_config") or {})}
  vision = {**d["vision"], **(cfg.get("vision_config") or {})}
  for where, part in (("text_config", text), ("vision_config", vision)):
    if part["hidden_act"] not in _ACTS:
      raise ValueError(f"{arch}: {where}.hidden_act={part['hidden_act']!r} is not supported")
  out = dict(kind=kind, text=text, vision=vision, name=arch, **{**d["top"], **cfg})
  # The image processor's statistics, when its config sits beside the model's.
  pre = os.path.join(os.path.dirname(os.path.abspath(arch)), "preprocessor_config.json")
  if os.path.isfile(pre):
    stats = common.read_json(pre, "Hugging Face preprocessor_config.json")
    for key in ("image_mean", "image_std"):
      if key in stats:
        out[key] = tuple(stats[key])
  out.pop("text_config", None)
  out.pop("vision_config", None)
  if kind == "siglip" and not vision["vision_use_head"]:
    raise ValueError(f"{arch}: vision_use_head=False (no pooling head) is not supported")
  if kind == "clip" and text["eos_token_id"] not in (2, text["vocab_size"] - 1):
    raise ValueError(
      f"{arch}: text eos_token_id={text['eos_token_id']} is not the last id; pooling at it "
      "is not supported here"
    )
  return out


def config(
  arch: dict,
  *,
  image_size: int | None = None,
  tokenizer: str | None = None,
  source: dict | None = None,
):
  v, t, clip = arch["vision"], arch["text"], arch["kind"] == "clip"
  mean, std = (common.OPENAI_MEAN, common.OPENAI_STD) if clip else ((0.5,) * 3, (0.5,) * 3)
  mean, std = arch.get("image_mean", mean), arch.get("image_std", std)
  image = dict(
    image_size=image_size or v["image_size"],
    patch=v["patch_size"],
    width=v["hidden_size"],
    depth=v["num_hidden_layers"],
    heads=v["num_attention_heads"],
    mlp_dim=v["intermediate_size"],
    pool="cls" if clip else "map",
    prefix_posemb=clip or None,
    embed_bias=False if clip else None,
    ln_pre=clip or None,
    act=_ACTS[v["hidden_act"]],
    ln_eps=v["layer_norm_eps"],
    mean=None if tuple(mean) == (0.5,) * 3 and tuple(std) == (0.5,) * 3 else tuple(mean),
    std=None if tuple(mean) == (0.5,) * 3 and tuple(std) == (0.5,) * 3 else tuple(std),
  )
  text = dict(
    width=t["hidden_size"],
    depth=t["num_hidden_layers"],
    heads=t["num_attention_heads"],
    mlp_dim=t["intermediate_size"],
    vocab_size=t["vocab_size"],
    causal=clip,
    pool="argmax" if clip else "last",
    mask_pad=False,
    act=_ACTS[t["hidden_act"]],
    ln_eps=t["layer_norm_eps"],
  )
  if clip:
    head = dict(embed_dim=arch["projection_dim"], temperature_init=0.07)
  else:
    head = dict(
      embed_dim=v["hidden_size"],
      temperature_init=0.1,
      bias_init=-10.0,
      image_proj=False,
      text_proj_bias=True,
    )
    if (t["projection_size"] or t["hidden_size"]) != v["hidden_size"]:
      raise ValueError(
        f"{arch['name']}: text projection_size {t['projection_size']} differs from the image "
        f"width {v['hidden_size']}; SigLIP's embeddings must have one size"
      )
  return common.image_text_config(
    image=image,
    text=text,
    head=head,
    max_len=t["max_position_embeddings"],
    tokenizer=tokenizer,
    loss="clip" if clip else "siglip",
  )


def _encoder(src: str, ours: str, depth: int, heads: int) -> list[R.Rule]:
  out = []
  for i in range(depth):
    s, o = f"{src}.layers.{i}", f"{ours}/blocks/{i}"
    out += R.layernorm(f"{s}.layer_norm1", f"{o}/ln1") + R.layernorm(f"{s}.layer_norm2", f"{o}/ln2")
    qkv = [f"{s}.self_attn.{n}_proj" for n in "qkv"]
    out += R.attention(f"{s}.self_attn.out_proj", f"{o}/attn", heads, qkv=qkv)
    out += R.linear(f"{s}.mlp.fc1", f"{o}/mlp/fc1") + R.linear(f"{s}.mlp.fc2", f"{o}/mlp/fc2")
  return out


def rules(arch: dict, source: dict | None = None) -> list[R.Rule]:
  v, t, clip = arch["vision"], arch["text"], arch["kind"] == "clip"
  vm, tm = "vision_model", "text_model"
  out = R.conv(f"{vm}.embeddings.patch_embedding", "image/embed", bias=not clip)
  pos = f"{vm}.embeddings.position_embedding.weight"
  if clip:
    out += [
      R.reshaped(f"{vm}.embeddings.class_embedding", "image/cls", (1, 1, -1), (-1,)),
      R.split_prefix(pos, "image/prefix_pos", "image/pos", 1, lead=False),
    ]
    out += R.layernorm(f"{vm}.pre_layrnorm", "image/ln_pre")
  else:
    out += [R.reshaped(pos, "image/pos", (1, -1, v["hidden_size"]), (-1, v["hidden_size"]))]
  out += _encoder(
    f"{vm}.encoder", "image/encoder", v["num_hidden_layers"], v["num_attention_heads"]
  )
  out += R.layernorm(f"{vm}.post_layernorm", "image/encoder/ln")
  if clip:
    out += R.linear("visual_projection", "image_proj", bias=False)
  else:
    h = f"{vm}.head"
    out += [R.same(f"{h}.probe", "image/map_head/probe")]
    out += R.attention(
      f"{h}.attention.out_proj",
      "image/map_head/attn",
      v["num_attention_heads"],
      fused=f"{h}.attention.in_proj_",
    )
    out += R.layernorm(f"{h}.layernorm", "image/map_head/ln")
    out += R.linear(f"{h}.mlp.fc1", "image/map_head/mlp/fc1")
    out += R.linear(f"{h}.mlp.fc2", "image/map_head/mlp/fc2")
  length = t["max_position_embeddings"]
  out += [
    R.same(f"{tm}.embeddings.token_embedding.weight", "text/tok/embedding"),
    R.reshaped(
      f"{tm}.embeddings.position_embedding.weight", "text/pos", (1, length, -1), (length, -1)
    ),
  ]
  out += _encoder(f"{tm}.encoder", "text/encoder", t["num_hidden_layers"], t["num_attention_heads"])
  out += R.layernorm(f"{tm}.final_layer_norm", "text/encoder/ln")
  if clip:
    out += R.linear("text_projection", "text_proj", bias=False)
  else:
    out += R.linear(f"{tm}.head", "text_proj", bias=True)
  shape = (
    np.shape(source["logit_scale"]) if source and "logit_scale" in source else ((), (1,))[not clip]
  )
  out += [R.negated("logit_scale", "log_temperature", shape)]
  if not clip:
    out += [R.reshaped("logit_bias", "bias", (), shape)]
  return out


# Buffers older transformers versions saved with the weights.
IGNORED = (r".*\.position_ids",)


def resample(source: dict, arch: dict, image_size: int) -> dict:
  """Position embeddings for `image_size` as timm and OpenCLIP resample at load time
  (antialiased bicubic); transformers' own `interpolate_pos_encoding`, applied at
  run time without antialiasing, gives slightly different tables."""
  name = "vision_model.embeddings.position_embedding.weight"
  table = np.asarray(source[name], np.float32)
  n = 1 if arch["kind"] == "clip" else 0
  grid = layers.resample_grid(table[None, n:], image_size // arch["vision"]["patch_size"])[0]
  return {**source, name: np.concatenate([table[:n], grid], 0)}
