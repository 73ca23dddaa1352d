"""Optimizers by name, from `config.optim`.

  name='adamw' (default)  AdamW; no weight decay on vectors and scalars.
  name='lars'             LARS (You et al., 2017) as SimCLR trains ResNets: SGD with
                          momentum 0.9 whose per-layer step is scaled by the trust
                          ratio ‖w‖/‖g + λw‖; biases and norm scales/offsets (every
                          parameter with ndim < 2) get neither weight decay nor the
                          trust ratio (Chen et al., 2020, appendix B.1).

Both use linear warm-up then cosine decay to `lr · end_lr_fraction`, optional global
gradient clipping, and skip non-finite updates (the trainer counts them).
"""

from __future__ import annotations

import jax
import optax

OPTIMIZERS = ("adamw", "lars")


def _matrices(params):
  """True for weights (ndim ≥ 2), False for biases, norm parameters, scalars."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
  optim_cfg, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule) for `config.optim`."""
  name = optim_cfg.get("name", "adamw")
  schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=optim_cfg.lr,
    warmup_steps=optim_cfg.warmup_steps,
    decay_steps=max(total_steps, optim_cfg.warmup_steps + 1),
    end_value=optim_cfg.lr * optim_cfg.get("end_lr_fraction", 0.0),
  )
  chain = []
  if optim_cfg.get("grad_clip_norm"):
    chain.append(optax.clip_by_global_norm(optim_cfg.grad_clip_norm))
  if name == "adamw":
    chain.append(
      optax.adamw(
        schedule,
        b1=optim_cfg.b1,
        b2=optim_cfg.b2,
        eps=optim_cfg.eps,
        weight_decay=optim_cfg.weight_decay,
        mask=_matrices,
      )
    )
  elif name == "lars":
    chain.append(
      optax.lars(
        schedule,
        weight_decay=optim_cfg.weight_decay,
        weight_decay_mask=_matrices,
        trust_ratio_mask=_matrices,
        trust_coefficient=optim_cfg.get("trust_coefficient", 0.001),
        momentum=optim_cfg.get("momentum", 0.9),
      )
    )
  else:
    raise ValueError(f"config.optim.name={name!r}: expected one of {list(OPTIMIZERS)}")
  return optax.apply_if_finite(optax.chain(*chain), max_consecutive_errors=2**30), schedule
