"""Weight averaging (EMA, SWA) and late soft-round QAT, as pure functions of pytrees.

They run inside the jitted step: the EMA after every optimizer step, SWA snapshots
when `lr_scale < swa_lr_threshold` and `step % swa_every == 0`, and QAT on the
weights the forward sees once the host turns `qat_alpha` on (reference §4.5, §4.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

INT6_CLIP = 31


@dataclass(frozen=True)
class Recipe:
    ema_decay: float = 0.0
    swa_enabled: bool = False
    swa_every: int = 50
    swa_lr_threshold: float = 0.2
    qat_mask: Any = None  # pytree of bools: the kernels QAT soft-rounds (None = QAT off)


def qat_mask(params, labels, reference_scope: bool):
    """Which kernels late QAT soft-rounds.

    Default: the Muon-labelled matrices, i.e. what is exported as int6. The
    reference's scope (`compat.qat_reference_scope`) is its CastedLinear set: the
    non-Muon matmul kernels (bigram/VE projections, MTP heads), never exported int6.
    """
    flat_p, flat_l = traverse_util.flatten_dict(params), traverse_util.flatten_dict(labels)

    def chosen(path) -> bool:
        if path[-1] != "kernel":
            return False
        return flat_l[path] != "muon" if reference_scope else flat_l[path] == "muon"

    return traverse_util.unflatten_dict({p: chosen(p) for p in flat_p})


def soft_round_int6(w_INxOUT: jax.Array, alpha: jax.Array) -> jax.Array:
    """q·s with a differentiable tanh soft-round (not an STE), per output channel.

    s = max(max|W|/31, 1/31) per output column (no gradient); r = w/s − floor − ½;
    q = clamp(floor + ½ + ½·tanh(α r)/tanh(α/2), −32, 31).
    """
    scale = jax.lax.stop_gradient(jnp.maximum(jnp.max(jnp.abs(w_INxOUT), axis=-2, keepdims=True) / INT6_CLIP, 1 / INT6_CLIP))
    w_n = w_INxOUT / scale
    floor = jax.lax.stop_gradient(jnp.floor(w_n))
    r = w_n - floor - 0.5
    q = floor + 0.5 + 0.5 * jnp.tanh(alpha * r) / jnp.tanh(alpha / 2)
    return jnp.clip(q, -INT6_CLIP - 1, INT6_CLIP) * scale


def qat_alpha(lr_scale: float, threshold: float, active: bool) -> float:
    """α = 1 + 15·clip(1 − lr_scale/threshold, 0, 1) once QAT is on; 0 means off."""
    if not active:
        return 0.0
    return 1.0 + 15.0 * min(max(1.0 - lr_scale / threshold, 0.0), 1.0)


def apply_qat(params, mask, alpha: jax.Array):
    """Soft-round the masked kernels when alpha > 0; the identity otherwise."""

    def on(p):
        return jax.tree.map(lambda w, m: soft_round_int6(w, alpha) if m else w, p, mask)

    return jax.lax.cond(alpha > 0, on, lambda p: p, params)


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
