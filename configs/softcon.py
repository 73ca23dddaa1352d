r"""SoftCon: multi-label soft contrastive learning (Wang, Albrecht & Zhu, 2024).

Two views per example; a symmetric soft cross-entropy whose target row for
example i keeps half its mass on i's own other view (always a full positive) and
spreads the other half over the batch in proportion to label-set similarity
(`loss.similarity`: 'cosine' or 'jaccard'), so scenes that share classes are
partial positives (big_contrast.losses.soft_contrastive_loss, soft_weight 0.5;
label similarity alone collapsed the tiny: ~2% of a row on the own view).
Unverified: the paper's exact loss was not reachable. Multi-hot labels come from the
batch field `loss.label_key` ('labels'). Built on configs/simclr.py. Variants:

  tiny          2×2 grids of the bundled digits (`bc_digits_grid`, multi-hot over
                ten digits) read at 32×32 (16 px per 8×8 digit, 16 ViT patches;
                the native 64×64 took ~2 min on 2 CPU cores), crops of 80-100%
                of the grid, B = 128, 150 steps (< 1 min on CPU);
  s2_vitb14     the paper's multispectral setting: a ViT-B/14 (CLS pooling) on
                13-band Sentinel-2 patches (224×224) with land-cover multi-labels,
                continually pretrained from an RGB model whose patch embedding
                is adapted to 13 channels (big_contrast.models.pretrained,
                adapt='repeat'); AdamW, cosine schedule, temperature 0.2.

Sources for s2_vitb14: Wang, Albrecht & Zhu, 2024 (arXiv 2405.20462), abstract:
soft contrastive learning on land-cover multi-labels, continual pretraining from
DINOv2 for multispectral and SAR data; zhu-xlab/softcon README: released
ViT-B/14 and ViT-S/14 backbones take 13-band (or 2-band SAR) 224×224 input and
follow DINOv2's ViT (patch 14); SSL4EO-S12-ML labels are multi-hot over 9
Dynamic World classes. Unverified (the paper's training details and the
pretraining code were not reachable): batch 1,024, 100k steps, lr 1e-4, 5k
warm-up, weight decay 0.05, temperature 0.2, cosine label similarity, the
projection head, and adapt='repeat' for the 13-band patch embedding. Not
implemented: the paper's Siamese masking.

  s2_dinov2_vitb14  s2_vitb14 continued from DINOv2 itself: the image tower is
                timm's `vit_base_patch14_dinov2` exactly (LayerScale, exact GELU,
                class token with its own position) at 224 px with 13 bands, and
                `init_from.path` is a DINOv2 run directory made by
                `python -m big_contrast.interop import --from timm --arch
                vit_base_patch14_dinov2 --image_size 224 ...` (position
                embeddings resampled to 16×16); the RGB patch embedding is
                adapted to 13 bands (adapt='repeat'). The bands are normalised
                as (x/255 - 0.5)/0.25 (unverified: DINOv2's own statistics are
                ImageNet's, for RGB; SoftCon's per-band ones were not reachable).
                docs/interop.md walks through it.

  python -m big_contrast.train --config=configs/softcon.py:tiny --workdir=/tmp/softcon
"""

import ml_collections

from big_contrast import config_lib
from big_contrast.interop import timm

VARIANTS = ("tiny", "s2_vitb14", "s2_dinov2_vitb14")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(
      f"configs/softcon.py: unknown variant {arg!r}; expected one of {list(VARIANTS)}"
    )
  c = config_lib.sibling_config(__file__, "simclr.py", "tiny" if arg == "tiny" else "vit_b16")
  # soft_weight: share of each target row on label similarity (1: labels only).
  c.loss = config_lib.loss_config(
    "softcon", label_key="labels", similarity="cosine", temperature=0.2, soft_weight=0.5
  )
  # The grids carry only multi-hot `labels`: the probe is then one-vs-rest (mAP, F1).
  c.eval.at_end = ("linear_probe", "diagnostics")
  c.eval.raw_pixels_size = None
  if arg == "tiny":
    c.data.name = "bc_digits_grid"
    # 32 px, not the grids' 64: each cell is an 8×8 digit upsampled, so nothing is
    # lost, and 16 instead of 64 patches keep the run under a minute on 2 cores.
    c.data.image_size = 32
    c.model.image.image_size = 32
    # A crop of under ~0.8 of a 2×2 grid often shows one or two of its digits, and
    # then the two views share too little to learn from (the run collapsed with
    # crops from 0.3, with this loss and with plain NT-Xent alike).
    c.data.augment.crop_scale = (0.8, 1.0)
  else:
    c.data.image_size = 224
    # Colour jitter's hue and saturation are RGB's; the 13 bands keep crop, flip,
    # grayscale (the band mean) and blur (unverified against the paper's set).
    c.data.augment.jitter_prob = 0.0
    c.model.image.update(variant="B/14", image_size=224, channels=13, posemb="learn", pool="cls")
    c.model.embed_dim = 256
    c.model.head_batch_norm = False  # unverified; not MoCo v3's BN head that vit_b16 has
    c.batch_size = 1024
    c.total_steps = 100_000
    c.optim.update(lr=1e-4, warmup_steps=5_000, weight_decay=0.05)
  if arg == "s2_dinov2_vitb14":
    dinov2 = timm.image_block(timm.ARCHS["vit_base_patch14_dinov2"], image_size=224)
    dinov2 = {k: v for k, v in dinov2.items() if v is not None and k not in ("mean", "std")}
    c.model.image = ml_collections.ConfigDict(
      dict(name="vit", **dinov2, channels=13, mean=[0.5] * 13, std=[0.25] * 13)
    )
    c.init_from = config_lib.init_from_config(adapt="repeat")  # path: the DINOv2 run directory
  return c
