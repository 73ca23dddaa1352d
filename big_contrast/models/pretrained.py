"""Pretrained weights for continual pretraining: read, match by name, adapt, report.

Sources are flat dicts {'/'-joined name: array}:
  `read_npz(path)`                     a NumPy .npz of parameters by name
                                       (`save_npz` writes one from a train state);
  `read_checkpoint(workdir_or_dir)`    a big_contrast Orbax checkpoint
                                       (`<workdir>/checkpoints/<step>/state`): its
                                       `params` and `rest` (BatchNorm statistics).

`load_into(target, source)` copies every source array whose name (after optional
regex `rename` rules) and shape match a leaf of `target` (a pure dict such as the
train state's `params`), and returns the new tree with a `LoadReport` of what
matched, what was adapted, and what was skipped (missing from the source, shape
mismatch, unused source entries).

First-layer channel adaptation (multispectral, SAR, greyscale inputs): a conv
kernel [kh, kw, C_in, D] whose only difference is C_in is adapted when `adapt`
is set:
  'repeat'  new channel c takes source channel c mod C_old, scaled by C_old/C_new;
            for C_new < C_old, source channels are summed into c = c_old mod C_new.
            Either way an input whose channels are all equal gives the same
            pre-activation as before (exactly when one count divides the other).
  'zero'    the first C_old channels are copied and the new ones start at zero:
            the network computes exactly what it did on the original channels
            and learns to use the new ones (needs C_new ≥ C_old).

This module knows nothing about training or data.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

import jax
import numpy as np

ADAPT_MODES = (None, "repeat", "zero")


def flatten(tree: Mapping) -> dict[str, np.ndarray]:
  """Nested dict of arrays → {'a/b/c': array}; list indices become path parts."""
  return {
    jax.tree_util.keystr(path, simple=True, separator="/"): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def save_npz(path: str, tree: Mapping) -> None:
  """Writes a pure-dict tree (e.g. `state['params']`) as an .npz by '/'-joined name."""
  np.savez(path, **{k: np.asarray(jax.device_get(v)) for k, v in flatten(tree).items()})


def read_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def _checkpoint_state_dir(path: str, step: int | None) -> str:
  """`<workdir>`, `<workdir>/checkpoints`, `.../<step>` or `.../<step>/state` → the state dir."""
  path = os.fspath(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    path = os.path.join(path, "checkpoints")
  steps = [int(s) for s in os.listdir(path) if s.isdigit()] if os.path.isdir(path) else []
  if steps:
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise FileNotFoundError(f"no checkpoint at step {step} in {path}; found {sorted(steps)}")
    path = os.path.join(path, str(step))
  if os.path.isdir(os.path.join(path, "state")):
    path = os.path.join(path, "state")
  return path


def read_checkpoint(
  path: str, *, step: int | None = None, collections: Sequence[str] = ("params", "rest")
) -> dict[str, np.ndarray]:
  """The parameters (and non-trainable state) of a big_contrast checkpoint, by name.

  path: a workdir, its `checkpoints` dir, a step dir or the step's `state` dir;
  the newest step unless `step` is given. Names are those of the train state's
  pure dicts, e.g. 'image/encoder/blocks/0/mlp/fc1/kernel'; BatchNorm statistics
  from `rest` are included so a ResNet continues with its running averages.
  """
  import orbax.checkpoint as ocp  # noqa: PLC0415 — only this reader needs Orbax

  state_dir = _checkpoint_state_dir(path, step)
  if not os.path.isdir(state_dir):
    raise FileNotFoundError(
      f"no big_contrast checkpoint under {path!r} (expected <workdir>/checkpoints/<step>/state)"
    )
  restored = ocp.StandardCheckpointer().restore(os.path.abspath(state_dir))
  flat = {}
  for name in collections:
    flat.update(flatten(restored.get(name) or {}))
  return {k: np.asarray(v) for k, v in flat.items()}


@dataclasses.dataclass
class LoadReport:
  """What `load_into` did, name by name."""

  matched: list[str] = dataclasses.field(default_factory=list)
  adapted: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)  # kept their init
  shape_mismatch: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
  unused: list[str] = dataclasses.field(default_factory=list)  # source names not loaded

  def summary(self, max_names: int = 10) -> str:
    def names(items):
      items = [i if isinstance(i, str) else f"{i[0]} {i[1]}→{i[2]}" for i in items]
      more = f", … (+{len(items) - max_names})" if len(items) > max_names else ""
      return ", ".join(items[:max_names]) + more

    lines = [
      f"loaded {len(self.matched)} arrays, adapted {len(self.adapted)}, "
      f"kept init for {len(self.missing)} missing and "
      f"{len(self.shape_mismatch)} shape-mismatched, {len(self.unused)} unused"
    ]
    for label, items in (
      ("adapted", self.adapted),
      ("missing", self.missing),
      ("shape mismatch (source→target)", self.shape_mismatch),
      ("unused", self.unused),
    ):
      if items:
        lines.append(f"  {label}: {names(items)}")
    return "\n".join(lines)


def adapt_input_channels(kernel: np.ndarray, channels: int, mode: str) -> np.ndarray:
  """A conv kernel [..., C_old, D] → [..., channels, D] (see the module docstring)."""
  kernel = np.asarray(kernel)
  c_old = kernel.shape[-2]
  if mode == "repeat":
    if channels >= c_old:
      idx = np.arange(channels) % c_old
      return kernel[..., idx, :] * (c_old / channels)
    out = np.zeros(kernel.shape[:-2] + (channels, kernel.shape[-1]), kernel.dtype)
    for c in range(c_old):
      out[..., c % channels, :] += kernel[..., c, :]
    return out
  if mode == "zero":
    if channels < c_old:
      raise ValueError(
        f"adapt='zero' cannot drop input channels ({c_old} → {channels}); use adapt='repeat'"
      )
    out = np.zeros(kernel.shape[:-2] + (channels, kernel.shape[-1]), kernel.dtype)
    out[..., :c_old, :] = kernel
    return out
  raise ValueError(f"adapt={mode!r}: expected one of {ADAPT_MODES}")


def _only_input_channels_differ(src: tuple, tgt: tuple) -> bool:
  return (
    len(src) == len(tgt) >= 3 and src[:-2] == tgt[:-2] and src[-1] == tgt[-1] and src[-2] != tgt[-2]
  )


def load_into(
  target: Mapping,
  source: Mapping[str, np.ndarray],
  *,
  rename: Sequence[tuple[str, str]] = (),
  adapt: str | None = None,
  adapt_pattern: str = r".*(embed|stem)/kernel",
) -> tuple[dict, LoadReport]:
  """Copies matching source arrays into a pure-dict `target`; returns (new tree, report).

  target: nested dict of arrays (host or device; the result holds NumPy arrays
    where loaded, the target's own leaves elsewhere).
  source: {name: array}, e.g. from `read_npz` / `read_checkpoint`.
  rename: (regex, replacement) rules applied in order to each source name, e.g.
    [(r'^', 'image/')] to load a bare image tower into a two-tower model.
  adapt: None, 'repeat' or 'zero': first-layer input-channel adaptation for
    kernels whose name fullmatches `adapt_pattern` (ViT patch embedding, ResNet stem).
  """
  if adapt not in ADAPT_MODES:
    raise ValueError(f"adapt={adapt!r}: expected one of {ADAPT_MODES}")
  renamed = {}
  for name, value in source.items():
    for pattern, repl in rename:
      name = re.sub(pattern, repl, name)
    renamed[name] = value
  pattern = re.compile(adapt_pattern)
  report = LoadReport()
  used = set()

  def load(path, leaf):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    if name not in renamed:
      report.missing.append(name)
      return leaf
    used.add(name)
    value, shape = np.asarray(renamed[name]), tuple(np.shape(leaf))
    dtype = getattr(leaf, "dtype", value.dtype)
    if value.shape == shape:
      report.matched.append(name)
      return value.astype(dtype)
    if adapt and pattern.fullmatch(name) and _only_input_channels_differ(value.shape, shape):
      report.adapted.append((name, value.shape, shape))
      return adapt_input_channels(value, shape[-2], adapt).astype(dtype)
    report.shape_mismatch.append((name, value.shape, shape))
    return leaf

  new = jax.tree_util.tree_map_with_path(load, target)
  report.unused = sorted(set(renamed) - used)
  return new, report


def load_into_state(
  state: Mapping, shardings: Mapping, source: Mapping[str, np.ndarray], **kwargs
) -> tuple[dict, LoadReport]:
  """A train state with `params` (and `rest`) loaded from `source`, placed per `shardings`.

  The optimizer state and step are kept (a fresh optimizer for continual
  pretraining). `shardings` is `train.Trainee.shardings`; kwargs go to `load_into`.
  """
  new, report = dict(state), LoadReport()
  unused = None
  for key in ("params", "rest"):
    loaded, part = load_into(state[key], source, **kwargs)
    new[key] = jax.device_put(loaded, shardings[key])
    report.matched += part.matched
    report.adapted += part.adapted
    report.missing += part.missing
    report.shape_mismatch += part.shape_mismatch
    unused = set(part.unused) if unused is None else unused & set(part.unused)
  report.unused = sorted(unused)
  return new, report
