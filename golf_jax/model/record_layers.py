"""Building blocks of the PR #1318 record GPT (spec reference-pr1318.md §3.2).

Each matmul weight is an `(in, out)` fp32 `kernel` cast to the compute dtype at
use; the reference's banks (`qo_bank`, …) are per-layer modules here, which is the
same maths (Muon orthogonalizes each bank slice independently, spec §3.4).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from golf_jax.model import layers

BIGRAM_MUL_CUR = 36313
BIGRAM_MUL_PREV = 27191


def torch_orthogonal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """`torch.nn.init.orthogonal_` (gain 1) of the torch `(out, in)` matrix, returned as `(in, out)`.

    torch: rows orthonormal when out ≤ in, else columns; the QR sign fix `q·sign(diag r)`
    makes the draw a Haar sample. Only the distribution matters (different RNG).
    """
    fan_in, fan_out = shape[-2], shape[-1]
    rows, cols = fan_out, fan_in
    flat = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
    q, r = jnp.linalg.qr(flat)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    w_outxin = q.T if rows < cols else q  # (rows, cols)
    return w_outxin.T.astype(dtype)


def linear_override_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """The reference's post-hoc pass over nn.Linear modules (L959–964): orthogonal when
    both dims are ≥ 64, else the module's own zero init stays (bigram.proj, ve proj)."""
    if shape[-2] >= 64 and shape[-1] >= 64:
        return torch_orthogonal(key, shape, dtype)
    return jnp.zeros(shape, dtype)


def bigram_hash(tokens_BxT: jax.Array, bigram_vocab_size: int) -> jax.Array:
    """`((36313·t[i]) XOR (27191·t[i−1])) mod (M−1)` in int32; position 0 uses row M−1."""
    t = tokens_BxT.astype(jnp.int32)
    mod = bigram_vocab_size - 1
    rest = jnp.bitwise_xor(BIGRAM_MUL_CUR * t[:, 1:], BIGRAM_MUL_PREV * t[:, :-1]) % mod
    first = jnp.full(t[:, :1].shape, mod, jnp.int32)
    return jnp.concatenate([first, rest], axis=1)


def rope_base_for(seq_len: int, base: float, rope_dims: int, rope_train_seq_len: int) -> float:
    """NTK rescaling as the reference applies it: `base·(T/T_train)^(rd/(rd−2))` for T > T_train."""
    if seq_len > rope_train_seq_len:
        return base * (seq_len / rope_train_seq_len) ** (rope_dims / (rope_dims - 2))
    return base


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
            h = layers.Linear(self.model_dim, self.dtype, linear_override_init, name="proj")(h)
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
            h = layers.Linear(self.kv_dim, self.dtype, linear_override_init, name="proj")(h)
        scale = self.param("scale", nn.initializers.constant(0.1), (), jnp.float32)
        return h * scale.astype(h.dtype)


def xsa(y_BxTxNxH: jax.Array, v_BxTxKxH: jax.Array) -> jax.Array:
    """Remove from each head's output its component along its own position's value (L693–702)."""
    B, T, N, H = y_BxTxNxH.shape
    K = v_BxTxKxH.shape[2]
    y_g = y_BxTxNxH.reshape(B, T, K, N // K, H)
    norm = jnp.sqrt(jnp.sum(jnp.square(v_BxTxKxH), axis=-1, keepdims=True))
    vn = (v_BxTxKxH / jnp.maximum(norm, 1e-12))[:, :, :, None, :]
    proj = jnp.sum(y_g * vn, axis=-1, keepdims=True) * vn
    return (y_g - proj).reshape(B, T, N, H)


class RecordAttention(nn.Module):
    """GQA causal attention with QK RMS-norm, partial NTK RoPE, per-head q gain and XSA."""

    cfg: Any
    use_xsa: bool

    @nn.compact
    def __call__(self, h_BxTxD: jax.Array, ve_BxTxKH: jax.Array | None) -> jax.Array:
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        B, T, D = h_BxTxD.shape
        N, K = cfg.num_heads, cfg.num_kv_heads
        H = D // N
        q = layers.Linear(D, dtype, torch_orthogonal, name="c_q")(h_BxTxD).reshape(B, T, N, H)
        k = layers.Linear(K * H, dtype, torch_orthogonal, name="c_k")(h_BxTxD).reshape(B, T, K, H)
        v = layers.Linear(K * H, dtype, torch_orthogonal, name="c_v")(h_BxTxD)
        if ve_BxTxKH is not None:
            v = v + ve_BxTxKH.astype(v.dtype)
        v = v.reshape(B, T, K, H)
        rope_dims = cfg.rope_dims if cfg.rope_dims > 0 else H
        base = rope_base_for(T, cfg.rope_base, rope_dims, cfg.rope_train_seq_len)
        q_gain = self.param("q_gain", nn.initializers.constant(cfg.qk_gain_init), (N,), jnp.float32)
        y = layers.normed_rotary_attention(q, k, v, q_gain, rope_dims, base, cfg.attention_impl)
        if self.use_xsa:
            y = xsa(y, v)
        return layers.Linear(D, dtype, nn.initializers.zeros, name="proj")(y.reshape(B, T, D))


class RecordMLP(nn.Module):
    """`(leaky_relu(h·W_up, 0.5))² · W_down`; W_up orthogonal, W_down zero."""

    cfg: Any

    @nn.compact
    def __call__(self, h_BxTxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        D = h_BxTxD.shape[-1]
        up = layers.Linear(int(cfg.mlp_mult * D), dtype, torch_orthogonal, name="fc")(h_BxTxD)
        act = jnp.square(jax.nn.leaky_relu(up, negative_slope=0.5))
        return layers.Linear(D, dtype, nn.initializers.zeros, name="proj")(act)


class RecordBlock(nn.Module):
    """resid_mix with x0, then attn and MLP on RMSNorm(x)·1/√(i+1) (spec §3.3)."""

    cfg: Any
    layer_idx: int
    use_xsa: bool

    @nn.compact
    def __call__(self, x: jax.Array, x0: jax.Array, ve: jax.Array | None) -> jax.Array:
        D = x.shape[-1]
        ones = nn.initializers.ones
        resid_mix = self.param(
            "resid_mix", lambda _, s: jnp.stack([jnp.ones(s), jnp.zeros(s)]), (D,)
        )
        attn_scale = self.param("attn_scale", ones, (D,), jnp.float32)
        mlp_scale = self.param("mlp_scale", ones, (D,), jnp.float32)
        s = 1.0 / math.sqrt(self.layer_idx + 1) if self.cfg.ln_scale else 1.0
        mix = resid_mix.astype(x.dtype)
        x_in = mix[0] * x + mix[1] * x0
        attn = RecordAttention(self.cfg, self.use_xsa, name="attn")(layers.rms_norm(x_in) * s, ve)
        x_out = x_in + attn_scale.astype(x.dtype) * attn
        mlp = RecordMLP(self.cfg, name="mlp")(layers.rms_norm(x_out) * s)
        return x_out + mlp_scale.astype(x.dtype) * mlp
