"""Contrastive objectives for big_contrast.

Pure functions, one per objective, each taking L2-normalised embeddings and a
temperature (logits = cosine / temperature) and returning a scalar. Each works
on one device (``axis_name=None``) and inside `jax.shard_map` over the batch
(``axis_name`` = the mesh axis or axes), where every device passes its local
rows and receives the global value with the single-device gradients. Every
InfoNCE-family objective is written on one engine (`blockwise.py`), so each
takes ``block_size``: None gathers the batch ([b, B] logits), k passes column
blocks around the device ring ([b, k] logits at a time), with equal values and
gradients. This package knows nothing about models, data or the trainer.
"""

from big_contrast.losses.blockwise import Lse, Sum, row_stats
from big_contrast.losses.diagnostics import alignment, uniformity
from big_contrast.losses.image_text import clip_loss, siglip_loss, simcse_loss
from big_contrast.losses.multiview import dcl_loss, debiased_loss, ntxent_loss, supcon_loss
from big_contrast.losses.polyview import mv_dhel_loss, mv_infonce_loss, polyview_loss
from big_contrast.losses.soft import label_similarity, soft_contrastive_loss
from big_contrast.losses.temperature import (
  clamp_log_temperature,
  init_bias,
  init_log_temperature,
  min_temperature,
  temperature_from_log,
)

__all__ = [
  "Lse",
  "Sum",
  "alignment",
  "clamp_log_temperature",
  "clip_loss",
  "dcl_loss",
  "debiased_loss",
  "init_bias",
  "init_log_temperature",
  "label_similarity",
  "min_temperature",
  "mv_dhel_loss",
  "mv_infonce_loss",
  "ntxent_loss",
  "polyview_loss",
  "row_stats",
  "siglip_loss",
  "simcse_loss",
  "soft_contrastive_loss",
  "supcon_loss",
  "temperature_from_log",
  "uniformity",
]
