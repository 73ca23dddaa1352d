"""Pieces the recipes share: the bundled-digits setting, the tiny CPU variants, dataset sizes.

Config files load it by path, as they are loaded themselves:

    common = config_lib.sibling_module(__file__, "common.py")

Everything else a config needs comes from `config_lib.base_config(task)` and its
block builders (`data_config`, `optim_config`, `loss_config`, `eval_config`).
"""

import ml_collections

from big_contrast import config_lib

IMAGENET_1K_TRAIN = 1_281_167  # images in ImageNet-1k's train split

# A 4-block ViT on the 32×32 digits (0.3M parameters): minutes on 2 CPU cores.
DIGITS_VIT = dict(
  name="vit", image_size=32, width=96, depth=4, heads=4, mlp_dim=192, patch=8, posemb="learn"
)


def digits(c: ml_collections.ConfigDict) -> None:
  """The bundled digits (`bc_digits`, 32 px): 600 steps of 256, evaluated against baselines."""
  c.data.name = "bc_digits"
  c.data.image_size = 32
  # The 1,500 train records are 2 MiB: parsed once, not at every epoch (half
  # of the host's time per example).
  c.data.cache_records = True
  c.model.image = ml_collections.ConfigDict(dict(DIGITS_VIT, pool="gap"))
  c.batch_size = 256
  c.total_steps = 600
  c.log_every = 50
  c.ckpt_every = 200
  # Raw-pixel and random-init probes beside the trained one; the raw pixels at the
  # digits' native 8×8 resolution. The encoder probes (trained and random-init alike)
  # read the last block or the last two, whichever scores better on the probe's
  # held-out part of train: DINO's linear evaluation concatenates the last blocks
  # (4 of ViT-S's 12); all 4 blocks here added 13 s to the 5-minute job.
  c.eval = config_lib.eval_config(baselines=True, raw_pixels_size=8, probe_last_blocks=(1, 2))


def tiny(c: ml_collections.ConfigDict) -> None:
  """`digits` shrunk to under a minute on 2 CPU cores: B = 128, 150 steps, a 2-block tower."""
  c.batch_size = 128
  c.total_steps = 150
  c.optim.warmup_steps = 20
  c.model.image.update(width=64, depth=2, heads=4, mlp_dim=128)
  c.log_every = 25
  c.ckpt_every = 150
  c.eval.baselines = False
  c.eval.probe_last_blocks = (1,)


def real_scale_images(c: ml_collections.ConfigDict, image_size: int = 224) -> None:
  """A converted image dataset of yours at `image_size`, read by 16 worker processes."""
  c.data.name = ml_collections.config_dict.placeholder(str)  # your converted dataset dir
  c.data.image_size = image_size
  c.data.worker_count = 16
  c.eval.baselines = False
  c.eval.raw_pixels_size = None
  c.eval.probe_last_blocks = (1,)  # the final block, as the papers' probes read it
