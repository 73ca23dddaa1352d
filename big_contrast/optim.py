"""Optimizers by name, from `config.optim`.

  name='adamw' (default)  AdamW; no weight decay on vectors and scalars.
  name='lars'             LARS (You et al., 2017) as SimCLR trains ResNets: SGD with
                          momentum whose per-layer step is scaled by the trust
                          ratio ‖w‖/‖g + λw‖; biases and norm scales/offsets (every
                          parameter with ndim < 2) get neither weight decay nor the
                          trust ratio (Chen et al., 2020, appendix B.1).

Both use linear warm-up then cosine decay to `lr · end_lr_fraction`, optional global
gradient clipping, and skip non-finite updates (the trainer counts them).
`DEFAULTS` holds every `config.optim` key; a key a config leaves out takes its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

OPTIMIZERS = ("adamw", "lars")

DEFAULTS: dict[str, Any] = {
  "name": "adamw",
  "lr": 1e-3,
  "warmup_steps": 0,
  "end_lr_fraction": 0.0,  # the cosine decays to lr · end_lr_fraction
  "grad_clip_norm": 0.0,  # 0: no clipping
  "weight_decay": 0.0,
  "b1": 0.9,  # adamw
  "b2": 0.999,  # adamw
  "eps": 1e-8,  # adamw
  "momentum": 0.9,  # lars
  "trust_coefficient": 0.001,  # lars
}


def settings(optim_cfg: Mapping[str, Any]) -> dict[str, Any]:
  """`config.optim` completed with `DEFAULTS`; an unknown key is an error naming it."""
  unknown = sorted(set(optim_cfg) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"config.optim.{unknown[0]}: unknown key; expected some of {sorted(DEFAULTS)}")
  return {**DEFAULTS, **optim_cfg}


def _matrices(params):
  """True for weights (ndim ≥ 2), False for biases, norm parameters, scalars."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
  optim_cfg: Mapping[str, Any], total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule) for `config.optim`."""
  cfg = settings(optim_cfg)
  schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=cfg["lr"],
    warmup_steps=cfg["warmup_steps"],
    decay_steps=max(total_steps, cfg["warmup_steps"] + 1),
    end_value=cfg["lr"] * cfg["end_lr_fraction"],
  )
  chain = []
  if cfg["grad_clip_norm"]:
    chain.append(optax.clip_by_global_norm(cfg["grad_clip_norm"]))
  if cfg["name"] == "adamw":
    chain.append(
      optax.adamw(
        schedule,
        b1=cfg["b1"],
        b2=cfg["b2"],
        eps=cfg["eps"],
        weight_decay=cfg["weight_decay"],
        mask=_matrices,
      )
    )
  elif cfg["name"] == "lars":
    chain.append(
      optax.lars(
        schedule,
        weight_decay=cfg["weight_decay"],
        weight_decay_mask=_matrices,
        trust_ratio_mask=_matrices,
        trust_coefficient=cfg["trust_coefficient"],
        momentum=cfg["momentum"],
      )
    )
  else:
    raise ValueError(f"config.optim.name={cfg['name']!r}: expected one of {list(OPTIMIZERS)}")
  return optax.apply_if_finite(optax.chain(*chain), max_consecutive_errors=2**30), schedule
