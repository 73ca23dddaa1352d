"""Model zoo: towers, heads, and `build_model` from a config."""
from __future__ import annotations

from flax import nnx

from big_contrast.models import heads, layers, text, vit
from big_contrast.models.heads import MultiView, TwoTower, l2_normalize


def _image_tower(cfg, *, dtype, remat, rngs):
  cfg = dict(cfg)
  name = cfg.pop("name", "vit")
  if name == "vit":
    return vit.ViT(dtype=dtype, remat=remat, rngs=rngs, **cfg)
  raise ValueError(f"config.model.image.name={name!r}: expected one of ['vit']")


def build_model(model_cfg, *, task: str, vocab_size: int | None = None,
                text_max_len: int | None = None, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the model a task trains, from `config.model`.

  task 'image_text' → `TwoTower`; 'multiview' → `MultiView`.
  """
  dtype = model_cfg.get("dtype", "float32")
  remat = model_cfg.get("remat", False)
  ddtype = layers.dtype_from_name(dtype)
  image = _image_tower(model_cfg.image, dtype=dtype, remat=remat, rngs=rngs)
  if task == "image_text":
    txt = text.TextTransformer(vocab_size=vocab_size, max_len=text_max_len, dtype=dtype,
                               remat=remat, rngs=rngs, **dict(model_cfg.text))
    return heads.TwoTower(image, txt, embed_dim=model_cfg.embed_dim,
                          temperature_init=model_cfg.get("temperature_init", 0.07),
                          min_temperature=model_cfg.get("min_temperature", 0.01),
                          bias_init=model_cfg.get("bias_init", None), dtype=ddtype, rngs=rngs)
  if task == "multiview":
    return heads.MultiView(image, embed_dim=model_cfg.embed_dim,
                           head_hidden=model_cfg.get("head_hidden", 2 * model_cfg.embed_dim),
                           head_layers=model_cfg.get("head_layers", 2), dtype=ddtype, rngs=rngs)
  raise ValueError(f"config.task={task!r}: expected 'image_text' or 'multiview'")


__all__ = ["build_model", "MultiView", "TwoTower", "l2_normalize"]
