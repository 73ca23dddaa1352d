"""Import a public checkpoint as a big_contrast run directory; export a run to a public format.

`import_checkpoint(source, weights, out, arch=..., tokenizer=...)` reads the
weights, builds our config for the source's architecture, converts every
tensor by the source's name table (failing, before anything is written, on the
first tensor whose name or shape does not fit) and writes `out/` as a run
directory: an Orbax checkpoint at step 0 with its config, and the tokenizer
file copied to `out/tokenizer/`. `big_contrast.evaluate.load_encoder(out)`
evaluates it; `--config.init_from.path=out` continues pretraining from it.

`export_checkpoint(workdir, to, out)` writes a run's parameters in a source's
layout, after checking that the run's `config.model` is that architecture.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import types

import jax
import ml_collections
import numpy as np

from big_contrast import checkpoint, sharding
from big_contrast import state as state_lib
from big_contrast.data import bundled
from big_contrast.interop import big_vision, common, hf, openclip, tensors, timm
from big_contrast.interop import rules as rules_lib
from big_contrast.models import pretrained

# Each converter module provides: `architecture(arch, weights) -> dict` (the
# source's own description), `config(arch, *, image_size, tokenizer, source)` (our
# run config), `rules(arch, source) -> [Rule]`, `IGNORED` (source names that are
# not parameters) and `resample(source, arch, image_size)`; optionally
# `prepare(source)` (loading fix-ups) and `arch_of_config(model, max_len, vocab)`.
SOURCES: dict[str, types.ModuleType] = {
  "openclip": openclip,
  "timm": timm,
  "hf": hf,
  "big_vision": big_vision,
}
# The tokenizer spec kind of each source's vocabulary file (see data.bundled).
TOKENIZER_KINDS = {"openclip": "clip_bpe", "hf": "hf", "big_vision": "siglip"}
# What an export writes.
EXPORT_SUFFIX = {"openclip": ".safetensors", "timm": ".safetensors", "hf": ".safetensors"}
EXPORT_SUFFIX["big_vision"] = ".npz"


def _converter(name: str) -> types.ModuleType:
  if name not in SOURCES:
    raise ValueError(f"unknown source {name!r}; expected one of {sorted(SOURCES)}")
  return SOURCES[name]


def _tokenizer(source: str, path: str | None, out: str):
  """(spec of the copy in `out`, files to copy, tokenizer) for the user's vocabulary file."""
  if path is None:
    return None, [], None
  if source not in TOKENIZER_KINDS:
    raise ValueError(f"--tokenizer: {source} checkpoints have no text tower")
  kind = TOKENIZER_KINDS[source]
  tok = bundled.make_tokenizer(f"{kind}:{path}")
  files = [path]
  beside = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
  if kind == "hf" and path.endswith(".json") and os.path.isfile(beside):
    files.append(beside)  # its pad_token
  copy = os.path.join(os.path.abspath(out), "tokenizer", os.path.basename(path))
  return f"{kind}:{copy}", files, tok


