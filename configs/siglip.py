r"""SigLIP: image-text pretraining with the pairwise sigmoid loss (Zhai et al., 2023).

Every image-text pair in the batch is an independent binary classification
(matching or not), so there is no softmax over the batch. The logit is
z·t / temperature + bias with a learnable temperature (initialised at 0.1, i.e.
t' = log 10, and not clipped) and bias (initialised at −10, so training starts
from the prior that almost every pair is negative). Built on configs/clip.py.
Variants:

  tiny     the bundled digits, B = 128, 150 steps (< 1 min on CPU);
  vit_b16  the paper's ViT-B/16 recipe: B = 32,768, MAP-pooled ViT-B/16 at 224 px,
           a bidirectional text Transformer (768 wide, 12 deep, 12 heads, 16 tokens,
           last-token pooling), 768-d embeddings, AdamW (β2 = 0.95, lr 1e-3,
           weight decay 1e-4), warm-up then cosine over 9B seen examples, images
           resized without augmentation.

  python -m big_contrast.train --config=configs/siglip.py:tiny --workdir=/tmp/siglip
"""
from big_contrast import config_lib

import ml_collections

VARIANTS = ("tiny", "vit_b16")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/siglip.py: unknown variant {arg!r}; expected one of "
                     f"{list(VARIANTS)}")
  c = config_lib.sibling_config(__file__, "clip.py", arg)
  c.loss.name = "siglip"
  c.loss.identical_texts_positive = False   # not used by the sigmoid loss
  c.model.temperature_init = 0.1
  c.model.min_temperature = None
  c.model.bias_init = -10.0
  if arg == "vit_b16":
    c.data.augment = ml_collections.ConfigDict(
        {"clip_crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "clip_flip_prob": 0.0})
    c.text.max_len = 16
    c.model.embed_dim = 768
    c.model.image.update(pool="map")
    c.model.text = ml_collections.ConfigDict(dict(
        width=768, depth=12, heads=12, mlp_dim=3072, causal=False, pool="eos"))
    c.batch_size = 32_768
    c.total_steps = 274_658       # 9B seen examples
    c.optim = ml_collections.ConfigDict(dict(
        lr=1e-3, warmup_steps=5_000, weight_decay=1e-4, b1=0.9, b2=0.95, eps=1e-8,
        grad_clip_norm=1.0, end_lr_fraction=0.0))
  return c
