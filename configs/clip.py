r"""CLIP: image-text contrastive pretraining with the softmax InfoNCE loss.

Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision". Variants:

  digits   a tiny ViT on the bundled handwritten digits (minutes on a 2-core CPU);
  tiny     smaller still: B = 128, 150 steps (under a minute on a 2-core CPU);
  vit_b16  the paper's ViT-B/16 recipe: B = 32,768, AdamW(β2 = 0.98, ε = 1e-6,
           decoupled wd 0.2), lr 5e-4 with 2,000 warm-up steps + cosine, 32 epochs
           of 400M pairs, learnable temperature from 0.07 (clipped at 0.01, i.e.
           logits scaled by at most 100), 512-d embeddings, text Transformer 512
           wide, 12 deep, 8 heads, 77 tokens, causal, EOS pooling; a random square
           crop is the only augmentation.

Sources for vit_b16 (Radford et al., 2021): §2.4-2.5 and Appendix F, Tables 18
(shared hyper-parameters) and 20 (per-ViT learning rate, widths, depths).
Unverified: the crop's area range (0.9-1.0; the paper says only "a random
square crop from resized images"), grad_clip_norm = 1.0 (not in the paper) and
the blockwise-ring block size (ours, not the paper's).

  python -m big_contrast.train --config=configs/clip.py:digits --workdir=/tmp/clip
"""

import ml_collections
from ml_collections import config_dict

from big_contrast import config_lib

# Zero-shot prompts: the phrasings of the bundled captions that name the digit
# in words (see big_contrast/data/digits.py), averaged in embedding space.
DIGITS_TEMPLATES = (
  "a handwritten digit {}",
  "a scanned digit: {}",
  "a photo of the digit {}",
  "the digit {}, handwritten",
  "a small picture of a {}",
  "someone wrote the number {}",
)


VARIANTS = ("digits", "tiny", "vit_b16")


def get_config(arg: str = "digits") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "image_text"
  c.seed = 0
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  c.sharding_rules = [(".*", "fsdp")]

  c.data = config_lib.data_config()
  c.data.name = "bc_digits"  # TFDS name, or a TFDS dataset directory
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.worker_count = 0
  # CLIP trains on one mildly cropped view; digits are not mirror-symmetric.
  c.data.augment = config_lib.augment_config(
    clip_crop_scale=(0.6, 1.0), crop_ratio=(0.8, 1.25), clip_flip_prob=0.0
  )

  c.text = ml_collections.ConfigDict({"tokenizer": "bytes", "max_len": 32})

  c.model = ml_collections.ConfigDict()
  c.model.dtype = "float32"
  c.model.remat = False
  c.model.embed_dim = 64
  c.model.temperature_init = 0.07
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
  c.model.text = ml_collections.ConfigDict(
    dict(width=64, depth=2, heads=4, mlp_dim=128, causal=True, pool="eos")
  )

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "clip"
  c.loss.block_size = config_dict.placeholder(int)  # set → blockwise ring InfoNCE
  # The digits captions repeat, so identical captions in a batch are positives
  # of each other (multi-positive InfoNCE) rather than false negatives.
  c.loss.identical_texts_positive = True

  c.batch_size = 256
  c.total_steps = 600
  c.optim = ml_collections.ConfigDict(
    dict(
      lr=2e-3,
      warmup_steps=100,
      weight_decay=0.05,
      b1=0.9,
      b2=0.98,
      eps=1e-6,
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
  c.eval.at_end = (
    "linear_probe",
    "zero_shot",
    "retrieval",
  )  # see big_contrast/evaluate/standard.py
  c.eval.probe_split = "train"
  c.eval.baselines = True  # raw-pixel and random-init probes beside the trained one
  c.eval.raw_pixels_size = 8  # the digits' native 8×8 resolution
  c.eval.zero_shot_templates = list(DIGITS_TEMPLATES)

  if arg == "digits":
    pass
  elif arg == "tiny":
    c.batch_size = 128
    c.total_steps = 150
    c.optim.warmup_steps = 20
    c.model.image.update(width=64, depth=2, heads=4, mlp_dim=128)
    c.model.text.update(width=64, depth=1, heads=4, mlp_dim=128)
    c.log_every = 25
    c.ckpt_every = 150
    c.eval.baselines = False
  elif arg == "vit_b16":
    c.data.name = config_dict.placeholder(str)  # your converted image-text dataset dir
    c.data.image_size = 224
    c.data.worker_count = 16
    # §2.5: "a random square crop from resized images" is the only augmentation
    # (square → ratio 1; the area range is unverified).
    c.data.augment = config_lib.augment_config(
      clip_crop_scale=(0.9, 1.0), crop_ratio=(1.0, 1.0), clip_flip_prob=0.0
    )
    # §2.4 caps captions at 76 BPE tokens; the released tokenizer's context of 77
    # counts the start and end tokens (openai/CLIP clip/clip.py, tokenize()).
    c.text.max_len = 77
    c.text.tokenizer = config_dict.placeholder(str)  # a SentencePiece .model
    c.model.dtype = "bfloat16"
    c.model.remat = True
    c.model.embed_dim = 512  # Table 20: embedding dimension 512
    c.model.image = ml_collections.ConfigDict(
      dict(name="vit", image_size=224, variant="B/16", posemb="learn", pool="cls")
    )
    # Table 20: text 12 layers, width 512, 8 heads (§2.4: causal mask, [EOS] pooled).
    c.model.text = ml_collections.ConfigDict(
      dict(width=512, depth=12, heads=8, mlp_dim=2048, causal=True, pool="eos")
    )
    c.loss.identical_texts_positive = False
    c.loss.block_size = 1024
    c.batch_size = 32_768  # Table 18
    c.total_steps = 390_625  # Table 18: 32 epochs of 400M pairs (12.8B seen)
    # Table 18: Adam with decoupled weight decay 0.2, β1 0.9, β2 0.98 and ε 1e-6
    # (ViT), 2,000 warm-up iterations, cosine decay; Table 20: lr 5e-4 for ViT-B/16.
    c.optim = ml_collections.ConfigDict(
      dict(
        lr=5e-4,
        warmup_steps=2_000,
        weight_decay=0.2,
        b1=0.9,
        b2=0.98,
        eps=1e-6,
        grad_clip_norm=1.0,
        end_lr_fraction=0.0,
      )
    )
    c.log_every = 100
    c.ckpt_every = 2_000
    c.eval.baselines = False
    c.eval.raw_pixels_size = None
    c.eval.zero_shot_templates = ["a photo of a {}."]
  else:
    raise ValueError(f"configs/clip.py: unknown variant {arg!r}; expected one of {list(VARIANTS)}")
  return c
