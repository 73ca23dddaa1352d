"""From model outputs and a batch to the scalar loss, under `shard_map`.

The one table that maps `config.loss.name` to a function of `big_contrast.losses`
(`OBJECTIVES`). Each entry says which task it trains, which batch fields it
reads, and its settings with their defaults: `config.loss` holds `name` and any
of those settings, and nothing else (`config_lib.loss_config` builds one).
Every loss receives each device's local rows and returns the global value, so
`make_loss_fn` wraps it in `jax.shard_map` over the batch axes and gets exact
gradients.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from big_contrast import losses, sharding, tasks

# (model outputs, batch, settings, axis_name) → this device's share of the global loss.
LossFn = Callable[[Mapping[str, jax.Array], Mapping[str, jax.Array], Mapping[str, Any], Any], Any]


@dataclasses.dataclass(frozen=True)
class Objective:
  task: str
  fn: LossFn
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Batch fields the loss reads, besides the model's outputs; `label_key` adds its value.
  batch_fields: tuple[str, ...] = ()


def _labels(batch, cfg):
  key = cfg["label_key"]
  if key not in batch:
    raise KeyError(
      f"config.loss.name={cfg['name']!r} needs batch field {key!r} "
      f"(config.loss.label_key); the batch has {sorted(batch)}"
    )
  return batch[key]


def _clip(out, batch, cfg, axis_name):
  pair_ids = batch["text_id"] if cfg["identical_texts_positive"] else None
  return losses.clip_loss(
    out["zimg"],
    out["ztxt"],
    temperature=out["temperature"],
    axis_name=axis_name,
    block_size=cfg["block_size"],
    pair_ids=pair_ids,
  )


def _siglip(out, batch, cfg, axis_name):
  return losses.siglip_loss(
    out["zimg"],
    out["ztxt"],
    temperature=out["temperature"],
    bias=out["bias"],
    axis_name=axis_name,
    block_size=cfg["block_size"],
  )


def _ntxent(out, batch, cfg, axis_name):
  return losses.ntxent_loss(out["z"], temperature=cfg["temperature"], axis_name=axis_name)


def _supcon(out, batch, cfg, axis_name):
  return losses.supcon_loss(
    out["z"], _labels(batch, cfg), temperature=cfg["temperature"], axis_name=axis_name
  )


def _dcl(out, batch, cfg, axis_name):
  return losses.dcl_loss(out["z"], temperature=cfg["temperature"], axis_name=axis_name)


def _debiased(out, batch, cfg, axis_name):
  return losses.debiased_loss(
    out["z"],
    temperature=cfg["temperature"],
    tau_plus=cfg["tau_plus"],
    beta=cfg["beta"],
    axis_name=axis_name,
  )


def _polyview(out, batch, cfg, axis_name):
  return losses.polyview_loss(
    out["z"], temperature=cfg["temperature"], variant=cfg["variant"], axis_name=axis_name
  )


def _softcon(out, batch, cfg, axis_name):
  return losses.soft_contrastive_loss(
    out["z"][:, 0],
    out["z"][:, 1],
    _labels(batch, cfg),
    temperature=cfg["temperature"],
    similarity=cfg["similarity"],
    soft_weight=cfg["soft_weight"],
    axis_name=axis_name,
  )


def _simcse(out, batch, cfg, axis_name):
  # Unsupervised SimCSE (Gao et al., 2021): InfoNCE between a sentence's two
  # dropout views, the other sentences of the global batch as negatives. The
  # paper's loss is one-directional (view 1 → view 2); this is its symmetric
  # form (the mean of both directions, CLIP's loss at a fixed temperature).
  return losses.clip_loss(
    out["z"][:, 0], out["z"][:, 1], temperature=cfg["temperature"], axis_name=axis_name
  )


_LABELLED = {"label_key": "label"}

OBJECTIVES: dict[str, Objective] = {
  # The temperature (and SigLIP's bias) of the image-text losses is the model's.
  "clip": Objective(
    "image_text",
    _clip,
    {"block_size": None, "identical_texts_positive": False},
    batch_fields=("text_id",),
  ),
  "siglip": Objective("image_text", _siglip, {"block_size": None}),
  "ntxent": Objective("multiview", _ntxent, {"temperature": 0.1}),
  "supcon": Objective("multiview", _supcon, {"temperature": 0.1, **_LABELLED}),
  "dcl": Objective("multiview", _dcl, {"temperature": 0.1}),
  "debiased": Objective("multiview", _debiased, {"temperature": 0.5, "tau_plus": 0.1, "beta": 0.0}),
  "polyview": Objective("multiview", _polyview, {"temperature": 0.1, "variant": "geometric"}),
  "softcon": Objective(
    "multiview",
    _softcon,
    {"temperature": 0.1, "similarity": "cosine", "soft_weight": 0.5, "label_key": "labels"},
  ),
  "simcse": Objective("text", _simcse, {"temperature": 0.05}),
}


def get(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ValueError(f"config.loss.name={name!r}: expected one of {sorted(OBJECTIVES)}")
  return OBJECTIVES[name]


def settings(loss_cfg: Mapping[str, Any]) -> dict[str, Any]:
  """`config.loss` completed with its objective's defaults; unknown keys are errors."""
  cfg = dict(loss_cfg)
  objective = get(cfg.get("name"))
  unknown = sorted(set(cfg) - {"name"} - set(objective.defaults))
  if unknown:
    raise ValueError(
      f"config.loss.{unknown[0]}: not a setting of loss {cfg['name']!r}; "
      f"its settings are {sorted(objective.defaults)}"
    )
  return {**objective.defaults, **cfg}


def check_task(loss_cfg: Mapping[str, Any], task: str) -> None:
  """Fails, naming both keys, when `config.loss.name` does not train `config.task`."""
  objective = get(loss_cfg["name"])
  tasks.get(task)
  if objective.task != task:
    raise ValueError(
      f"config.loss.name={loss_cfg['name']!r} needs config.task={objective.task!r}, got {task!r}"
    )


def make_loss_fn(loss_cfg, mesh: Mesh) -> Callable[[Mapping, Mapping], jax.Array]:
  """(model outputs, batch) of global arrays → global scalar loss.

  Arrays with a leading batch dimension are split over the batch axes; scalars
  (temperature, bias) are replicated.
  """
  cfg = settings(loss_cfg)
  objective = get(cfg["name"])
  fields = objective.batch_fields + ((cfg["label_key"],) if "label_key" in cfg else ())
  axes = sharding.batch_axes(mesh)

  def per_device(out, batch):
    return objective.fn(out, batch, cfg, axes)

  def spec(x):
    return P() if x.ndim == 0 else P(axes)

  def loss_fn(out, batch):
    args = (dict(out), {k: v for k, v in batch.items() if k in fields})
    specs = jax.tree.map(spec, args)
    return jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=P())(*args)

  return loss_fn
