"""big_contrast: contrastive pretraining in JAX, from one CPU to a TPU pod."""

from setuptools import find_packages, setup

setup(
  name="big_contrast",
  version="0.1.0",
  description="Contrastive pretraining (CLIP, SigLIP, SimCLR, ...) in JAX/Flax at pod scale.",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  packages=find_packages(include=["big_contrast", "big_contrast.*"]),
  python_requires=">=3.10",
  install_requires=[
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    # Flax's NNX API still moves between minor releases; stay on the tested one.
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "tensorflow-datasets>=4.9.10",
    "array-record>=0.8.1",
    "ml-collections>=1.1.0",
    "clu>=0.0.12",
    "tensorboardX>=2.6.2",
    "einops>=0.8.0",
    "numpy>=1.26",
    "Pillow>=10.0",
    # JPEG/PNG decode and resize on the host: several times faster than Pillow's
    # resize at 224 px (tools/bench_data.py).
    "opencv-python-headless>=4.10",
    "scikit-learn>=1.5",
    "sentencepiece>=0.2.0",
    # CLIP's tokenizer (big_contrast/data/bpe.py): its text cleaning and Unicode-class patterns.
    "ftfy>=6.1",
    "regex>=2023.0",
    "absl-py>=2.1",
    "etils>=1.7",
    "importlib_resources>=6.0",  # TFDS registers builders through it
    # report.png at the end of every run (big_contrast/report.py): a core dependency,
    # since every run draws one; pure wheels plus small compiled ones, no GUI toolkit.
    "matplotlib>=3.8",
  ],
  entry_points={
    "console_scripts": [
      "big_contrast = big_contrast.cli:main",
      *(
        f"big_contrast-{name} = big_contrast.cli:{name.replace('-', '_')}"
        for name in (
          "train",
          "evaluate",
          "report",
          "convert-image-folder",
          "convert-image-text",
          "convert-multilabel",
          "train-tokenizer",
          "tpu-vm",
          "slurm-launch",
          "run-until-done",
        )
      ),
    ]
  },
  extras_require={
    # ruff: the formatter and linter .ci/run checks (pinned: its output is the style).
    # wandb and tensorboard: the tests run the W&B writer offline and read our event
    # files with TensorBoard's own loader.
    # pytest-xdist: the suite runs in two processes (`-n 2`), one per core of a 2-core CI machine.
    "test": [
      "pytest>=8.0",
      "pytest-xdist>=3.6",
      "gensim>=4.3",
      "ruff==0.17.6",
      "wandb>=0.19",
      "tensorboard>=2.16",
    ],
    # config.writers=("tensorboard", "wandb"): Weights & Biases beside TensorBoard.
    "wandb": ["wandb>=0.19"],
    # `tensorboard --logdir DIR/tb` (it reads our event files without TensorFlow).
    "tensorboard": ["tensorboard>=2.16"],
    # The bundled text data (`bc_lee`, configs/simcse.py:tiny) is gensim's Lee corpus.
    "text": ["gensim>=4.3"],
    # TensorFlow is never needed; it only adds clu's TF-based metric writers
    # and TFDS's TF-backed datasets for users who want them.
    "tf": ["tensorflow>=2.16"],
    # tools/compile_for.py: the TPU compiler (libtpu), to compile for a TPU slice on any
    # machine; tests/test_compile_for.py's `tpu` tests. A TPU VM needs it to train, too.
    "tpu": ["jax[tpu]>=0.10.2"],
    # tools/bench_data.py: real photographs from scikit-image, and the tf.data
    # pipeline it compares against (install in a separate environment).
    "bench": ["scikit-image>=0.22", "tensorflow-cpu>=2.16", "array-record>=0.8.1"],
    # Reading PyTorch .pt/.bin checkpoints in big_contrast.interop (.safetensors and
    # .npz need nothing); tools/make_interop_fixtures.py's reference libraries
    # (open_clip_torch, timm, transformers) go in a separate environment.
    "torch": ["torch>=2.4"],
  },
)
