"""Contrastive objectives for big_contrast.

Pure functions, one per objective, each taking L2-normalised embeddings and a
temperature (logits = cosine / temperature) and returning a scalar. Each works
on one device (``axis_name=None``) and inside `jax.shard_map` over the batch
(``axis_name`` = the mesh axis or axes), where every device passes its local
rows and receives the global value with the single-device gradients.
This package knows nothing about models, data or the trainer.
"""

from big_contrast.losses.diagnostics import alignment, uniformity
from big_contrast.losses.image_text import clip_loss, siglip_loss
from big_contrast.losses.multiview import (
  dcl_loss,
  debiased_loss,
  ntxent_loss,
  polyview_loss,
  supcon_loss,
)
from big_contrast.losses.ring import ring_clip_loss, ring_siglip_loss
from big_contrast.losses.soft import label_similarity, soft_contrastive_loss
from big_contrast.losses.temperature import (
  init_bias,
  init_log_temperature,
  min_temperature,
  temperature_from_log,
)

__all__ = [
  "alignment",
  "clip_loss",
  "dcl_loss",
  "debiased_loss",
  "init_bias",
  "init_log_temperature",
  "label_similarity",
  "min_temperature",
  "ntxent_loss",
  "polyview_loss",
  "ring_clip_loss",
  "ring_siglip_loss",
  "siglip_loss",
  "soft_contrastive_loss",
  "supcon_loss",
  "temperature_from_log",
  "uniformity",
]
