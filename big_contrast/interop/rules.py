"""Name tables between a source's tensors and our parameters, and the reshapes they need.

A `Rule` ties one or more source tensors to one or more of our parameters with
a pair of pure functions, one each way: `to_ours(*source) -> ours` and
`to_source(*ours) -> source`. A converter is a list of rules built from the
architecture; `to_ours` checks that the file's names are exactly the table's
and that every converted array has the shape the target model expects, and
fails naming the first tensors that do not fit. `to_source` is the export.

Layouts: torch `Linear.weight` is [out, in] (our kernel [in, out]); torch
`Conv2d.weight` is OIHW (ours HWIO); attention projections are ours as Flax
keeps them, query/key/value kernels [width, heads, head_dim] with biases
[heads, head_dim] and the output kernel [heads, head_dim, width]; torch's
`MultiheadAttention` and timm fuse q, k, v into one [3·width, width] matrix.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Rule:
  source: tuple[str, ...]
  ours: tuple[str, ...]
  to_ours: Callable[..., tuple[np.ndarray, ...]]
  to_source: Callable[..., tuple[np.ndarray, ...]]


def _one(fn):
  return lambda *a: (fn(*a),)


def same(source: str, ours: str) -> Rule:
  return Rule((source,), (ours,), lambda x: (x,), lambda x: (x,))


def reshaped(source: str, ours: str, ours_shape: Sequence[int], source_shape: Sequence[int]):
  """One tensor whose layout matches ours up to a reshape (e.g. [W] ↔ [1, 1, W])."""
  return Rule(
    (source,),
    (ours,),
    _one(lambda x: np.reshape(x, ours_shape)),
    _one(lambda x: np.reshape(x, source_shape)),
  )


def negated(source: str, ours: str, source_shape: Sequence[int]) -> Rule:
  """A logit scale (log 1/T) ↔ our log temperature (log T), scalars of either shape."""
  return Rule(
    (source,),
    (ours,),
    _one(lambda x: -np.reshape(x, ())),
    _one(lambda x: -np.reshape(x, source_shape)),
  )


def linear(source: str, ours: str, bias: bool = True) -> list[Rule]:
  """torch Linear (`source.weight` [out, in], `.bias`) ↔ our `ours/kernel` [in, out], `/bias`."""
  rules = [Rule((f"{source}.weight",), (f"{ours}/kernel",), _one(np.transpose), _one(np.transpose))]
  return rules + ([same(f"{source}.bias", f"{ours}/bias")] if bias else [])


def layernorm(source: str, ours: str, weight: str = "weight") -> list[Rule]:
  return [same(f"{source}.{weight}", f"{ours}/scale"), same(f"{source}.bias", f"{ours}/bias")]


def conv(source: str, ours: str, bias: bool) -> list[Rule]:
  """torch Conv2d OIHW ↔ our HWIO kernel."""
  rules = [
    Rule(
      (f"{source}.weight",),
      (f"{ours}/kernel",),
      _one(lambda w: np.transpose(w, (2, 3, 1, 0))),
      _one(lambda w: np.transpose(w, (3, 2, 0, 1))),
    )
  ]
  return rules + ([same(f"{source}.bias", f"{ours}/bias")] if bias else [])


def _heads_in(w: np.ndarray, heads: int) -> np.ndarray:
  """torch [H·Dh, W] → our [W, H, Dh]."""
  return np.transpose(w).reshape(w.shape[1], heads, w.shape[0] // heads)


def _heads_in_inv(k: np.ndarray) -> np.ndarray:
  return np.transpose(k.reshape(k.shape[0], -1))


def attention(
  out: str, ours: str, heads: int, *, fused: str | None = None, qkv: Sequence[str] = ()
) -> list[Rule]:
  """torch attention projections ↔ ours: the output Linear `out`, and either separate
  query/key/value Linears (`qkv`, three names) or `fused`, the name prefix of a fused
  [3W, W] weight and [3W] bias (`fused + 'weight'`, `fused + 'bias'`)."""
  names = [f"{ours}/{n}" for n in ("query", "key", "value")]
  rules = []
  if fused is None:
    q, k, v = qkv
    for src, name in zip((q, k, v), names):
      rules.append(
        Rule(
          (f"{src}.weight",),
          (f"{name}/kernel",),
          _one(lambda w: _heads_in(w, heads)),
          _one(_heads_in_inv),
        )
      )
      rules.append(
        reshaped(f"{src}.bias", f"{name}/bias", (heads, -1), (-1,)),
      )
  else:

    def split_w(w):
      return tuple(_heads_in(p, heads) for p in np.split(w, 3, axis=0))

    def split_b(b):
      return tuple(p.reshape(heads, -1) for p in np.split(b, 3))

    rules.append(
      Rule(
        (f"{fused}weight",),
        tuple(f"{n}/kernel" for n in names),
        split_w,
        lambda *ks: (np.concatenate([_heads_in_inv(x) for x in ks], axis=0),),
      )
    )
    rules.append(
      Rule(
        (f"{fused}bias",),
        tuple(f"{n}/bias" for n in names),
        split_b,
        lambda *bs: (np.concatenate([x.reshape(-1) for x in bs]),),
      )
    )
  rules.append(
    Rule(
      (f"{out}.weight",),
      (f"{ours}/out/kernel",),
      _one(lambda w: np.transpose(w).reshape(heads, -1, w.shape[0])),
      _one(lambda k: np.transpose(k.reshape(-1, k.shape[-1]))),
    )
  )
  rules.append(same(f"{out}.bias", f"{ours}/out/bias"))
  return rules


def split_prefix(source: str, ours_prefix: str, ours_grid: str, n_prefix: int, lead: bool):
  """A position table [(1,) P + N, W] ↔ ours: prefix [1, P, W] and grid [1, N, W].

  `lead`: the source table has a leading batch axis of 1 (timm), else not (CLIP).
  """

  def split(x):
    x = x.reshape(-1, x.shape[-1])
    return x[None, :n_prefix], x[None, n_prefix:]

  def join(p, g):
    x = np.concatenate([p[0], g[0]], 0)
    return (x[None] if lead else x,)

  return Rule((source,), (ours_prefix, ours_grid), split, join)


class MismatchError(ValueError):
  """The weights' names or shapes do not fit the architecture; nothing was written."""


