"""Token-level input features of the GPT: BigramHash, SmearGate, ValueEmbedding, and
the frontier's windowed, BOS-masked SmearGate.

The first three come from the standard SP1024 record stack (PR #1318 and its lineage;
the SP8192 stack drops them); the windowed SmearGate from the final leaderboard
(#1797 / #1855). Each is switched on by a `model.*` key of golf_jax.model.gpt.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from golf_jax.model import layers

BOS_ID = 1  # every document starts with it (the shards' convention, golf_jax.data.prepare)
BIGRAM_MUL_CUR = 36313
BIGRAM_MUL_PREV = 27191


def bigram_hash(tokens_BxT: jax.Array, bigram_vocab_size: int) -> jax.Array:
    """`((36313·t[i]) XOR (27191·t[i−1])) mod (M−1)` in int32; position 0 uses row M−1."""
    t = tokens_BxT.astype(jnp.int32)
    mod = bigram_vocab_size - 1
    rest = jnp.bitwise_xor(BIGRAM_MUL_CUR * t[:, 1:], BIGRAM_MUL_PREV * t[:, :-1]) % mod
    first = jnp.full(t[:, :1].shape, mod, jnp.int32)
    return jnp.concatenate([first, rest], axis=1)


class SmearGate(nn.Module):
    """`(1−g)·x + g·x[t−1]` with g = sigmoid(gate) (init 0 → 0.5); x[−1] = 0 per sequence."""

    dim: int

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        gate = self.param("gate", nn.initializers.zeros, (self.dim,), jnp.float32)
        g = jax.nn.sigmoid(gate.astype(x_BxTxD.dtype))
        x_prev = jnp.concatenate([jnp.zeros_like(x_BxTxD[:, :1]), x_BxTxD[:, :-1]], axis=1)
        return (1 - g) * x_BxTxD + g * x_prev


class BigramHash(nn.Module):
    """Hashed (prev, cur) token pairs → [M, bigram_dim] table → proj → ·scale (init 0.05)."""

    vocab: int
    dim: int
    model_dim: int
    dtype: Any

    @nn.compact
    def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
        table = self.param("embed", nn.initializers.zeros, (self.vocab, self.dim), jnp.float32)
        h = jnp.take(table, bigram_hash(tokens_BxT, self.vocab), axis=0).astype(self.dtype)
        if self.dim != self.model_dim:
            h = layers.Linear(self.model_dim, self.dtype, layers.linear_override_init, name="proj")(h)
        scale = self.param("scale", nn.initializers.constant(0.05), (), jnp.float32)
        return h * scale.astype(h.dtype)


class ValueEmbedding(nn.Module):
    """Shared token table [V, ve_dim] → proj to kv_dim → ·scale (init 0.1); added to v."""

    vocab: int
    dim: int
    kv_dim: int
    dtype: Any

    @nn.compact
    def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
        table = self.param("embed", nn.initializers.normal(0.01), (self.vocab, self.dim), jnp.float32)
        h = jnp.take(table, tokens_BxT, axis=0).astype(self.dtype)
        if self.dim != self.kv_dim:
            h = layers.Linear(self.kv_dim, self.dtype, layers.linear_override_init, name="proj")(h)
        scale = self.param("scale", nn.initializers.constant(0.1), (), jnp.float32)
        return h * scale.astype(h.dtype)


class WindowSmearGate(nn.Module):
    """#1667 / #1855's SmearGate on the raw embedding: x_t ← x_t + λ·σ(w·x_t[:window])·x_{t−1}.

    w and λ start at 0, so it is the identity at init. At a document's BOS the
    previous token (the last of the document before) is not smeared in (#1855's
    "BOS fix"), so packed documents stay independent.
    """

    window: int

    @nn.compact
    def __call__(self, x_BxTxD: jax.Array, tokens_BxT: jax.Array) -> jax.Array:
        w = self.param("gate", nn.initializers.zeros, (self.window,), jnp.float32)
        lam = self.param("lam", nn.initializers.zeros, (), jnp.float32)
        cur = x_BxTxD[:, 1:]
        g = lam.astype(cur.dtype) * jax.nn.sigmoid(cur[..., : self.window] @ w.astype(cur.dtype))[..., None]
        not_bos = (tokens_BxT[:, 1:] != BOS_ID).astype(cur.dtype)[..., None]
        return jnp.concatenate([x_BxTxD[:, :1], cur + g * x_BxTxD[:, :-1] * not_bos], axis=1)
