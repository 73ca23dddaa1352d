"""A frozen encoder on the current mesh: what evaluators, and users from Python, read.

`Encoder(trainee, state, tokenizer)` wraps a train state (the trainer hands one
to the evaluators); `load_encoder(workdir)` restores one from a run directory.
Host-array methods embed whole arrays, batched over the mesh:

    enc = load_encoder("workdir/clip_digits")
    img = enc.encode_image(images_uint8)      # [N, H, W, 3] → [N, D], L2-normalised
    txt = enc.encode_text(["a photo of a 7"])  # [N, D], L2-normalised
    ids = enc.tokenize(["a photo of a 7"])     # int32 [N, L]

`fn(method)` gives the jitted `model.<method>` on global arrays, for feature
extraction over a dataset (`big_contrast.evaluate.features`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from big_contrast import checkpoint, data, sharding, tasks
from big_contrast import state as state_lib


class Encoder:
  """A model's frozen functions, its config, its tokenizer and the mesh it runs on."""

  def __init__(self, trainee: state_lib.Trainee, state: dict, tokenizer=None, *, step=None):
    self.trainee, self.state, self.tokenizer = trainee, state, tokenizer
    self.config: ml_collections.ConfigDict = trainee.config
    self.mesh = trainee.mesh
    self.modalities = trainee.task.modalities
    self.step = int(jax.device_get(state["step"])) if step is None else step
    self._fns: dict[str, Callable] = {}

  def fn(self, method: str, **static) -> Callable[[jax.Array], jax.Array]:
    """`model.<method>(x, **static)` jitted and closed over the parameters: global
    [B, ...] → [B, d] (`image_block_features`: [B, last_blocks, d])."""
    key = (method, tuple(sorted(static.items())))
    if key not in self._fns:
      params, rest = self.state["params"], self.state["rest"]
      fn = self.trainee.apply_fn(method, **static)
      self._fns[key] = functools.partial(fn, params, rest)
    return self._fns[key]

  def random_init(self, seed: int) -> Encoder:
    """The same model at a fresh random initialisation (the random-init baseline)."""
    return Encoder(self.trainee, self.trainee.init_model(seed), self.tokenizer, step=0)

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """Texts → int32 [N, L] token ids, as the text tower reads them."""
    if self.tokenizer is None:
      if "text" in self.modalities:
        raise ValueError(
          "this run has no tokenizer (config.text.tokenizer is not set); an imported run "
          "gets one from `python -m big_contrast.interop import ... --tokenizer FILE`"
        )
      raise ValueError(f"a {self.config.task!r} model has no text tower to tokenize for")
    return self.tokenizer.encode_batch(list(texts), self.config.text.max_len)

  def image_features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """uint8 [N, H, W, 3] → backbone features [N, width] (before any projection)."""
    self._needs("image")
    return self._map(self.fn("image_features"), np.asarray(images), batch_size)

  def encode_image(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """uint8 [N, H, W, 3] → projected, L2-normalised embeddings [N, D]."""
    self._needs("image")
    return self._map(self.fn("encode_image"), np.asarray(images), batch_size)

  def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Texts → projected, L2-normalised embeddings [N, D]."""
    self._needs("text")
    return self._map(self.fn("encode_text"), self.tokenize(texts), batch_size)

  def _needs(self, modality: str) -> None:
    if modality not in self.modalities:
      raise ValueError(
        f"a {self.config.task!r} model embeds {sorted(self.modalities)}, not {modality}"
      )

  def _map(self, fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    """`fn` over the rows of a host array every process holds whole, in global batches."""
    n, devices = len(x), self.mesh.size
    batch = max(devices, -(-min(batch_size, max(n, 1)) // devices) * devices)
    spec = sharding.batch_sharding(self.mesh)
    out = []
    for start in range(0, n, batch):
      rows = x[start : start + batch]
      padded = np.concatenate([rows, np.zeros((batch - len(rows),) + rows.shape[1:], rows.dtype)])
      glob = jax.make_array_from_callback(padded.shape, spec, lambda idx, p=padded: p[idx])
      y = multihost_utils.process_allgather(fn(glob), tiled=True)
      out.append(np.asarray(y)[: len(rows)])
    if not out:
      raise ValueError("nothing to encode: the input has no rows")
    return np.concatenate(out)


def _mesh_for(config: ml_collections.ConfigDict):
  """The run's mesh if it fits the devices here, else data parallel over all of them."""
  try:
    return sharding.make_mesh(config.mesh)
  except ValueError:
    return sharding.make_mesh({"data": -1, "fsdp": 1})


def load_encoder(workdir: str, *, step: int | None = None, mesh=None) -> Encoder:
  """The frozen encoder of a run directory (trained here or imported), on `mesh`.

  An imported run (`python -m big_contrast.interop import`) is a checkpoint at
  step 0 whose config builds the source's architecture; its tokenizer spec
  names the vocabulary file copied into it. Without a tokenizer (none given at
  import), images still encode and `encode_text` says what is missing.

  workdir: a run directory (`<workdir>/checkpoints`); `step`: a checkpoint step
  (default the newest readable one); `mesh`: default the run's own mesh when it
  fits the devices here, else data parallel over all of them. Restores the
  parameters onto that mesh; the optimizer state is restored too (it is part of
  the saved state) but not used.
  """
  ckpt = checkpoint.Checkpointer(os.path.join(os.fspath(workdir), "checkpoints"))
  config = ckpt.restore_config(step)
  mesh = mesh or _mesh_for(config)
  tokenizer = None
  if tasks.get(config.task).needs_tokenizer and config.text.tokenizer:
    tokenizer = data.make_tokenizer(config.text.tokenizer, config.data.data_dir)
  trainee = state_lib.Trainee(config, mesh, vocab_size=tokenizer and tokenizer.vocab_size)
  restored = ckpt.restore(trainee.abstract_state, step=step)
  ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
  step, state = restored
  return Encoder(trainee, state, tokenizer, step=step)
