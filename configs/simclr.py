r"""SimCLR: two augmented views, NT-Xent loss (Chen et al., 2020).

Variants:
  digits   a tiny ViT on the bundled handwritten digits (minutes on a 2-core CPU);
  tiny     smaller still: B = 128, 150 steps (under a minute on a 2-core CPU);
  tiny_resnet  `tiny` with a narrow ResNet-18 (BatchNorm, CIFAR stem) and a BN head;
  resnet50 the paper's ResNet-50 recipe: B = 4,096, LARS with lr 0.3·B/256 = 4.8,
           weight decay 1e-6, 10 warm-up epochs then cosine over 100 ImageNet epochs,
           temperature 0.1, 2-layer projection head (2048 → 128) with BatchNorm;
  vit_b16  ViT-B/16 at B = 4,096, temperature 0.2, AdamW (wd 0.1) with lr
           1.5e-4·B/256, 40 warm-up epochs and cosine decay over 300 ImageNet
           epochs, 3-layer BN projection head (4096 → 256): the ViT recipe of Chen,
           Xie & He, 2021 ("An Empirical Study of Training Self-Supervised Vision
           Transformers", MoCo v3), with the NT-Xent loss.

Sources. resnet50: Chen et al., 2020, §2.3 ("default setting") and App. B.1, and
the v1 code google-research/simclr (run.py flag defaults: lr 0.3 per 256 scaled
linearly, 10 warm-up epochs, wd 1e-6, temperature 0.1, LARS momentum 0.9,
colour-jitter strength 1.0, blur on; model_util.py: step counts, LARS excludes
BN and biases from decay, BN in every head layer; data_util.py: crop 0.08-1,
blur σ 0.1-2.0 with p 0.5). vit_b16: facebookresearch/moco-v3, CONFIG.md (ViT-Base:
AdamW, lr 1.5e-4 per 256, wd 0.1, 300 epochs, 40 warm-up, T = 0.2, B = 4,096),
main_moco.py (linear lr scaling; 256-d output, 4096 hidden) and moco/builder.py
(3-layer projector, BN after each hidden layer). Deviations in vit_b16: MoCo v3
adds a momentum encoder and predictor, freezes the patch projection and uses
BYOL's asymmetric augmentations; we keep SimCLR's symmetric ones, and
grad_clip_norm = 1.0 is ours (MoCo v3 does not clip).

  python -m big_contrast.train --config=configs/simclr.py:digits --workdir=/tmp/simclr
"""

import ml_collections
from ml_collections import config_dict

from big_contrast import config_lib

VARIANTS = ("digits", "tiny", "tiny_resnet", "resnet50", "vit_b16")