def _leaf_names(tree) -> list[tuple[str, tuple]]:
  return [
    (jax.tree_util.keystr(p, simple=True, separator="/"), tuple(leaf.shape))
    for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


def import_checkpoint(
  source: str,
  weights: str,
  out: str,
  *,
  arch: str | None = None,
  tokenizer: str | None = None,
  image_size: int | None = None,
  mesh=None,
) -> ml_collections.ConfigDict:
  """Converts `weights` (a `source` checkpoint) into the run directory `out`; returns its config.

  image_size: load at this resolution (position embeddings resampled as the
  source's own loaders do); default the architecture's. Nothing is written when
  the weights, architecture or tokenizer do not fit; `out` must not exist or be empty.
  """
  conv = _converter(source)
  out = os.path.abspath(out)
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise FileExistsError(f"--out {out} exists and is not empty")
  tree = tensors.read_weights(weights)
  if hasattr(conv, "prepare"):
    tree = conv.prepare(tree)
  spec = conv.architecture(arch, weights)
  tok_spec, tok_files, tok = _tokenizer(source, tokenizer, out)
  native = conv.config(spec, source=tree).model.image.image_size
  config = conv.config(spec, image_size=image_size, tokenizer=tok_spec, source=tree)
  if image_size and image_size != native:
    tree = conv.resample(tree, spec, image_size)
  if tok is not None and tok.vocab_size > config.model.text.vocab_size:
    raise ValueError(
      f"--tokenizer {tokenizer} has {tok.vocab_size} ids, the checkpoint's text embedding "
      f"{config.model.text.vocab_size}"
    )
  table = conv.rules(spec, tree)
  where = f"{weights} ({source})"
  rules_lib.check_names(table, tree, ignore=conv.IGNORED, where=where)  # before building the model
  mesh = mesh or sharding.make_mesh(config.mesh)
  trainee = state_lib.Trainee(config, mesh, vocab_size=None)
  abstract = trainee.abstract_state["params"]
  target = dict(_leaf_names(abstract))
  ours = rules_lib.to_ours(table, tree, target, ignore=conv.IGNORED, where=where)

  partial = tempfile.mkdtemp(prefix=".import-", dir=os.path.dirname(out))
  try:
    if tok_files:
      os.makedirs(os.path.join(partial, "tokenizer"))
      for f in tok_files:
        shutil.copy(f, os.path.join(partial, "tokenizer", os.path.basename(f)))
    state = _state(trainee, ours)
    ckpt = checkpoint.Checkpointer(os.path.join(partial, "checkpoints"), async_save=False)
    ckpt.save(0, state, config=config.to_dict())
    ckpt.close()
    if os.path.isdir(out):
      os.rmdir(out)
    os.rename(partial, out)
  finally:
    if os.path.isdir(partial):
      shutil.rmtree(partial)
  return config


def _host_device():
  try:
    return jax.devices("cpu")[0]
  except RuntimeError:  # JAX_PLATFORMS leaves the CPU out
    return jax.devices()[0]


def _state(trainee: state_lib.Trainee, ours: dict) -> dict:
  """The train state at step 0 with the converted parameters and a fresh optimizer state.

  Held on the host: Orbax writes host arrays as they are, where a state placed on
  the mesh would be copied back shard by shard; `load_encoder` and
  `config.init_from` restore it onto whatever mesh they run on.
  """
  abstract = trainee.abstract_state
  params = jax.tree_util.tree_map_with_path(
    lambda p, _: ours[jax.tree_util.keystr(p, simple=True, separator="/")], abstract["params"]
  )
  rest = abstract["rest"]
  if jax.tree.leaves(rest):
    # Non-trainable variables (fixed tables, statistics) as the model initialises them.
    rest = trainee.init(trainee.config.seed)["rest"]
  # One compiled call on the host's CPU (not an op per optimizer leaf, nor an
  # accelerator that may not hold the whole optimizer state).
  with jax.default_device(_host_device()):
    opt_state = jax.jit(trainee.tx.init)(params)
  state = dict(step=np.zeros((), np.int32), params=params, rest=rest, opt_state=opt_state)
  return jax.device_get(state)


# Training settings, not architecture: an export checks only whether a bias exists.
_NOT_ARCHITECTURE = ("temperature_init", "min_temperature", "bias_init")


def _check_architecture(run: ml_collections.ConfigDict, wanted: ml_collections.ConfigDict, name):
  """Fails naming the first `config.model` key where the run is not architecture `name`."""
  ours, want = common.effective_model(run.model), common.effective_model(wanted.model)
  diffs = []
  if "text" in want:
    for key in _NOT_ARCHITECTURE:
      ours[key], want[key] = ours[key] is not None, want[key] is not None
    if run.text.max_len != wanted.text.max_len:
      diffs.append(("config.text.max_len", run.text.max_len, wanted.text.max_len))
  else:
    ours, want = {"image": ours["image"]}, {"image": want["image"]}
  diffs += common.model_differences(ours, want, "config.model")
  if diffs:
    key, a, b = diffs[0]
    more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
    raise ValueError(f"the run is not architecture {name}: {key}={a!r}, it needs {b!r}{more}")


def export_checkpoint(
  workdir: str, to: str, out: str, *, arch: str | None = None, step: int | None = None
) -> dict:
  """Writes the run's parameters in `to`'s layout to `out`; returns the source architecture.

  arch: the source's architecture (as for an import); for OpenCLIP it may be
  left out and is read off the run's config.
  """
  conv = _converter(to)
  if not out.endswith(EXPORT_SUFFIX[to]):
    raise ValueError(f"--out {out}: a {to} export is a {EXPORT_SUFFIX[to]} file")
  ckpt = checkpoint.Checkpointer(os.path.join(os.fspath(workdir), "checkpoints"))
  config = ckpt.restore_config(step)
  ckpt.close()
  two_tower = config.task == "image_text"
  if not two_tower and to != "timm":
    raise ValueError(f"a {config.task!r} run has no {to} two-tower layout; try --to timm")
  ours = pretrained.read_checkpoint(workdir, step=step, collections=("params",))
  run = config.copy_and_resolve_references()
  if two_tower:
    with run.unlocked():
      run.model.text.vocab_size = int(ours["text/tok/embedding"].shape[0])
  if arch is not None:
    spec = conv.architecture(arch, None)
  elif hasattr(conv, "arch_of_config"):
    spec = conv.arch_of_config(run.model.to_dict(), run.text.max_len)
  else:
    raise ValueError(f"--arch is needed to export to {to}")
  # big_vision reads the image size and text length off the position tables.
  shapes = {"img/pos_embedding": ours.get("image/pos"), "txt/pos_embedding": ours.get("text/pos")}
  wanted = conv.config(spec, image_size=run.model.image.image_size, source=shapes)
  _check_architecture(run, wanted, spec.get("name", to))
  src = rules_lib.to_source(conv.rules(spec, None), ours)
  if to == "big_vision":
    np.savez(out, **src)
  else:
    tensors.write_safetensors(out, src, metadata={"format": "pt"})
  return spec