def _first(names: Iterable[str], n: int = 5) -> str:
  names = list(names)
  more = f" (+{len(names) - n} more)" if len(names) > n else ""
  return ", ".join(repr(x) for x in names[:n]) + more


def check_names(
  rules: Sequence[Rule],
  source: Mapping[str, np.ndarray],
  *,
  ignore: Sequence[str] = (),
  where: str = "the weights",
) -> None:
  """Raises `MismatchError` naming the first tensors the table expects and the file lacks,
  and the first the file has and the table does not know.

  `ignore`: regexes (fullmatch) of source names that are not parameters (buffers,
  a classifier head) and may be present or not.
  """
  expected = [name for rule in rules for name in rule.source]
  skip = [re.compile(p) for p in ignore]
  present = [n for n in source if not any(p.fullmatch(n) for p in skip)]
  missing = [n for n in expected if n not in source]
  unexpected = [n for n in present if n not in set(expected)]
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f"missing {_first(missing)}")
    if unexpected:
      parts.append(f"unexpected {_first(unexpected)}")
    raise MismatchError(f"{where} do not fit the architecture: " + "; ".join(parts))


def to_ours(
  rules: Sequence[Rule],
  source: Mapping[str, np.ndarray],
  target: Mapping[str, tuple[int, ...]],
  *,
  ignore: Sequence[str] = (),
  where: str = "the weights",
) -> dict[str, np.ndarray]:
  """{our name: float32 array} from `source` by `rules`, checked against `target` shapes.

  Raises `MismatchError` naming the first missing or unexpected tensors
  (`check_names`) or the first whose shape does not become the target's.
  """
  check_names(rules, source, ignore=ignore, where=where)
  out = {}
  for rule in rules:
    arrays = [np.asarray(source[n]) for n in rule.source]
    shapes = ", ".join(f"{n} {tuple(a.shape)}" for n, a in zip(rule.source, arrays))
    wanted = ", ".join(f"{n} {tuple(target.get(n, ()))}" for n in rule.ours)
    try:
      converted = rule.to_ours(*[a.astype(np.float32) for a in arrays])
    except ValueError:
      converted = None
    if converted is None or any(
      n not in target or tuple(c.shape) != tuple(target[n]) for n, c in zip(rule.ours, converted)
    ):
      raise MismatchError(f"{where} do not fit the architecture: {shapes} cannot become {wanted}")
    out.update(zip(rule.ours, converted))
  uncovered = [n for n in target if n not in out]
  if uncovered:
    raise MismatchError(f"the name table leaves parameters without a source: {_first(uncovered)}")
  return out


def to_source(rules: Sequence[Rule], ours: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The export: {source name: float32 array} from our parameters by `rules`."""
  missing = [n for rule in rules for n in rule.ours if n not in ours]
  if missing:
    raise MismatchError(f"the run's parameters lack {_first(missing)} for this architecture")
  out = {}
  for rule in rules:
    arrays = rule.to_source(*[np.asarray(ours[n], np.float32) for n in rule.ours])
    out.update(zip(rule.source, (np.array(a, np.float32, order="C") for a in arrays)))
  return out