def get_config(arg: str = "digits") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "multiview"
  c.seed = 0
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  c.sharding_rules = [(".*", "fsdp")]

  c.data = config_lib.data_config()
  c.data.name = "bc_digits"
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.num_views = 2
  c.data.worker_count = 0
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

  c.model = ml_collections.ConfigDict()
  c.model.dtype = "float32"
  c.model.remat = False
  c.model.embed_dim = 64
  c.model.head_hidden = 128
  c.model.head_layers = 2
  c.model.head_batch_norm = False
  c.model.image = ml_collections.ConfigDict(
    dict(
      name="vit",
      image_size=32,
      width=96,
      depth=4,
      heads=4,
      mlp_dim=192,
      patch=8,
      posemb="learn",
      pool="gap",
    )
  )

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "ntxent"
  c.loss.temperature = 0.2

  c.batch_size = 256
  c.total_steps = 600
  c.optim = ml_collections.ConfigDict(
    dict(
      lr=2e-3,
      warmup_steps=100,
      weight_decay=0.05,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_clip_norm=1.0,
      end_lr_fraction=0.01,
    )
  )
  c.microbatches = 1  # k > 1: exact gradient caching, activations for B/k at a time
  c.max_nonfinite_steps = 10
  # Continual pretraining: parameters by name from a .npz or a big_contrast run dir;
  # adapt='repeat'|'zero' adapts a first layer with other input channels.
  c.init_from = ml_collections.ConfigDict(
    dict(path=config_dict.placeholder(str), rename=(), adapt=config_dict.placeholder(str))
  )
  c.debug = ""  # 'on' | 'nojit': NaN checks, shapes and shardings (docs/debugging.md)

  c.log_every = 50
  c.ckpt_every = 200
  c.keep_ckpts = 3

  # Evaluators run during training, e.g. ({"evaluator": "knn", "every": 500},) or with
  # other data: {"evaluator": "linear_probe", "every": 1000, "name": "probe_grid",
  # "data": {"name": "bc_digits_grid"}} (see big_contrast/evaluate/standard.py).
  c.evals = ()
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256
  c.eval.at_end = ("linear_probe", "knn")  # see big_contrast/evaluate/standard.py
  c.eval.probe_split = "train"
  c.eval.baselines = True
  c.eval.raw_pixels_size = 8  # the digits' native 8×8 resolution
  c.eval.zero_shot_templates = []

  if arg == "digits":
    pass
  elif arg in ("tiny", "tiny_resnet"):
    c.batch_size = 128
    c.total_steps = 150
    c.optim.warmup_steps = 20
    c.model.image.update(width=64, depth=2, heads=4, mlp_dim=128)
    c.log_every = 25
    c.ckpt_every = 150
    c.eval.baselines = False
    if arg == "tiny_resnet":
      c.model.image = ml_collections.ConfigDict(
        dict(name="resnet", depth=18, base_width=8, norm="batch", stem="cifar")
      )
      c.model.head_batch_norm = True
  elif arg == "resnet50":
    # device=True: the host decodes, crops and flips (~700 examples/s per core with
    # grain); colour jitter, grayscale and blur run in the train step, which would
    # otherwise cost the host ~2.6x more per example (tools/bench_data.py).
    c.data.name = config_dict.placeholder(str)  # your converted image dataset dir
    c.data.image_size = 224
    c.data.worker_count = 16
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
    c.loss.temperature = 0.1  # run.py --temperature default (paper Table 5: best τ)
    c.batch_size = 4096
    # 100 epochs of ImageNet-1k (1,281,167 images): N·epochs // B + 1, as in
    # model_util.get_train_steps; warm-up 10 epochs = 10·N // B.
    c.total_steps = 31_279
    # LARS is built by big_contrast.optim.make_optimizer (config.optim.name).
    c.optim = ml_collections.ConfigDict(
      dict(
        name="lars",
        lr=0.3 * c.batch_size / 256,
        warmup_steps=3_127,
        weight_decay=1e-6,
        momentum=0.9,
        trust_coefficient=0.001,
        grad_clip_norm=0.0,
        end_lr_fraction=0.0,
      )
    )
    c.log_every = 100
    c.ckpt_every = 2_500
    c.eval.baselines = False
    c.eval.raw_pixels_size = None
  elif arg == "vit_b16":
    c.data.name = config_dict.placeholder(str)  # your converted image dataset dir
    c.data.image_size = 224
    c.data.worker_count = 16
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
    # 300 epochs of ImageNet-1k (N·300 // B + 1); warm-up 40 epochs (40·N // B).
    c.total_steps = 93_836
    # CONFIG.md, ViT-Base: AdamW, lr 1.5e-4 per 256 (×4096/256 = 2.4e-3), wd 0.1;
    # torch AdamW's default betas and ε.
    c.optim = ml_collections.ConfigDict(
      dict(
        lr=1.5e-4 * c.batch_size / 256,
        warmup_steps=12_511,
        weight_decay=0.1,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        grad_clip_norm=1.0,
        end_lr_fraction=0.0,
      )
    )
    c.log_every = 100
    c.ckpt_every = 2_500
    c.eval.baselines = False
    c.eval.raw_pixels_size = None
  else:
    raise ValueError(
      f"configs/simclr.py: unknown variant {arg!r}; expected one of {list(VARIANTS)}"
    )
  return c
