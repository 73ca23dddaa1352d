"""From model outputs and a batch to the scalar loss, under `shard_map`.

The one place that maps `config.loss.name` to a function of `big_contrast.losses`.
Every loss receives each device's local rows and returns the global value, so the
trainer wraps it in `jax.shard_map` over the batch axes and gets exact gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from big_contrast import losses, sharding

_IMAGE_TEXT = ("clip", "siglip")
_MULTIVIEW = ("ntxent", "supcon", "dcl", "debiased", "polyview", "softcon")
_TEXT = ("simcse",)


def _labels(batch, loss_cfg):
  key = loss_cfg.get("label_key", "label")
  if key not in batch:
    raise KeyError(
      f"config.loss.name={loss_cfg.name!r} needs batch field {key!r} "
      f"(config.loss.label_key); the batch has {sorted(batch)}"
    )
  return batch[key]


def _per_device_loss(loss_cfg, axis_name) -> Callable[..., jax.Array]:
  """(model outputs, batch) of local rows → global loss, for `config.loss.name`."""
  name = loss_cfg.name
  t = loss_cfg.get("temperature")
  if name == "clip":

    def fn(out, batch):
      pair_ids = batch["text_id"] if loss_cfg.get("identical_texts_positive", False) else None
      return losses.clip_loss(
        out["zimg"],
        out["ztxt"],
        temperature=out["temperature"],
        axis_name=axis_name,
        block_size=loss_cfg.get("block_size"),
        pair_ids=pair_ids,
      )
  elif name == "siglip":

    def fn(out, batch):
      return losses.siglip_loss(
        out["zimg"],
        out["ztxt"],
        temperature=out["temperature"],
        bias=out["bias"],
        axis_name=axis_name,
        block_size=loss_cfg.get("block_size"),
      )
  elif name == "ntxent":

    def fn(out, batch):
      return losses.ntxent_loss(out["z"], temperature=t, axis_name=axis_name)
  elif name == "supcon":

    def fn(out, batch):
      return losses.supcon_loss(
        out["z"], _labels(batch, loss_cfg), temperature=t, axis_name=axis_name
      )
  elif name == "dcl":

    def fn(out, batch):
      return losses.dcl_loss(out["z"], temperature=t, axis_name=axis_name)
  elif name == "debiased":

    def fn(out, batch):
      return losses.debiased_loss(
        out["z"],
        temperature=t,
        tau_plus=loss_cfg.tau_plus,
        beta=loss_cfg.get("beta", 0.0),
        axis_name=axis_name,
      )
  elif name == "polyview":

    def fn(out, batch):
      return losses.polyview_loss(
        out["z"], temperature=t, variant=loss_cfg.get("variant", "geometric"), axis_name=axis_name
      )
  elif name == "softcon":

    def fn(out, batch):
      return losses.soft_contrastive_loss(
        out["z"][:, 0],
        out["z"][:, 1],
        _labels(batch, loss_cfg),
        temperature=t,
        similarity=loss_cfg.get("similarity", "cosine"),
        soft_weight=loss_cfg.get("soft_weight", 0.5),
        axis_name=axis_name,
      )
  elif name == "simcse":
    # Unsupervised SimCSE (Gao et al., 2021): InfoNCE between a sentence's two
    # dropout views, the other sentences of the global batch as negatives. The
    # paper's loss is one-directional (view 1 → view 2); this is its symmetric
    # form (the mean of both directions, CLIP's loss at a fixed temperature).
    def fn(out, batch):
      return losses.clip_loss(out["z"][:, 0], out["z"][:, 1], temperature=t, axis_name=axis_name)
  else:
    raise ValueError(
      f"config.loss.name={name!r}: expected one of {_IMAGE_TEXT + _MULTIVIEW + _TEXT}"
    )
  return fn


def check_task(loss_cfg, task: str) -> None:
  wanted = (
    "image_text"
    if loss_cfg.name in _IMAGE_TEXT
    else "text"
    if loss_cfg.name in _TEXT
    else "multiview"
  )
  if loss_cfg.name in _IMAGE_TEXT + _MULTIVIEW + _TEXT and wanted != task:
    raise ValueError(
      f"config.loss.name={loss_cfg.name!r} needs config.task={wanted!r}, got {task!r}"
    )


def make_loss_fn(loss_cfg, mesh: Mesh) -> Callable[[Mapping, Mapping], jax.Array]:
  """(model outputs, batch) of global arrays → global scalar loss.

  Arrays with a leading batch dimension are split over the batch axes; scalars
  (temperature, bias) are replicated.
  """
  axes = sharding.batch_axes(mesh)
  per_device = _per_device_loss(loss_cfg, axes)

  def spec(x):
    return P() if x.ndim == 0 else P(axes)

  def loss_fn(out, batch):
    batch = {k: v for k, v in batch.items() if k in ("text_id", "label", "labels")}
    args = (dict(out), batch)
    specs = jax.tree.map(spec, args)
    return jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=P())(*args)

  return loss_fn
