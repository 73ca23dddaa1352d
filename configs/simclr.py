r"""SimCLR: two augmented views, NT-Xent loss (Chen et al., 2020).

Variants:
  digits   a tiny ViT on the bundled handwritten digits (minutes on a 2-core CPU);
  tiny     smaller still: B = 128, 150 steps (under a minute on a 2-core CPU);
  tiny_resnet  `tiny` with a narrow ResNet-18 (BatchNorm, CIFAR stem) and a BN head;
  resnet50 the paper's ResNet-50 recipe: B = 4,096, LARS with lr 0.3·B/256 = 4.8,
           weight decay 1e-6, 10 warm-up epochs then cosine over 100 ImageNet epochs,
           temperature 0.1, the loss summed over the two views, 2-layer
           projection head (2048 → 128) with BatchNorm;
  vit_b16  ViT-B/16 at B = 4,096, temperature 0.2, AdamW (wd 0.1) with lr
           1.5e-4·B/256, 40 warm-up epochs and cosine decay over 300 ImageNet
           epochs, 3-layer BN projection head (4096 → 256): the ViT recipe of Chen,
           Xie & He, 2021 ("An Empirical Study of Training Self-Supervised Vision
           Transformers", MoCo v3), with the NT-Xent loss;
  tiny_momentum  `tiny` with a momentum (EMA) key encoder, MoCo v3 style
           (loss.momentum = 0.99 raised to 1 along a cosine, moco-v3 main_moco.py
           --moco-m 0.99 --moco-m-cos): each view's embedding is contrasted
           with the EMA encoder's keys of the other view; the sum over the two
           directions as MoCo v3's ctr(q1, k2) + ctr(q2, k1) (without its 2τ
           factor). No predictor head (MoCo v3 has one on the online branch).

Sources. resnet50: Chen et al., 2020, §2.3 ("default setting") and App. B.1
("weight decay of 10^-6"), and the SimCLR (v1) release of google-research/simclr
(commit 0075cc0: run.py flag defaults lr 0.3 per 256 scaled linearly, 10 warm-up
epochs, weight_decay 1e-6, temperature 0.1, LARS momentum 0.9, colour-jitter
strength 1.0, blur on, and the README's ImageNet ResNet-50 command with
--weight_decay=1e-6; objective.py: the loss is loss_a + loss_b, the sum of the
two views' means, hence loss.sum_over_views; model_util.py: step counts, LARS
excludes BN and biases from decay, BN in every head layer; data_util.py: crop
0.08-1, blur σ 0.1-2.0 with p 0.5). The repository's later (SimCLRv2, commit 244e712) run.py
defaults to weight_decay 1e-4 and its README's command passes 1e-4 with sqrt
learning-rate scaling: that is SimCLRv2's recipe (its README notes the two
versions were pretrained with different weight decays), not the paper's.
vit_b16: facebookresearch/moco-v3, CONFIG.md (ViT-Base:
AdamW, lr 1.5e-4 per 256, wd 0.1, 300 epochs, 40 warm-up, T = 0.2, B = 4,096),
main_moco.py (linear lr scaling; 256-d output, 4096 hidden) and moco/builder.py
(3-layer projector, BN after each hidden layer). Deviations in vit_b16: MoCo v3
adds a momentum encoder and predictor, freezes the patch projection and uses
BYOL's asymmetric augmentations; we keep SimCLR's symmetric ones, and
grad_clip_norm = 1.0 is ours (MoCo v3 does not clip).

  python -m big_contrast.train --config=configs/simclr.py:digits --workdir=/tmp/simclr
"""

import ml_collections

from big_contrast import config_lib

common = config_lib.sibling_module(__file__, "common.py")

VARIANTS = ("digits", "tiny", "tiny_resnet", "tiny_momentum", "resnet50", "vit_b16")


