"""Learnable temperature / bias parametrisation shared by the models.

Models store ``log_temperature`` (and SigLIP a ``bias``) as parameters and call
`temperature_from_log` in their forward pass; the losses take the temperature
itself (logits = cosine / temperature).

* CLIP (Radford et al., 2021): temperature starts at 0.07 and the logit scale
  1/temperature is clamped at 100, i.e. temperature >= 0.01. As in OpenCLIP
  (`logit_scale.clamp_(0, log 100)` after each optimizer step), the clamp acts
  on the parameter after the update (`clamp_log_temperature`), not in the
  forward pass: a forward clamp has zero gradient below the floor, so momentum
  can carry the parameter under it, where it never returns.
* SigLIP (Zhai et al., 2023): their ``t' = log 10`` with logits
  ``cos · exp(t') + b`` is temperature 1/10 here, i.e. ``log_temperature =
  -log 10``, no clamp, and the bias starts at -10.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp

Kind = Literal["clip", "siglip"]

_INIT_TEMPERATURE = {"clip": 0.07, "siglip": 0.1}
_INIT_BIAS = {"clip": 0.0, "siglip": -10.0}
_MIN_TEMPERATURE = {"clip": 0.01, "siglip": None}


def _check(kind: str) -> None:
  if kind not in _INIT_TEMPERATURE:
    raise ValueError(f"kind must be one of {sorted(_INIT_TEMPERATURE)}, got {kind!r}.")


def init_log_temperature(kind: Kind = "clip") -> float:
  """Initial value of the ``log_temperature`` parameter: log 0.07 (CLIP), -log 10 (SigLIP)."""
  _check(kind)
  return math.log(_INIT_TEMPERATURE[kind])


def init_bias(kind: Kind = "siglip") -> float:
  """Initial logit bias: -10 for SigLIP (0 for CLIP, which has none)."""
  _check(kind)
  return _INIT_BIAS[kind]


def min_temperature(kind: Kind = "clip") -> float | None:
  """The clamp the recipe applies: 0.01 for CLIP (logit scale <= 100), None for SigLIP."""
  _check(kind)
  return _MIN_TEMPERATURE[kind]


def temperature_from_log(log_temperature: jax.typing.ArrayLike) -> jax.Array:
  r"""Temperature from its log-parametrisation, :math:`\tau = e^{\theta}` (no clamp here)."""
  return jnp.exp(jnp.asarray(log_temperature))


def clamp_log_temperature(
  log_temperature: jax.typing.ArrayLike, min_temperature: float | None
) -> jax.Array:
  r"""The parameter after an update, clamped to the floor: :math:`\max(\theta, \log \tau_{min})`.

  The trainer applies it after every optimizer step; the forward pass then sees
  a temperature at or above the floor, with a gradient that can lift it again.
  ``min_temperature=None`` (SigLIP) leaves the parameter as it is.
  """
  log_temperature = jnp.asarray(log_temperature)
  if min_temperature is None:
    return log_temperature
  return jnp.maximum(log_temperature, math.log(min_temperature))
