r"""DCL: decoupled contrastive learning (Yeh et al., 2022).

NT-Xent without the positive pair in the denominator, which removes the
negative-positive coupling that makes SimCLR need large batches. Built on
configs/simclr.py. Variants:

  tiny      the bundled digits, B = 128, 150 steps (< 1 min on CPU);
  tiny_dclw `tiny` with DCLW, the von Mises-Fisher weighting of the positive term
            (loss.name='dclw', σ = 0.5: the paper's and the reference code's default);
  resnet50  the paper's small-batch ImageNet setting: ResNet-50, B = 256, 200 epochs,
            SimCLR augmentations and 2-layer BN head, LARS with SimCLR's
            square-root scaling for small batches (lr 0.075·√B = 1.2),
            weight decay 1e-6 (SimCLR's, configs/simclr.py), temperature 0.1, the
            loss summed over the two directions as the reference code returns it
            (raminnakhli/Decoupled-Contrastive-Learning loss/dcl.py: DCL()(z1, z2)
            is one_way(z1, z2) + one_way(z2, z1)).

Sources for resnet50: Yeh et al., 2022 (arXiv 2110.06848), abstract: SimCLR with
DCL on ImageNet-1K at batch 256 for 200 epochs. The square-root rule is
SimCLR's for small batches (Chen et al., 2020, App. B.1; google-research/simclr
README: lr 0.075 with learning_rate_scaling=sqrt). Unverified (no copy of the
paper's training details or code was found): the learning rate, the weight
decay, the warm-up and the temperature 0.1.

  python -m big_contrast.train --config=configs/dcl.py:tiny --workdir=/tmp/dcl
"""

import math

from big_contrast import config_lib

common = config_lib.sibling_module(__file__, "common.py")

VARIANTS = ("tiny", "tiny_dclw", "resnet50")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/dcl.py: unknown variant {arg!r}; expected one of {list(VARIANTS)}")
  c = config_lib.sibling_config(__file__, "simclr.py", "tiny" if arg == "tiny_dclw" else arg)
  c.loss = config_lib.loss_config("dcl", temperature=c.loss.temperature)
  if arg == "tiny_dclw":
    c.loss = config_lib.loss_config("dclw", temperature=c.loss.temperature, sigma=0.5)
    c.eval.baselines = True  # the probe beside the random-init one
  if arg == "resnet50":
    c.loss.sum_over_views = True
    c.batch_size = 256  # abstract: batch 256
    c.total_steps = config_lib.steps_for_epochs(200, common.IMAGENET_1K_TRAIN, c.batch_size)
    c.optim.lr = 0.075 * math.sqrt(c.batch_size)  # SimCLR's sqrt rule; unverified for DCL
    c.optim.warmup_steps = 10 * common.IMAGENET_1K_TRAIN // c.batch_size  # unverified
    c.loss.temperature = 0.1  # unverified
  return c
