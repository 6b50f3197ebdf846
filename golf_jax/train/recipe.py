"""Weight averaging (EMA, SWA), as pure functions of pytrees, and the recipe of a train step.

They run inside the jitted step: the EMA after every optimizer step, SWA snapshots
when `lr_scale < swa_lr_threshold` and `step % swa_every == 0` (docs/reference-notes.md#ema-swa). Late
soft-round QAT (docs/reference-notes.md#late-qat) lives in golf_jax/train/qat.py; the recipe carries its mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Recipe:
    ema_decay: float = 0.0
    swa_enabled: bool = False
    swa_every: int = 50
    swa_lr_threshold: float = 0.2
    qat_mask: Any = None  # pytree of bools: the kernels QAT soft-rounds (None = QAT off)


def ema_update(ema, params, decay: float):
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(jnp.float32), ema, params)


def swa_update(swa_sum, swa_count, params, take: jax.Array):
    swa_sum = jax.tree.map(lambda s, p: s + jnp.where(take, p.astype(jnp.float32), 0.0), swa_sum, params)
    return swa_sum, swa_count + take.astype(jnp.int32)


def final_params(state, recipe: Recipe):
    """SWA average when enabled and snapshots exist, else the EMA, else the live weights."""
    if recipe.swa_enabled and int(state.swa_count) > 0:
        n = int(state.swa_count)
        return jax.tree.map(lambda s, p: (s / n).astype(p.dtype), state.swa_sum, state.params), f"swa({n})"
    if recipe.ema_decay > 0:
        return jax.tree.map(lambda e, p: e.astype(p.dtype), state.ema, state.params), f"ema({recipe.ema_decay})"
    return state.params, "live"
