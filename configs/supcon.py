r"""SupCon: supervised contrastive learning (Khosla et al., 2020).

All views of all examples that share a class label are positives of each other.
Built on configs/simclr.py (same data, model and evaluation), changing the loss
and the recipe. Variants:

  tiny      the bundled digits with their labels, B = 128, 150 steps (< 1 min on CPU);
  resnet50  the paper's ImageNet ResNet-50 recipe: B = 6,144, two views with
            SimCLR augmentations, LARS (momentum 0.9, weight decay 1e-6) with
            10 warm-up epochs and cosine decay over 700 epochs, temperature 0.1,
            128-d normalised projection from a 2048-wide hidden layer.

  python -m big_contrast.train --config=configs/supcon.py:tiny --workdir=/tmp/supcon
"""
from big_contrast import config_lib

VARIANTS = ("tiny", "resnet50")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/supcon.py: unknown variant {arg!r}; expected one of "
                     f"{list(VARIANTS)}")
  c = config_lib.sibling_config(__file__, "simclr.py", {"tiny": "tiny", "resnet50": "resnet50"}[arg])
  c.loss.name = "supcon"
  c.loss.label_key = "label"
  c.loss.temperature = 0.1
  if arg == "resnet50":
    c.batch_size = 6144
    c.total_steps = 146_000       # 700 epochs of ImageNet-1k at B = 6,144
    c.optim.lr = 0.3 * c.batch_size / 256
    c.optim.warmup_steps = 2_086  # 10 epochs
  return c