def get_config(arg: str = "digits") -> ml_collections.ConfigDict:
  if arg not in VARIANTS:
    raise ValueError(
      f"configs/simclr.py: unknown variant {arg!r}; expected one of {list(VARIANTS)}"
    )
  c = config_lib.base_config("multiview")
  common.digits(c)
  c.data.num_views = 2
  # Digits are not mirror-symmetric, so no flips; colour jitter is mild on grey ink.
  c.data.augment = config_lib.augment_config(
    crop_scale=(0.3, 1.0),
    crop_ratio=(0.75, 1.333),
    flip_prob=0.0,
    jitter_prob=0.8,
    jitter_strength=0.5,
    grayscale_prob=0.2,
    blur_prob=0.5,
    blur_sigma=(0.1, 0.5),
    solarize_prob=0.0,
  )
  c.model.embed_dim = 64
  c.model.head_hidden = 128
  c.model.head_layers = 2
  c.model.head_batch_norm = False
  c.loss = config_lib.loss_config("ntxent", temperature=0.2)
  c.optim = config_lib.optim_config(
    lr=2e-3,
    warmup_steps=100,
    weight_decay=0.05,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    grad_clip_norm=1.0,
    end_lr_fraction=0.01,
  )
  c.eval.at_end = ("linear_probe", "knn")

  if arg in ("tiny", "tiny_resnet", "tiny_momentum"):
    common.tiny(c)
    if arg == "tiny_momentum":
      c.loss = config_lib.loss_config("ntxent", temperature=0.2, momentum=0.99, sum_over_views=True)
      c.eval.baselines = True  # the probe beside the random-init one
    if arg == "tiny_resnet":
      c.model.image = ml_collections.ConfigDict(
        dict(name="resnet", depth=18, base_width=8, norm="batch", stem="cifar")
      )
      c.model.head_batch_norm = True
  elif arg == "resnet50":
    # device=True: the host decodes, crops and flips (~700 examples/s per core with
    # grain); colour jitter, grayscale and blur run in the train step, which would
    # otherwise cost the host ~2.6x more per example (tools/bench_data.py).
    common.real_scale_images(c)
    c.data.augment = config_lib.augment_config(
      crop_scale=(0.08, 1.0),
      crop_ratio=(0.75, 1.333),
      flip_prob=0.5,
      jitter_prob=0.8,
      jitter_strength=1.0,
      grayscale_prob=0.2,
      blur_prob=0.5,
      blur_sigma=(0.1, 2.0),
      solarize_prob=0.0,
      device=True,
    )
    c.model.dtype = "bfloat16"
    c.model.embed_dim = 128
    c.model.head_hidden = 2048
    c.model.head_layers = 2
    c.model.head_batch_norm = True
    c.model.image = ml_collections.ConfigDict(
      dict(name="resnet", depth=50, norm="batch", stem="imagenet")
    )
    # run.py --temperature default (paper Table 5: best τ); objective.py sums the two
    # views' losses, and under LARS the excluded parameters' steps scale with it.
    c.loss = config_lib.loss_config("ntxent", temperature=0.1, sum_over_views=True)
    c.batch_size = 4096
    # 100 epochs of ImageNet-1k, as model_util.get_train_steps; warm-up 10 epochs.
    c.total_steps = config_lib.steps_for_epochs(100, common.IMAGENET_1K_TRAIN, c.batch_size)
    # LARS is built by big_contrast.optim.make_optimizer (config.optim.name).
    c.optim = config_lib.optim_config(
      name="lars",
      lr=0.3 * c.batch_size / 256,
      weight_decay=1e-6,
      momentum=0.9,
      trust_coefficient=0.001,
      grad_clip_norm=0.0,
      end_lr_fraction=0.0,
      warmup_steps=10 * common.IMAGENET_1K_TRAIN // c.batch_size,
    )
    c.log_every = 100
    c.ckpt_every = 2_500
  elif arg == "vit_b16":
    common.real_scale_images(c)
    c.data.augment = config_lib.augment_config(
      crop_scale=(0.08, 1.0),
      crop_ratio=(0.75, 1.333),
      flip_prob=0.5,
      jitter_prob=0.8,
      jitter_strength=1.0,
      grayscale_prob=0.2,
      blur_prob=0.5,
      solarize_prob=0.0,
      device=True,
    )
    c.model.dtype = "bfloat16"
    c.model.remat = True
    # moco-v3 main_moco.py: --moco-dim 256, --moco-mlp-dim 4096; moco/builder.py:
    # 3-layer projector with BatchNorm after each hidden layer.
    c.model.embed_dim = 256
    c.model.head_hidden = 4096
    c.model.head_layers = 3
    c.model.head_batch_norm = True
    c.model.image = ml_collections.ConfigDict(
      dict(name="vit", image_size=224, variant="B/16", posemb="sincos2d", pool="cls")
    )
    c.loss.temperature = 0.2  # moco-v3 CONFIG.md, ViT-Base: --moco-t=.2
    c.batch_size = 4096
    # 300 epochs of ImageNet-1k; warm-up 40 epochs.
    c.total_steps = config_lib.steps_for_epochs(300, common.IMAGENET_1K_TRAIN, c.batch_size)
    # CONFIG.md, ViT-Base: AdamW, lr 1.5e-4 per 256 (×4096/256 = 2.4e-3), wd 0.1;
    # torch AdamW's default betas and ε.
    c.optim = config_lib.optim_config(
      lr=1.5e-4 * c.batch_size / 256,
      weight_decay=0.1,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_clip_norm=1.0,
      end_lr_fraction=0.0,
      warmup_steps=40 * common.IMAGENET_1K_TRAIN // c.batch_size,
    )
    c.log_every = 100
    c.ckpt_every = 2_500
  return c
