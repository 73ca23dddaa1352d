r"""SoftCon: multi-label soft contrastive learning (Wang, Albrecht & Zhu, 2024).

Two views per example; the target similarity of examples i and j is the
similarity of their label sets (`loss.similarity`: 'cosine' or 'jaccard'), so
scenes that share classes are partial positives. Multi-hot labels come from the
batch field `loss.label_key` ('labels'). Built on configs/simclr.py. Variants:

  tiny          64×64 2×2 grids of the bundled digits (`bc_digits_grid`, multi-hot
                over ten digits), B = 128, 150 steps (< 1 min on CPU);
  s2_vitb14     the paper's multispectral setting: a ViT-B/14 (CLS pooling) on
                13-band Sentinel-2 patches (224×224) with land-cover multi-labels,
                continually pretrained from an RGB model whose patch embedding
                is adapted to 13 channels (big_contrast.models.pretrained,
                adapt='repeat'); AdamW, cosine schedule, temperature 0.2.

  python -m big_contrast.train --config=configs/softcon.py:tiny --workdir=/tmp/softcon
"""
from big_contrast import config_lib

VARIANTS = ("tiny", "s2_vitb14")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/softcon.py: unknown variant {arg!r}; expected one of "
                     f"{list(VARIANTS)}")
  c = config_lib.sibling_config(__file__, "simclr.py", "tiny" if arg == "tiny" else "vit_b16")
  c.loss.name = "softcon"
  c.loss.label_key = "labels"
  c.loss.similarity = "cosine"
  c.loss.temperature = 0.2
  # The grids carry only multi-hot `labels`: the probe is then one-vs-rest (mAP, F1).
  c.eval.at_end = ("linear_probe", "diagnostics")
  c.eval.raw_pixels_size = None
  if arg == "tiny":
    c.data.name = "bc_digits_grid"
    c.data.image_size = 64
    c.model.image.image_size = 64
  else:
    c.data.image_size = 224
    c.model.image.update(variant="B/14", image_size=224, channels=13, posemb="learn",
                         pool="cls")
    c.model.embed_dim = 256
    c.batch_size = 1024
    c.total_steps = 100_000
    c.optim.update(lr=1e-4, warmup_steps=5_000, weight_decay=0.05)
  return c
