r"""SupCon: supervised contrastive learning (Khosla et al., 2020).

All views of all examples that share a class label are positives of each other.
Built on configs/simclr.py (same data, model and evaluation), changing the loss
and the recipe. Variants:

  tiny      the bundled digits with their labels, B = 128, 150 steps (< 1 min on CPU);
  tiny_decoupled  `tiny` with DEXML's decoupled softmax (Gupta et al., 2024,
            nilesh2797/DEXML losses.py): each of an anchor's same-class positives
            (~25 of 256 views at B = 128) scored against the negatives only, so
            positives do not compete with each other;
  resnet50  the paper's ImageNet ResNet-50 recipe: B = 6,144, two views with
            SimCLR augmentations, LARS (momentum 0.9, weight decay 1e-6) with
            10 warm-up epochs and cosine decay over 350 epochs, temperature 0.1,
            128-d normalised projection from a 2048-wide hidden layer.

Sources for resnet50 (Khosla et al., 2020, arXiv 2004.11362 v5): §4.5 "Training
Details" (batch 6,144 for ResNet-50; 350 pre-training epochs for models smaller
than ResNet-200, 700 for ResNet-200; τ = 0.1 for all results), Supp. §11
(ResNet-50 at B = 6,144 for 350 epochs), Supp. §14.1 (LARS with cosine decay for
the contrastive stage), §3.1 (projection: one 2048-wide hidden layer, 128-d
output; the paper also L2-normalises the encoder output before the head, which
our model does not). Unverified: the learning rate (the paper tuned it and gives no value;
we keep SimCLR's 0.3·B/256 with LARS), the weight decay and the 10-epoch warm-up
(SimCLR's). Deviations: the paper's best ResNet-50 augmentation is AutoAugment
(Supp. §14.2, Table 9: 78.6% against 77.9% for SimCLR-style "SimAugment"), which
big_contrast.data does not implement. The loss is scaled by τ/τ_base with the
reference code's τ_base = 0.07 (HobbitLong/SupContrast losses.py, `SupConLoss`;
§4.5 rescales the loss by τ for stability): loss.base_temperature, so reported
loss values and the step of LARS's excluded parameters are the paper's.

  python -m big_contrast.train --config=configs/supcon.py:tiny --workdir=/tmp/supcon
"""

from big_contrast import config_lib

common = config_lib.sibling_module(__file__, "common.py")

VARIANTS = ("tiny", "tiny_decoupled", "resnet50")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(
      f"configs/supcon.py: unknown variant {arg!r}; expected one of {list(VARIANTS)}"
    )
  c = config_lib.sibling_config(__file__, "simclr.py", "tiny" if arg == "tiny_decoupled" else arg)
  # §4.5: τ = 0.1; τ_base = 0.07 as the reference code.
  c.loss = config_lib.loss_config(
    "supcon", label_key="label", temperature=0.1, base_temperature=0.07
  )
  if arg == "tiny_decoupled":
    c.loss.decoupled = True
    c.eval.baselines = True  # the probe beside the random-init one
  if arg == "resnet50":
    c.batch_size = 6144  # §4.5: batch 6,144 for ResNet-50
    # §4.5 / Supp. §11: 350 epochs for ResNet-50 (700 is ResNet-200's).
    c.total_steps = config_lib.steps_for_epochs(350, common.IMAGENET_1K_TRAIN, c.batch_size)
    c.optim.lr = 0.3 * c.batch_size / 256  # unverified (SimCLR's rule)
    c.optim.warmup_steps = 10 * common.IMAGENET_1K_TRAIN // c.batch_size  # unverified (SimCLR's)
  return c
