"""timm Vision Transformers (DINOv2 and the other plain ViTs) ↔ our image tower.

Architecture: `--arch` is a timm model name from `ARCHS` (`vit_small_patch14_dinov2`,
`vit_base_patch14_reg4_dinov2`, ...) or the path of a JSON of timm
`VisionTransformer` keyword arguments (`img_size`, `patch_size`, `embed_dim`,
`depth`, `num_heads`, `mlp_ratio`, `init_values`, `reg_tokens`,
`no_embed_class`, ...). The import is an image-only run (`task='multiview'`)
whose embedding is the class token's features, as timm's `forward` returns
them with `num_classes=0`; a classifier `head` in the file is left out.

State-dict names are timm's: `cls_token`, `reg_token`, `pos_embed`,
`patch_embed.proj`, `blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
mlp.fc1, mlp.fc2, ls2.gamma}`, `norm`. Loading at another resolution
(`--image_size`) resamples `pos_embed` as timm's `checkpoint_filter_fn` does
(antialiased bicubic; `layers.resample_grid`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from big_contrast.interop import common
from big_contrast.interop import rules as R
from big_contrast.models import layers

# `mean` / `std`: the model's pretrained_cfg input statistics (timm keeps them apart
# from the model's arguments; a JSON `--arch` may carry them the same way).
_IMAGENET = dict(mean=common.IMAGENET_MEAN, std=common.IMAGENET_STD)
_DINOV2 = dict(img_size=518, patch_size=14, init_values=1e-5, **_IMAGENET)
ARCHS: dict[str, dict[str, Any]] = {
  "vit_small_patch14_dinov2": dict(_DINOV2, embed_dim=384, depth=12, num_heads=6),
  "vit_base_patch14_dinov2": dict(_DINOV2, embed_dim=768, depth=12, num_heads=12),
  "vit_large_patch14_dinov2": dict(_DINOV2, embed_dim=1024, depth=24, num_heads=16),
  "vit_base_patch16_224": dict(
    img_size=224,
    patch_size=16,
    embed_dim=768,
    depth=12,
    num_heads=12,
    mean=(0.5,) * 3,
    std=(0.5,) * 3,
  ),
}
for _size in ("small", "base", "large"):
  ARCHS[f"vit_{_size}_patch14_reg4_dinov2"] = dict(
    ARCHS[f"vit_{_size}_patch14_dinov2"], reg_tokens=4, no_embed_class=True
  )

_FIXED = dict(
  class_token=(True,),
  global_pool=("token",),
  qkv_bias=(True,),
  qk_norm=(False,),
  pre_norm=(False,),
  fc_norm=(None, False),
  dynamic_img_size=(False,),
  in_chans=(3,),
  pos_embed=("learn",),
  proj_bias=(True,),
)


def architecture(arch: str | None, weights: str | None = None) -> dict[str, Any]:
  if arch is None:
    raise ValueError(f"--arch is needed for timm weights: one of {sorted(ARCHS)} or a JSON")
  if arch in ARCHS:
    return dict(ARCHS[arch], name=arch)
  if arch.endswith(".json") or os.path.isfile(arch):
    return dict(common.read_json(arch, "timm model arguments"), name=arch)
  raise ValueError(f"--arch {arch!r}: not a timm model we know ({sorted(ARCHS)}) nor a JSON")


def _dims(arch: dict) -> dict:
  common.unsupported(arch, _FIXED, "timm")
  known = {"name", "mean", "std", "img_size", "patch_size", "embed_dim", "depth", "num_heads"}
  known |= {"mlp_ratio", "reg_tokens", "no_embed_class", "init_values", "num_classes", *_FIXED}
  unknown = sorted(set(arch) - known)
  if unknown:
    raise ValueError(
      f"timm argument {unknown[0]!r} is not supported here (supported: {sorted(known)})"
    )
  size = arch.get("img_size", 224)
  width = arch.get("embed_dim", 768)
  return dict(
    image_size=size if isinstance(size, int) else size[0],
    patch=arch.get("patch_size", 16),
    width=width,
    depth=arch.get("depth", 12),
    heads=arch.get("num_heads", 12),
    mlp_dim=int(width * arch.get("mlp_ratio", 4.0)),
    registers=arch.get("reg_tokens", 0),
    no_embed_class=bool(arch.get("no_embed_class", False)),
    layerscale=arch.get("init_values"),
  )


def image_block(arch: dict, *, image_size: int | None = None) -> dict:
  """`config.model.image` of timm architecture `arch` (at `image_size`, default its own)."""
  d = _dims(arch)
  if "mean" not in arch or "std" not in arch:
    raise ValueError(f"timm architecture {arch.get('name')!r} needs its input mean and std")
  mean, std = tuple(arch["mean"]), tuple(arch["std"])
  return dict(
    image_size=image_size or d["image_size"],
    patch=d["patch"],
    width=d["width"],
    depth=d["depth"],
    heads=d["heads"],
    mlp_dim=d["mlp_dim"],
    pool="cls",
    registers=d["registers"] or None,
    prefix_posemb=not d["no_embed_class"],
    layerscale=d["layerscale"],
    act="gelu_exact",
    ln_eps=1e-6,
    mean=mean,
    std=std,
  )


def config(
  arch: dict,
  *,
  image_size: int | None = None,
  tokenizer: str | None = None,
  source: dict | None = None,
):
  if tokenizer:
    raise ValueError("timm image towers have no text tower: --tokenizer does not apply")
  return common.image_config(image_block(arch, image_size=image_size))


def rules(arch: dict, source: dict | None = None) -> list[R.Rule]:
  d = _dims(arch)
  out = R.conv("patch_embed.proj", "image/embed", bias=True)
  out += [R.same("cls_token", "image/cls")]
  if d["registers"]:
    out += [R.same("reg_token", "image/registers")]
  if d["no_embed_class"]:
    out += [R.same("pos_embed", "image/pos")]
  else:
    n = 1 + d["registers"]
    out += [R.split_prefix("pos_embed", "image/prefix_pos", "image/pos", n, lead=True)]
  for i in range(d["depth"]):
    src, ours = f"blocks.{i}", f"image/encoder/blocks/{i}"
    out += R.layernorm(f"{src}.norm1", f"{ours}/ln1") + R.layernorm(f"{src}.norm2", f"{ours}/ln2")
    out += R.attention(f"{src}.attn.proj", f"{ours}/attn", d["heads"], fused=f"{src}.attn.qkv.")
    out += R.linear(f"{src}.mlp.fc1", f"{ours}/mlp/fc1") + R.linear(
      f"{src}.mlp.fc2", f"{ours}/mlp/fc2"
    )
    if d["layerscale"] is not None:
      out += [R.same(f"{src}.ls1.gamma", f"{ours}/ls1"), R.same(f"{src}.ls2.gamma", f"{ours}/ls2")]
  out += R.layernorm("norm", "image/encoder/ln")
  return out


# A classifier head, and DINOv2's masked-image-modelling token, are not part of the backbone.
IGNORED = (r"head\..*", r"mask_token")


def resample(source: dict, arch: dict, image_size: int) -> dict:
  d = _dims(arch)
  table = np.asarray(source["pos_embed"], np.float32)
  n = 0 if d["no_embed_class"] else 1 + d["registers"]
  grid = layers.resample_grid(table[:, n:], image_size // d["patch"])
  return {**source, "pos_embed": np.concatenate([table[:, :n], grid], 1)}
