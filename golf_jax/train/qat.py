"""Late soft-round QAT (docs/reference-notes.md#late-qat, docs/reference-notes.md#soft-round-qat): once the LR scale falls below
train.late_qat_threshold, the forward sees the int6-exported kernels soft-rounded.

Its own module, imported only when the threshold is > 0: a submission without QAT
does not pack it (golf_jax/submission/modules.py GATES).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

INT6_CLIP = 31


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


def qat_alpha(lr_scale: float, threshold: float) -> float:
    """α = 1 + 15·clip(1 − lr_scale/threshold, 0, 1) once QAT is on (the step takes 0 as off)."""
    return 1.0 + 15.0 * min(max(1.0 - lr_scale / threshold, 0.0), 1.0)


def apply_qat(params, mask, alpha: jax.Array):
    """Soft-round the masked kernels when alpha > 0; the identity otherwise."""

    def on(p):
        return jax.tree.map(lambda w, m: soft_round_int6(w, alpha) if m else w, p, mask)

    return jax.lax.cond(alpha > 0, on, lambda p: p, params)
