r"""DCL: decoupled contrastive learning (Yeh et al., 2022).

NT-Xent without the positive pair in the denominator, which removes the
negative-positive coupling that makes SimCLR need large batches. Built on
configs/simclr.py. Variants:

  tiny      the bundled digits, B = 128, 150 steps (< 1 min on CPU);
  resnet50  the paper's small-batch ImageNet setting: ResNet-50, B = 256, 200 epochs,
            SimCLR augmentations and 2-layer BN head, LARS with SimCLR's
            square-root scaling for small batches (lr 0.075·√B = 1.2),
            weight decay 1e-6, temperature 0.1.

  python -m big_contrast.train --config=configs/dcl.py:tiny --workdir=/tmp/dcl
"""
import math

from big_contrast import config_lib

VARIANTS = ("tiny", "resnet50")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/dcl.py: unknown variant {arg!r}; expected one of {list(VARIANTS)}")
  c = config_lib.sibling_config(__file__, "simclr.py", arg)
  c.loss.name = "dcl"
  if arg == "resnet50":
    c.batch_size = 256
    c.total_steps = 1_000_800     # 200 epochs of ImageNet-1k at B = 256
    c.optim.lr = 0.075 * math.sqrt(c.batch_size)
    c.optim.warmup_steps = 50_040  # 10 epochs
    c.loss.temperature = 0.1
  return c
