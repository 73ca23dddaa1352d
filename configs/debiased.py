r"""Debiased contrastive learning (Chuang et al., 2020).

NT-Xent whose negative term is corrected for the expected fraction τ⁺ of
same-class examples among the negatives (`loss.tau_plus`); `loss.beta` > 0 is
the hard-negative variant (Robinson et al., 2021). Built on configs/simclr.py.
Variants:

  tiny            the bundled digits (10 classes: τ⁺ = 0.1), B = 128, 150 steps;
  cifar10_resnet50  the paper's CIFAR-10 recipe: ResNet-50 with a CIFAR stem,
                  B = 256, Adam lr 1e-3, weight decay 1e-6, 400 epochs,
                  temperature 0.5, τ⁺ = 0.1, 2-layer head 512 → 128.

  python -m big_contrast.train --config=configs/debiased.py:tiny --workdir=/tmp/debiased
"""

import ml_collections

from big_contrast import config_lib

VARIANTS = ("tiny", "cifar10_resnet50")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/debiased.py: unknown variant {arg!r}; expected one of "
                     f"{list(VARIANTS)}")
  c = config_lib.sibling_config(__file__, "simclr.py", "tiny" if arg == "tiny" else "resnet50")
  c.loss.name = "debiased"
  c.loss.tau_plus = 0.1          # 1 / number of classes
  c.loss.beta = 0.0
  if arg == "cifar10_resnet50":
    c.data.image_size = 32
    c.data.augment.update(crop_scale=(0.2, 1.0), blur_prob=0.0, jitter_strength=0.5)
    c.model.image.update(stem="cifar")
    c.model.head_hidden = 512
    c.model.head_batch_norm = False
    c.loss.temperature = 0.5
    c.batch_size = 256
    c.total_steps = 78_125        # 400 epochs of CIFAR-10's 50,000 images
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, warmup_steps=0, weight_decay=1e-6, b1=0.9, b2=0.999,
        eps=1e-8, grad_clip_norm=0.0, end_lr_fraction=1.0))
  return c
