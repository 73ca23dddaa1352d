"""What the converters share: run configs for imported towers, and checks on architectures.

A converter describes a source architecture in the source's own terms (an
OpenCLIP model config, timm's `VisionTransformer` arguments, a Hugging Face
`config.json`, a big_vision model config) and turns it into our config here:
a full run config from `config_lib.base_config`, whose `model` block builds
exactly that architecture with our towers.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from big_contrast import config_lib
from big_contrast.models import heads, vit
from big_contrast.models import text as text_lib

# OpenAI CLIP's pixel statistics (OpenCLIP's and Hugging Face CLIP's default).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _block(values: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A config block without the keys left at None (their defaults are None)."""
  return ml_collections.ConfigDict(
    {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if v is not None}
  )


def image_text_config(
  *,
  image: Mapping[str, Any],
  text: Mapping[str, Any],
  head: Mapping[str, Any],
  max_len: int,
  tokenizer: str | None,
  loss: str,
) -> ml_collections.ConfigDict:
  """A two-tower run config (`config.model.image/text` + head keys) for an imported model."""
  c = config_lib.base_config("image_text")
  c.model.image = _block(dict(name="vit", **image))
  c.model.text = _block(text)
  for key, value in head.items():
    # min_temperature=None (no clipping) is a setting; other None values are defaults.
    if value is not None or key == "min_temperature":
      c.model[key] = value
  c.text.max_len = max_len
  c.text.tokenizer = ml_collections.config_dict.placeholder(str)
  if tokenizer:
    c.text.tokenizer = tokenizer
  c.loss = config_lib.loss_config(loss)
  # CLIP's single zero-shot prompt (Radford et al., 2021, §3.1.4), so zero-shot runs as imported.
  c.eval.zero_shot_templates = ["a photo of a {}."]
  return _imported(c, image["image_size"])


def image_config(image: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A multi-view run config whose embedding is the image tower's features (no head)."""
  c = config_lib.base_config("multiview")
  c.model.image = _block(dict(name="vit", **image))
  c.model.embed_dim = int(image["width"])
  c.model.head_layers = 0
  c.loss = config_lib.loss_config("ntxent")
  return _imported(c, image["image_size"])


def _imported(c: ml_collections.ConfigDict, image_size: int) -> ml_collections.ConfigDict:
  # An imported run is a checkpoint at step 0, for evaluation and as `init_from`;
  # its batch size and step count are placeholders a training config replaces.
  c.data.image_size = int(image_size)
  c.batch_size = 256
  c.total_steps = 1
  c.eval.baselines = False
  c.eval.raw_pixels_size = None
  return c


def read_json(path: str, what: str) -> dict:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no {what} {path!r}")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def unsupported(cfg: Mapping[str, Any], allowed: Mapping[str, tuple], where: str) -> None:
  """Fails on a source setting our towers cannot express (`allowed`: key → accepted values)."""
  for key, values in allowed.items():
    if key in cfg and cfg[key] not in values:
      raise ValueError(
        f"{where}.{key}={cfg[key]!r} is not supported by big_contrast's towers "
        f"(supported: {list(values)})"
      )


def _defaults(fn, skip=("dtype", "remat", "rngs", "vocab_size", "max_len", "image", "text")):
  # An NNX module class's own signature is its metaclass's: read its __init__.
  params = inspect.signature(fn.__init__).parameters.items()
  return {k: p.default for k, p in params if k not in skip and p.default is not p.empty}


def effective_model(model: Mapping[str, Any]) -> dict:
  """A `config.model` with every default of its ViT (and text tower and head) filled in.

  An image-only model gives just `image`; a two-tower one also `text` and the
  `TwoTower` keys.
  """
  model = json.loads(json.dumps(dict(model), default=dict))
  image = dict(model.pop("image"))
  image.pop("name", None)
  if image.get("variant"):
    image = {**vit.parse_variant(image.pop("variant")), **image}
  image.pop("variant", None)
  out = dict(image={**_defaults(vit.ViT), **image})
  if "text" not in model:
    return out
  text = dict(model.pop("text"))
  text.setdefault("mlp_dim", 4 * text["width"])
  for key in ("dtype", "remat"):
    model.pop(key, None)
  out["text"] = {**_defaults(text_lib.TextTransformer), **text}
  out.update({**_defaults(heads.TwoTower), **model})
  return out


def model_differences(ours: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str) -> list:
  """(key, run's value, needed value) where two effective model configs differ."""
  out = []
  for key in sorted(set(ours) | set(wanted)):
    a, b = ours.get(key), wanted.get(key)
    if isinstance(a, Mapping) or isinstance(b, Mapping):
      out += model_differences(a or {}, b or {}, f"{prefix}.{key}")
    elif _norm(a) != _norm(b):
      out.append((f"{prefix}.{key}", a, b))
  return out


def _norm(v):
  if isinstance(v, (list, tuple)):
    return tuple(_norm(x) for x in v)
  if isinstance(v, float):
    return round(v, 9)
  return v
