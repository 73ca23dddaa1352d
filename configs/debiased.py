r"""Debiased contrastive learning (Chuang et al., 2020).

NT-Xent whose negative term is corrected for the expected fraction τ⁺ of
same-class examples among the negatives (`loss.tau_plus`); `loss.beta` > 0 is
the hard-negative variant (Robinson et al., 2021). Built on configs/simclr.py.
Variants:

  tiny            the bundled digits (10 classes: τ⁺ = 0.1), B = 128, 150 steps;
  cifar10_resnet50  the paper's CIFAR-10 recipe: ResNet-50 with a CIFAR stem,
                  B = 256, Adam lr 1e-3 (constant), weight decay 1e-6, 400 epochs,
                  temperature 0.5, τ⁺ = 0.1, 2-layer head 2048 → 512 (BN) → 128,
                  SimCLR augmentations at 32 px with colour strength 0.5.

Sources for cifar10_resnet50: the official code chingyaoc/DCL (main.py: Adam lr
1e-3, weight_decay 1e-6, no schedule, temperature 0.5, tau_plus 0.1, batch 256,
128-d output; model.py: ResNet-50 with a 3×3 stride-1 first conv and no max-pool,
head Linear(2048, 512, no bias) → BatchNorm → ReLU → Linear(512, 128); README:
the released models are model_400.pth) and its CIFAR-10 extension by the same
group for the hard-negative variant, joshr17/HCL (image/main.py: 400 epochs by
default, beta 1.0 for hard negatives; image/utils.py: RandomResizedCrop(32) with
the default 0.08-1 area, flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8,
grayscale p 0.2, Gaussian blur p 0.5, σ 0.1-2.0). Deviation: torch's Adam adds
the 1e-6 weight decay to the gradient (L2); ours is AdamW's decoupled decay
(both are negligible at this size). 400 epochs × (50,000 // 256 = 195 batches,
drop_last) = 78,000 steps.

  python -m big_contrast.train --config=configs/debiased.py:tiny --workdir=/tmp/debiased
"""

from big_contrast import config_lib

VARIANTS = ("tiny", "cifar10_resnet50")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(
      f"configs/debiased.py: unknown variant {arg!r}; expected one of {list(VARIANTS)}"
    )
  c = config_lib.sibling_config(__file__, "simclr.py", "tiny" if arg == "tiny" else "resnet50")
  # τ⁺ = 0.1: 1 / number of classes; β = 0: no hard-negative reweighting.
  c.loss = config_lib.loss_config(
    "debiased", temperature=c.loss.temperature, tau_plus=0.1, beta=0.0
  )
  if arg == "cifar10_resnet50":
    c.data.image_size = 32
    # HCL image/utils.py: default RandomResizedCrop area (0.08-1), blur p 0.5 with
    # σ 0.1-2.0 (inherited from resnet50), ColorJitter(0.4, 0.4, 0.4, 0.1) = s 0.5.
    c.data.augment.update(crop_scale=(0.08, 1.0), blur_prob=0.5, jitter_strength=0.5)
    c.model.image.update(stem="cifar")  # DCL model.py: 3×3 stride-1 conv, no max-pool
    c.model.head_hidden = 512  # DCL model.py: 2048 → 512 (BN, ReLU) → 128
    c.model.head_batch_norm = True
    c.loss.temperature = 0.5  # DCL main.py --temperature default
    c.batch_size = 256  # DCL main.py --batch_size default
    c.total_steps = 78_000  # 400 epochs × 195 full batches of CIFAR-10's 50,000
    c.optim = config_lib.optim_config(
      name="adamw",
      lr=1e-3,
      warmup_steps=0,
      weight_decay=1e-6,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_clip_norm=0.0,
      end_lr_fraction=1.0,
    )
  return c
