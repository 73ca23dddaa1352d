"""Model zoo: image and text towers, heads, and the three wrappers the trainer builds.

Towers are picked by name (`IMAGE_TOWERS`); a wrapper is built from `config.model`
by `two_tower`, `multi_view` or `text_only`, whose keyword arguments (and the
towers' and heads' constructors') are the one place model defaults live: a config
names only what it changes, and an unknown key is an error naming it. Which
wrapper a task trains is `big_contrast.tasks`' business, not this package's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from big_contrast.models import heads, layers, resnet, text, vit
from big_contrast.models.heads import MultiView, TextOnly, TwoTower, l2_normalize

IMAGE_TOWERS: dict[str, Callable[..., nnx.Module]] = {"vit": vit.ViT, "resnet": resnet.ResNet}


def checked_kwargs(fn: Callable, kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
  """`kwargs` as a dict, after checking that `fn` accepts every key (`where` names the config)."""
  # An NNX module class's signature is its metaclass's (*args, **kwargs): read __init__'s.
  params = inspect.signature(fn.__init__ if inspect.isclass(fn) else fn).parameters
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
      skip = ("rngs", "dtype", "remat")
      known = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in skip)
      raise ValueError(f"{where}.{unknown[0]}: unknown key; {where} takes {known}")
  return dict(kwargs)


def image_tower(cfg: Mapping[str, Any], *, dtype: str, remat: bool, rngs: nnx.Rngs) -> nnx.Module:
  """`config.model.image` → a tower: `name` picks it from `IMAGE_TOWERS`, the rest are its kwargs."""
  cfg = dict(cfg)
  name = cfg.pop("name", "vit")
  if name not in IMAGE_TOWERS:
    raise ValueError(f"config.model.image.name={name!r}: expected one of {sorted(IMAGE_TOWERS)}")
  tower = IMAGE_TOWERS[name]
  return tower(
    dtype=dtype, remat=remat, rngs=rngs, **checked_kwargs(tower, cfg, "config.model.image")
  )


def text_tower(
  cfg: Mapping[str, Any],
  *,
  vocab_size: int | None,
  max_len: int,
  dtype: str,
  remat: bool,
  rngs: nnx.Rngs,
) -> text.TextTransformer:
  """`config.model.text` → the text Transformer over `vocab_size` ids and `max_len` tokens.

  `config.model.text.vocab_size`, when set (an imported tower's embedding table),
  is the table's size: the tokenizer's `vocab_size` (None: no tokenizer) may be
  smaller, never larger.
  """
  cfg = dict(cfg)
  table = cfg.pop("vocab_size", None)
  if table is not None:
    if vocab_size is not None and vocab_size > table:
      raise ValueError(
        f"the tokenizer has {vocab_size} ids, more than config.model.text.vocab_size={table}"
      )
    vocab_size = table
  if vocab_size is None:
    raise ValueError("the text tower needs a tokenizer or config.model.text.vocab_size")
  cfg = checked_kwargs(text.TextTransformer, cfg, "config.model.text")
  return text.TextTransformer(
    vocab_size=vocab_size, max_len=max_len, dtype=dtype, remat=remat, rngs=rngs, **cfg
  )


def _wrapper(model_cfg: Mapping[str, Any], towers: tuple[str, ...], head: Callable, name: str):
  """Splits `config.model` into (dtype, remat, {tower: cfg}, head kwargs checked against `head`)."""
  cfg = dict(model_cfg)
  dtype, remat = cfg.pop("dtype", "float32"), cfg.pop("remat", False)
  missing = [t for t in towers if t not in cfg]
  if missing:
    raise ValueError(f"config.model.{missing[0]} is missing: a {name} model needs {list(towers)}")
  tower_cfgs = {t: cfg.pop(t) for t in towers}
  return dtype, remat, tower_cfgs, checked_kwargs(head, cfg, "config.model")


def two_tower(
  model_cfg: Mapping[str, Any], *, vocab_size: int, text_max_len: int, rngs: nnx.Rngs
) -> TwoTower:
  """Image tower + text tower + projections (CLIP, SigLIP): `TwoTower`."""
  dtype, remat, t, head = _wrapper(model_cfg, ("image", "text"), TwoTower, "two-tower")
  image = image_tower(t["image"], dtype=dtype, remat=remat, rngs=rngs)
  txt = text_tower(
    t["text"], vocab_size=vocab_size, max_len=text_max_len, dtype=dtype, remat=remat, rngs=rngs
  )
  return TwoTower(image, txt, dtype=layers.dtype_from_name(dtype), rngs=rngs, **head)


def multi_view(model_cfg: Mapping[str, Any], *, rngs: nnx.Rngs, **_) -> MultiView:
  """One image tower + an MLP head over V views (SimCLR and the other multi-view objectives)."""
  dtype, remat, t, head = _wrapper(model_cfg, ("image",), MultiView, "multi-view")
  image = image_tower(t["image"], dtype=dtype, remat=remat, rngs=rngs)
  return MultiView(image, dtype=layers.dtype_from_name(dtype), rngs=rngs, **head)


def text_only(
  model_cfg: Mapping[str, Any], *, vocab_size: int, text_max_len: int, rngs: nnx.Rngs
) -> TextOnly:
  """One text tower + a projection, two dropout views per sentence (SimCSE): `TextOnly`."""
  dtype, remat, t, head = _wrapper(model_cfg, ("text",), TextOnly, "text-only")
  txt = text_tower(
    t["text"], vocab_size=vocab_size, max_len=text_max_len, dtype=dtype, remat=remat, rngs=rngs
  )
  return TextOnly(txt, dtype=layers.dtype_from_name(dtype), rngs=rngs, **head)


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
  "IMAGE_TOWERS",
  "MultiView",
  "TextOnly",
  "TwoTower",
  "apply_and_update",
  "count_params",
  "heads",
  "image_tower",
  "l2_normalize",
  "multi_view",
  "text_only",
  "text_tower",
  "two_tower",
]
