"""Per-document LoRA adapters of phased TTT and their AdamW (docs/reference-notes.md#phased-ttt).

#1855's BatchedTTTLoRA: for each virtual layer (one slot per block call of the looped
layer order) adapters on Q, K, V, the attention output (fed the block's normed input)
and the MLP (fed the MLP's normed input, added to its output), plus one on the LM head
(fed the final hidden, added before the softcap). Delta = (α/r)·(x Aᵀ)Bᵀ with
A ~ U(±1/√in) and B = 0, so a fresh adapter leaves the model unchanged. Every array
here has a leading row axis (one document per row), a batch axis of the adapters'
matmuls in the model's forward, and AdamW is elementwise, so documents never interact.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from golf_jax.model.gpt import lora_slots

MODULES = ("q", "k", "v", "o", "mlp", "head")


def shapes(m, rank: int, modules) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per-document (A, B) shapes of each adapter of model config `m`."""
    D, V, S = int(m.model_dim), int(m.vocab_size), lora_slots(m)
    kv = int(m.num_kv_heads) * (D // int(m.num_heads))
    out = {"q": D, "k": kv, "v": kv, "o": D, "mlp": D}
    return {name: ((rank, D), (V, rank)) if name == "head" else ((S, rank, D), (S, out[name], rank))
            for name in modules}


def init(key: jax.Array, m, rank: int, modules, rows: int) -> dict:
    """Fresh adapters for `rows` documents: A uniform in ±1/√in (torch's bound), B zero."""
    out = {}
    for i, (name, (a_shape, b_shape)) in enumerate(shapes(m, rank, modules).items()):
        bound = 1.0 / math.sqrt(a_shape[-1])
        out[name + "_A"] = jax.random.uniform(jax.random.fold_in(key, i), (rows, *a_shape), jnp.float32,
                                              -bound, bound)
        out[name + "_B"] = jnp.zeros((rows, *b_shape), jnp.float32)
    return out


def zero_b(lora: dict) -> dict:
    """#1855's reset between batches with warm-start A: B back to zero, A kept."""
    return {k: jnp.zeros_like(v) if k.endswith("_B") else v for k, v in lora.items()}


def forward(model, params, lora: dict, scale, x_BxW: jax.Array, pos_BxS: jax.Array) -> jax.Array:
    """Softcapped logits [B, S, V] at positions pos_BxS of windows x_BxW, row b with adapter b.

    Hidden states are gathered at the scored positions before the head, so [B, W, V]
    logits are never formed.
    """

    adapters = {**lora, "scale": scale}
    h_BxWxD = model.apply({"params": params}, x_BxW, lora=adapters, method=model.hidden)
    h_BxSxD = jnp.take_along_axis(h_BxWxD, pos_BxS[..., None], axis=1)
    return model.apply({"params": params}, h_BxSxD, lora=adapters, method=model.logits_from_hidden)


def chunk_cotangent(logits_BxSxV: jax.Array, y_BxS: jax.Array, w_BxS: jax.Array) -> jax.Array:
    """d/dlogits of Σ_b Σ_s w[b, s]·CE(logits[b, s], y[b, s]) (softmax − one-hot, in fp32).

    With w = 1/count on a training row's chunk and 0 elsewhere this is #1855's
    Σ_b mean(CE over document b's chunk), masked to the documents that train.
    """
    p = jax.nn.softmax(logits_BxSxV.astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(y_BxS, logits_BxSxV.shape[-1], dtype=jnp.float32)
    return ((p - onehot) * w_BxS[..., None]).astype(logits_BxSxV.dtype)


def adamw_init(lora: dict) -> dict:
    return {"m": jax.tree.map(jnp.zeros_like, lora), "v": jax.tree.map(jnp.zeros_like, lora)}


class AdamW(NamedTuple):
    """The LoRA AdamW's hyperparameters (hashable: they key its compiled step)."""

    lr: float
    b1: float
    b2: float
    eps: float
    weight_decay: float


def adamw(lora: dict, grads: dict, state: dict, step, hp: AdamW) -> tuple[dict, dict]:
    """torch.optim.AdamW, step `step` (1-based): decoupled decay p·(1 − lr·wd), then the
    bias-corrected Adam update with eps outside the square root."""
    lr, b1, b2, eps, weight_decay = hp
    t = jnp.asarray(step, jnp.float32)
    bc1, bc2 = 1.0 - jnp.power(jnp.float32(b1), t), 1.0 - jnp.power(jnp.float32(b2), t)
    m = jax.tree.map(lambda m_, g: b1 * m_ + (1.0 - b1) * g, state["m"], grads)
    v = jax.tree.map(lambda v_, g: b2 * v_ + (1.0 - b2) * g * g, state["v"], grads)

    def new(p, m_, v_):
        return p * (1.0 - lr * weight_decay) - (lr / bc1) * m_ / (jnp.sqrt(v_) / jnp.sqrt(bc2) + eps)

    return jax.tree.map(new, lora, m, v), {"m": m, "v": v}
