r"""Poly-view contrastive learning (Shidani et al., 2024): M > 2 views per example.

`data.num_views` = M augmented views of each example, all encoded in one call;
the loss (`loss.variant`: 'geometric', 'arithmetic' or 'sufficient_statistics',
big_contrast.losses.polyview_loss, whose docstring says how 'arithmetic' follows
the paper's equations rather than its pseudo-code) treats the other M−1 views as
positives. Built on configs/simclr.py. Variants:

  tiny      the bundled digits with M = 4 views, B = 64 examples (256 images), 150 steps;
  tiny_mv_infonce, tiny_mv_dhel
            `tiny` with the multi-view objectives of Koromilas et al., 2025 (arXiv
            2507.06979; pakoromilas/Multi-View-CL models/losses.py): one term per
            example over all M views, MV-InfoNCE (all interactions in one InfoNCE)
            and MV-DHEL (alignment decoupled from uniformity, same-view
            negatives), temperature 0.2 as `tiny`;
  resnet50  the paper's compute-matched ImageNet setting: ResNet-50, M = 8 views of
            B = 256 examples, 128 epochs, SimCLR augmentations and BN head, LARS
            (lr 0.3·(B·M)/256, weight decay 1e-6), temperature 0.1.

Sources for resnet50: Shidani et al., ICLR 2024 (arXiv 2403.05490), abstract:
poly-view models on ImageNet-1k at batch size 256 for 128 epochs. Unverified (the
paper's appendix and code were not reachable): M = 8, the optimizer, learning
rate and its scaling with B·M, weight decay, warm-up and temperature; they are
SimCLR's ResNet-50 settings (configs/simclr.py) carried over.

  python -m big_contrast.train --config=configs/polyview.py:tiny --workdir=/tmp/polyview
"""

from big_contrast import config_lib

common = config_lib.sibling_module(__file__, "common.py")

VARIANTS = ("tiny", "tiny_mv_infonce", "tiny_mv_dhel", "resnet50")


def get_config(arg: str = "tiny"):
  if arg not in VARIANTS:
    raise ValueError(
      f"configs/polyview.py: unknown variant {arg!r}; expected one of {list(VARIANTS)}"
    )
  c = config_lib.sibling_config(__file__, "simclr.py", "resnet50" if arg == "resnet50" else "tiny")
  c.loss = config_lib.loss_config("polyview", temperature=c.loss.temperature, variant="geometric")
  if arg.startswith("tiny"):
    c.data.num_views = 4
    c.batch_size = 64
    if arg != "tiny":
      c.loss = config_lib.loss_config(arg.removeprefix("tiny_"), temperature=c.loss.temperature)
      c.eval.baselines = True  # the probe beside the random-init one
  else:
    c.data.num_views = 8  # unverified
    c.batch_size = 256  # abstract: batch size 256
    c.total_steps = config_lib.steps_for_epochs(128, common.IMAGENET_1K_TRAIN, c.batch_size)
    c.optim.lr = 0.3 * c.batch_size * c.data.num_views / 256  # unverified
    c.optim.warmup_steps = 10 * common.IMAGENET_1K_TRAIN // c.batch_size  # unverified
    c.loss.temperature = 0.1  # unverified
  return c
