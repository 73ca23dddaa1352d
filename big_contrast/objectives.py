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


def _keys(out, cfg, *names):
  """The momentum encoder's embeddings (`config.loss.momentum` set), else None."""
  if cfg["momentum"] is None:
    return None
  keys = tuple(out[f"{name}_key"] for name in names)
  return keys if len(keys) > 1 else keys[0]


def _clip(out, batch, cfg, axis_name):
  pair_ids = batch["text_id"] if cfg["identical_texts_positive"] else None
  return losses.clip_loss(
    out["zimg"],
    out["ztxt"],
    temperature=out["temperature"],
    axis_name=axis_name,
    block_size=cfg["block_size"],
    pair_ids=pair_ids,
    label_smoothing=cfg["label_smoothing"],
    decoupled=cfg["decoupled"],
    keys=_keys(out, cfg, "zimg", "ztxt"),
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
  return losses.ntxent_loss(
    out["z"],
    temperature=cfg["temperature"],
    axis_name=axis_name,
    block_size=cfg["block_size"],
    sum_over_views=cfg["sum_over_views"],
    keys=_keys(out, cfg, "z"),
  )


def _supcon(out, batch, cfg, axis_name):
  return losses.supcon_loss(
    out["z"],
    _labels(batch, cfg),
    temperature=cfg["temperature"],
    base_temperature=cfg["base_temperature"],
    axis_name=axis_name,
    block_size=cfg["block_size"],
    decoupled=cfg["decoupled"],
  )


def _dcl(out, batch, cfg, axis_name, vmf_sigma=None):
  return losses.dcl_loss(
    out["z"],
    temperature=cfg["temperature"],
    axis_name=axis_name,
    block_size=cfg["block_size"],
    sum_over_views=cfg["sum_over_views"],
    vmf_sigma=vmf_sigma,
  )


def _dclw(out, batch, cfg, axis_name):
  return _dcl(out, batch, cfg, axis_name, vmf_sigma=cfg["sigma"])


def _debiased(out, batch, cfg, axis_name):
  return losses.debiased_loss(
    out["z"],
    temperature=cfg["temperature"],
    tau_plus=cfg["tau_plus"],
    beta=cfg["beta"],
    axis_name=axis_name,
    block_size=cfg["block_size"],
  )


def _polyview(out, batch, cfg, axis_name):
  return losses.polyview_loss(
    out["z"],
    temperature=cfg["temperature"],
    variant=cfg["variant"],
    axis_name=axis_name,
    block_size=cfg["block_size"],
  )


def _mv_infonce(out, batch, cfg, axis_name):
  return losses.mv_infonce_loss(
    out["z"], temperature=cfg["temperature"], axis_name=axis_name, block_size=cfg["block_size"]
  )


def _mv_dhel(out, batch, cfg, axis_name):
  return losses.mv_dhel_loss(
    out["z"], temperature=cfg["temperature"], axis_name=axis_name, block_size=cfg["block_size"]
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
    block_size=cfg["block_size"],
  )


def _simcse(out, batch, cfg, axis_name):
  return losses.simcse_loss(
    out["z"],
    temperature=cfg["temperature"],
    symmetric=cfg["symmetric"],
    axis_name=axis_name,
    block_size=cfg["block_size"],
  )


# Every objective's settings start with these: `block_size` None gathers the batch
# (all-gather, [b, B] logits per device), an int k runs the blockwise ring
# ([b, k] logits at a time) with the same values and gradients.
_BLOCK = {"block_size": None}
_LABELLED = {"label_key": "label"}
# `momentum`: None, or the momentum encoder's EMA decay at step 0 (MoCo v3's 0.99),
# raised to 1 along a half cosine over the run; the keys then come from the EMA.
_MOMENTUM = {"momentum": None}
# `sum_over_views`: the sum over the V views' means (SimCLR's objective.py, the DCL
# reference code, MoCo v3), V times our default mean; under LARS the excluded
# parameters' steps scale with it.
_VIEWS_SUMMED = {"sum_over_views": False}

OBJECTIVES: dict[str, Objective] = {
  # The temperature (and SigLIP's bias) of the image-text losses is the model's.
  "clip": Objective(
    "image_text",
    _clip,
    {
      **_BLOCK,
      "identical_texts_positive": False,
      "label_smoothing": 0.0,  # clip-rocket's improved baseline: 0.1
      "decoupled": False,  # DEXML's decoupled softmax over identical captions
      **_MOMENTUM,
    },
    batch_fields=("text_id",),
  ),
  "siglip": Objective("image_text", _siglip, {**_BLOCK}),
  "ntxent": Objective(
    "multiview", _ntxent, {"temperature": 0.1, **_BLOCK, **_VIEWS_SUMMED, **_MOMENTUM}
  ),
  # base_temperature: HobbitLong/SupContrast's τ_base, the loss scaled by τ/τ_base.
  "supcon": Objective(
    "multiview",
    _supcon,
    {"temperature": 0.1, "base_temperature": 0.07, "decoupled": False, **_LABELLED, **_BLOCK},
  ),
  "dcl": Objective("multiview", _dcl, {"temperature": 0.1, **_VIEWS_SUMMED, **_BLOCK}),
  # DCLW: DCL with the von Mises-Fisher positive weighting, σ = 0.5 (Yeh et al., 2022).
  "dclw": Objective(
    "multiview", _dclw, {"temperature": 0.1, "sigma": 0.5, **_VIEWS_SUMMED, **_BLOCK}
  ),
  "debiased": Objective(
    "multiview", _debiased, {"temperature": 0.5, "tau_plus": 0.1, "beta": 0.0, **_BLOCK}
  ),
  "polyview": Objective(
    "multiview", _polyview, {"temperature": 0.1, "variant": "geometric", **_BLOCK}
  ),
  "mv_infonce": Objective("multiview", _mv_infonce, {"temperature": 0.1, **_BLOCK}),
  "mv_dhel": Objective("multiview", _mv_dhel, {"temperature": 0.1, **_BLOCK}),
  "softcon": Objective(
    "multiview",
    _softcon,
    {
      "temperature": 0.1,
      "similarity": "cosine",
      "soft_weight": 0.5,
      "label_key": "labels",
      **_BLOCK,
    },
  ),
  # SimCSE's loss is one-directional (view 1 → view 2); symmetric=True averages both.
  "simcse": Objective("text", _simcse, {"temperature": 0.05, "symmetric": False, **_BLOCK}),
}


def momentum(loss_cfg: Mapping[str, Any]) -> float | None:
  """The momentum encoder's initial EMA decay, or None when the objective uses none."""
  cfg = settings(loss_cfg)
  m = cfg["momentum"] if "momentum" in cfg else None
  if m is not None and not 0.0 <= float(m) < 1.0:
    raise ValueError(f"config.loss.momentum={m} must be in [0, 1) (or None: no momentum encoder)")
  return None if m is None else float(m)


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
