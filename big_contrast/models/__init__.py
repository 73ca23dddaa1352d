"""Model zoo: towers, heads, and `build_model` from a config."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from big_contrast.models import heads, layers, resnet, text, vit
from big_contrast.models.heads import MultiView, TextOnly, TwoTower, l2_normalize

IMAGE_TOWERS = ("vit", "resnet")


def _image_tower(cfg, *, dtype, remat, rngs):
  cfg = dict(cfg)
  name = cfg.pop("name", "vit")
  if name == "vit":
    return vit.ViT(dtype=dtype, remat=remat, rngs=rngs, **cfg)
  if name == "resnet":
    return resnet.ResNet(dtype=dtype, remat=remat, rngs=rngs, **cfg)
  raise ValueError(f"config.model.image.name={name!r}: expected one of {list(IMAGE_TOWERS)}")


def build_model(
  model_cfg,
  *,
  task: str,
  vocab_size: int | None = None,
  text_max_len: int | None = None,
  rngs: nnx.Rngs,
) -> nnx.Module:
  """Builds the model a task trains, from `config.model`.

  task 'image_text' → `TwoTower`; 'multiview' → `MultiView`; 'text' → `TextOnly`.
  """
  dtype = model_cfg.get("dtype", "float32")
  remat = model_cfg.get("remat", False)
  ddtype = layers.dtype_from_name(dtype)
  if task == "text":
    txt = text.TextTransformer(
      vocab_size=vocab_size,
      max_len=text_max_len,
      dtype=dtype,
      remat=remat,
      rngs=rngs,
      **dict(model_cfg.text),
    )
    return heads.TextOnly(txt, embed_dim=model_cfg.embed_dim, dtype=ddtype, rngs=rngs)
  image = _image_tower(model_cfg.image, dtype=dtype, remat=remat, rngs=rngs)
  if task == "image_text":
    txt = text.TextTransformer(
      vocab_size=vocab_size,
      max_len=text_max_len,
      dtype=dtype,
      remat=remat,
      rngs=rngs,
      **dict(model_cfg.text),
    )
    return heads.TwoTower(
      image,
      txt,
      embed_dim=model_cfg.embed_dim,
      temperature_init=model_cfg.get("temperature_init", 0.07),
      min_temperature=model_cfg.get("min_temperature", 0.01),
      bias_init=model_cfg.get("bias_init", None),
      dtype=ddtype,
      rngs=rngs,
    )
  if task == "multiview":
    return heads.MultiView(
      image,
      embed_dim=model_cfg.embed_dim,
      head_hidden=model_cfg.get("head_hidden", 2 * model_cfg.embed_dim),
      head_layers=model_cfg.get("head_layers", 2),
      head_batch_norm=model_cfg.get("head_batch_norm", False),
      dtype=ddtype,
      rngs=rngs,
    )
  raise ValueError(f"config.task={task!r}: expected 'image_text', 'multiview' or 'text'")


def count_params(module: nnx.Module) -> int:
  """Number of trainable parameters (`nnx.Param`); works on `nnx.eval_shape` outputs.

  Batch statistics and fixed position tables are not parameters and not counted,
  as in the published figures.
  """
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def apply_and_update(graphdef, params, rest, *inputs, **kwargs):
  """The training forward pass, and the non-trainable state it leaves behind.

  (graphdef, params, rest, *inputs) → (outputs, new_rest), with `params` and
  `rest` the pure dicts of the train state. `new_rest` holds the updated
  BatchNorm running averages (and anything else non-trainable, unchanged); it is
  a function of the activations, so a train step returns it as an auxiliary
  output of `jax.value_and_grad(..., has_aux=True)` — never through a closure.
  """
  model = nnx.merge(graphdef, params, rest)
  out = model(*inputs, **kwargs)
  _, _, new_rest = nnx.split(model, nnx.Param, ...)
  return out, nnx.to_pure_dict(new_rest)


__all__ = [
  "apply_and_update",
  "build_model",
  "count_params",
  "MultiView",
  "TextOnly",
  "TwoTower",
  "l2_normalize",
]
