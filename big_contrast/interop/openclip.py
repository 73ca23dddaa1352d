"""OpenCLIP (and OpenAI CLIP) ViT checkpoints ↔ our two-tower model.

Architecture: `--arch` is an OpenCLIP model name from `ARCHS` (`ViT-B-32`,
`ViT-B-16-quickgelu`, ...) or the path of an OpenCLIP model config JSON (the
format of `open_clip/model_configs/*.json`). Supported: the native ViT image
tower (class-token pooling, `ln_pre`, optional LayerScale) and the native text
tower (causal, `argmax` pooling); not timm or Hugging Face towers inside
OpenCLIP, ModifiedResNet or attentional pooling.

State-dict names are those of `open_clip.CLIP.state_dict()`: `visual.conv1.weight`,
`visual.class_embedding`, `visual.positional_embedding`, `visual.ln_pre`,
`visual.transformer.resblocks.{i}.{ln_1, attn.in_proj_*, attn.out_proj, ln_2,
mlp.c_fc, mlp.c_proj}`, `visual.ln_post`, `visual.proj`, `token_embedding`,
`positional_embedding`, `transformer.resblocks.{i}...`, `ln_final`,
`text_projection`, `logit_scale` (and `logit_bias` when present).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from big_contrast.interop import common
from big_contrast.interop import rules as R
from big_contrast.models import layers

_TEXT = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12)
# OpenCLIP's model configs (open_clip/model_configs/*.json): the ViT CLIP models.
ARCHS: dict[str, dict[str, Any]] = {
  "ViT-B-32": dict(
    embed_dim=512,
    vision_cfg=dict(image_size=224, layers=12, width=768, patch_size=32),
    text_cfg=_TEXT,
  ),
  "ViT-B-16": dict(
    embed_dim=512,
    vision_cfg=dict(image_size=224, layers=12, width=768, patch_size=16),
    text_cfg=_TEXT,
  ),
  "ViT-L-14": dict(
    embed_dim=768,
    vision_cfg=dict(image_size=224, layers=24, width=1024, patch_size=14),
    text_cfg=dict(_TEXT, width=768, heads=12),
  ),
  "ViT-L-14-336": dict(
    embed_dim=768,
    vision_cfg=dict(image_size=336, layers=24, width=1024, patch_size=14),
    text_cfg=dict(_TEXT, width=768, heads=12),
  ),
  "ViT-H-14": dict(
    embed_dim=1024,
    vision_cfg=dict(image_size=224, layers=32, width=1280, head_width=80, patch_size=14),
    text_cfg=dict(_TEXT, width=1024, heads=16, layers=24),
  ),
}
for _name in list(ARCHS):
  ARCHS[f"{_name}-quickgelu"] = dict(ARCHS[_name], quick_gelu=True)

# Settings our towers express only at these values (OpenCLIP's defaults).
_TOWER_FIXED = dict(
  output_tokens=(False,),
  act_kwargs=(None,),
  norm_kwargs=(None,),
  block_type=(None, "default"),
  qk_norm=(False,),
  scaled_cosine_attn=(False,),
  scale_heads=(False,),
  scale_attn_inner=(False,),
  scale_attn=(False,),
  scale_fc=(False,),
)
_VISION_FIXED = dict(
  pool_type=("tok",),
  attentional_pool=(False,),
  no_ln_pre=(False,),
  final_ln_after_pool=(False,),
  pos_embed_type=("learnable",),
  timm_model_name=(None,),
  patch_dropout=(0.0, 0),
  **_TOWER_FIXED,
)
_TEXT_FIXED = dict(
  pool_type=("argmax",),
  embed_cls=(False,),
  no_causal_mask=(False,),
  final_ln_after_pool=(False,),
  proj_type=("linear",),
  proj_bias=(False,),
  hf_model_name=(None,),
  **_TOWER_FIXED,
)


def architecture(arch: str | None, weights: str | None = None) -> dict[str, Any]:
  """An OpenCLIP model config: a name from `ARCHS` or a model-config JSON path."""
  if arch is None:
    raise ValueError(f"--arch is needed for OpenCLIP weights: one of {sorted(ARCHS)} or a JSON")
  if arch in ARCHS:
    return dict(ARCHS[arch], name=arch)
  if arch.endswith(".json") or os.path.isfile(arch):
    return dict(common.read_json(arch, "OpenCLIP model config"), name=arch)
  raise ValueError(
    f"--arch {arch!r}: not an OpenCLIP model name we know ({sorted(ARCHS)}) nor a model-config JSON"
  )


def _dims(arch: dict) -> tuple[dict, dict]:
  v, t = dict(arch["vision_cfg"]), dict(arch["text_cfg"])
  common.unsupported(v, _VISION_FIXED, "vision_cfg")
  common.unsupported(t, _TEXT_FIXED, "text_cfg")
  if not isinstance(v.get("layers", 12), int):
    raise ValueError("vision_cfg.layers is a list: a ModifiedResNet, which is not supported here")
  size = v.get("image_size", 224)
  if not isinstance(size, int):
    if len(set(size)) != 1:
      raise ValueError(f"vision_cfg.image_size={size}: only square images are supported")
    size = size[0]
  width = v.get("width", 768)
  vision = dict(
    image_size=size,
    patch=v.get("patch_size", 16),
    width=width,
    depth=v.get("layers", 12),
    heads=width // v.get("head_width", 64),
    mlp_dim=int(width * v.get("mlp_ratio", 4.0)),
    layerscale=v.get("ls_init_value"),
  )
  twidth = t.get("width", 512)
  text = dict(
    width=twidth,
    depth=t.get("layers", 12),
    heads=t.get("heads", 8),
    mlp_dim=int(twidth * t.get("mlp_ratio", 4.0)),
    vocab_size=t.get("vocab_size", 49408),
    max_len=t.get("context_length", 77),
    layerscale=t.get("ls_init_value"),
  )
  if text["layerscale"] is not None:
    raise ValueError("text_cfg.ls_init_value: LayerScale in the text tower is not supported here")
  return vision, text


def config(
  arch: dict,
  *,
  image_size: int | None = None,
  tokenizer: str | None = None,
  source: dict | None = None,
):
  """Our run config for OpenCLIP architecture `arch` (at `image_size`, default its own)."""
  vision, text = _dims(arch)
  act = "quick_gelu" if arch.get("quick_gelu") else "gelu_exact"
  image = dict(
    image_size=image_size or vision["image_size"],
    patch=vision["patch"],
    width=vision["width"],
    depth=vision["depth"],
    heads=vision["heads"],
    mlp_dim=vision["mlp_dim"],
    pool="cls",
    prefix_posemb=True,
    embed_bias=False,
    ln_pre=True,
    layerscale=vision["layerscale"],
    act=act,
    ln_eps=1e-5,
    mean=common.OPENAI_MEAN,
    std=common.OPENAI_STD,
  )
  txt = dict(
    width=text["width"],
    depth=text["depth"],
    heads=text["heads"],
    mlp_dim=text["mlp_dim"],
    vocab_size=text["vocab_size"],
    causal=True,
    pool="argmax",
    mask_pad=False,
    act=act,
    ln_eps=1e-5,
  )
  head = dict(
    embed_dim=arch.get("embed_dim", 512),
    temperature_init=0.07,
    min_temperature=0.01,
    bias_init=arch.get("init_logit_bias"),
  )
  return common.image_text_config(
    image=image,
    text=txt,
    head=head,
    max_len=text["max_len"],
    tokenizer=tokenizer,
    loss="siglip" if head["bias_init"] is not None else "clip",
  )


def _block(src: str, ours: str, heads: int, layerscale: bool) -> list[R.Rule]:
  rules = R.layernorm(f"{src}.ln_1", f"{ours}/ln1") + R.layernorm(f"{src}.ln_2", f"{ours}/ln2")
  rules += R.attention(f"{src}.attn.out_proj", f"{ours}/attn", heads, fused=f"{src}.attn.in_proj_")
  rules += R.linear(f"{src}.mlp.c_fc", f"{ours}/mlp/fc1") + R.linear(
    f"{src}.mlp.c_proj", f"{ours}/mlp/fc2"
  )
  if layerscale:
    rules += [
      R.same(f"{src}.ls_1.gamma", f"{ours}/ls1"),
      R.same(f"{src}.ls_2.gamma", f"{ours}/ls2"),
    ]
  return rules


def rules(arch: dict, source: dict | None = None) -> list[R.Rule]:
  """The name table of OpenCLIP architecture `arch` (`source`: the file, for optional tensors)."""
  vision, text = _dims(arch)
  ls = vision["layerscale"] is not None
  out = R.conv("visual.conv1", "image/embed", bias=False)
  out += [
    R.reshaped("visual.class_embedding", "image/cls", (1, 1, -1), (-1,)),
    R.split_prefix("visual.positional_embedding", "image/prefix_pos", "image/pos", 1, lead=False),
  ]
  out += R.layernorm("visual.ln_pre", "image/ln_pre")
  for i in range(vision["depth"]):
    out += _block(
      f"visual.transformer.resblocks.{i}", f"image/encoder/blocks/{i}", vision["heads"], ls
    )
  out += R.layernorm("visual.ln_post", "image/encoder/ln")
  out += [R.same("visual.proj", "image_proj/kernel")]
  out += [
    R.same("token_embedding.weight", "text/tok/embedding"),
    R.reshaped("positional_embedding", "text/pos", (1, text["max_len"], -1), (text["max_len"], -1)),
  ]
  for i in range(text["depth"]):
    out += _block(f"transformer.resblocks.{i}", f"text/encoder/blocks/{i}", text["heads"], False)
  out += R.layernorm("ln_final", "text/encoder/ln")
  out += [R.same("text_projection", "text_proj/kernel")]
  shape = np.shape(source["logit_scale"]) if source and "logit_scale" in source else ()
  out += [R.negated("logit_scale", "log_temperature", shape)]
  if arch.get("init_logit_bias") is not None:
    out += [R.reshaped("logit_bias", "bias", (), shape)]
  return out


# Buffers some OpenCLIP versions save with the weights.
IGNORED = (r"attn_mask", r"visual\.attn_mask")


def resample(source: dict, arch: dict, image_size: int) -> dict:
  """Position embeddings for `image_size` (the class token's entry kept), as OpenCLIP's
  `resize_pos_embed` resamples them (antialiased bicubic, timm's method too)."""
  vision, _ = _dims(arch)
  table = np.asarray(source["visual.positional_embedding"], np.float32)
  grid = image_size // vision["patch"]
  resized = layers.resample_grid(table[None, 1:], grid)[0]
  return {**source, "visual.positional_embedding": np.concatenate([table[:1], resized], 0)}


def arch_of_config(model: dict, max_len: int) -> dict:
  """The OpenCLIP model config a run's `config.model` corresponds to (checked by the caller).

  `model.text.vocab_size` is the run's embedding table. The config is named
  after the `ARCHS` entry it equals, if any.
  """
  eff = common.effective_model(model)
  image, text = eff["image"], eff["text"]
  vision = dict(
    image_size=image["image_size"],
    layers=image["depth"],
    width=image["width"],
    patch_size=image["patch"],
  )
  if image["width"] // image["heads"] != 64:
    vision["head_width"] = image["width"] // image["heads"]
  if image["mlp_dim"] != 4 * image["width"]:
    vision["mlp_ratio"] = image["mlp_dim"] / image["width"]
  if image["layerscale"] is not None:
    vision["ls_init_value"] = image["layerscale"]
  tcfg = dict(
    context_length=max_len,
    vocab_size=text["vocab_size"],
    width=text["width"],
    heads=text["heads"],
    layers=text["depth"],
  )
  if text["mlp_dim"] != 4 * text["width"]:
    tcfg["mlp_ratio"] = text["mlp_dim"] / text["width"]
  arch = dict(embed_dim=eff["embed_dim"], vision_cfg=vision, text_cfg=tcfg)
  if image["act"] == "quick_gelu":
    arch["quick_gelu"] = True
  if eff["bias_init"] is not None:
    arch["init_logit_bias"] = eff["bias_init"]
  for name, known in ARCHS.items():
    same = (
      known.get("quick_gelu") == arch.get("quick_gelu") and known["embed_dim"] == arch["embed_dim"]
    )
    if same and _dims(known) == _dims(arch):
      return dict(arch, name=name)
  return dict(arch, name="a custom OpenCLIP architecture")
