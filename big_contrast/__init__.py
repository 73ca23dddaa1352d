"""big_contrast: contrastive pretraining in JAX, from one CPU to a TPU pod."""

__version__ = "0.1.0"
