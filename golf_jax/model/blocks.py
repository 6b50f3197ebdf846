"""The transformer block of the one GPT (golf_jax.model.gpt) and its attention and MLP.

One block serves the upstream baseline, the PR #1318 record and the SP8192 stack; the
differences are `model.*` keys: the matrix init, the MLP activation, partial RoPE with
NTK rescaling, XSA, value embeddings, the 1/√(i+1) norm scale, and GPT-J parallel
residuals. Each matmul weight is an `(in, out)` fp32 `kernel` cast to the compute
dtype at use; the references' banks (`qo_bank`, …) are per-layer modules here, which
is the same maths (Muon orthogonalizes each bank slice independently).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from golf_jax.model import layers

# model.mlp_activation: relu² (the baseline) or LeakyReLU(0.5)² (the records)
MLP_ACTIVATIONS = ("relu2", "leaky_relu2")


def rope_base_for(seq_len: int, base: float, rope_dims: int, rope_train_seq_len: int) -> float:
    """NTK rescaling as the references apply it: `base·(T/T_train)^(rd/(rd−2))` for
    T > T_train; `rope_train_seq_len=0` never rescales (the upstream baseline)."""
    if rope_train_seq_len > 0 and seq_len > rope_train_seq_len:
        return base * (seq_len / rope_train_seq_len) ** (rope_dims / (rope_dims - 2))
    return base


def xsa(y_BxTxNxH: jax.Array, v_BxTxKxH: jax.Array) -> jax.Array:
    """Remove from each head's output its component along its own position's value (L693–702)."""
    B, T, N, H = y_BxTxNxH.shape
    K = v_BxTxKxH.shape[2]
    y_g = y_BxTxNxH.reshape(B, T, K, N // K, H)
    norm = jnp.sqrt(jnp.sum(jnp.square(v_BxTxKxH), axis=-1, keepdims=True))
    vn = (v_BxTxKxH / jnp.maximum(norm, 1e-12))[:, :, :, None, :]
    proj = jnp.sum(y_g * vn, axis=-1, keepdims=True) * vn
    return (y_g - proj).reshape(B, T, N, H)


class Attention(nn.Module):
    """GQA causal attention: QK RMS-norm, (partial, NTK-rescaled) RoPE, per-head q gain,
    optional value embedding added to v, optional XSA, and the optional sparse head-output
    gate of #1787: y_h ← σ(scale · W_h · h[:gate_window]) · y_h, from the first
    `gate_window` dims of the block's normed input (W zero-init, so σ = ½ at init)."""

    cfg: Any
    use_xsa: bool

    @nn.compact
    def __call__(self, h_BxTxD: jax.Array, ve_BxTxKH: jax.Array | None, segment_ids_BxT: jax.Array | None = None,
                 lora: dict | None = None) -> jax.Array:
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        init = layers.MATRIX_INITS[cfg.matrix_init]
        B, T, D = h_BxTxD.shape
        N, K = cfg.num_heads, cfg.num_kv_heads
        H = D // N
        q = layers.Linear(D, dtype, init, name="c_q")(h_BxTxD) + layers.lora_delta(h_BxTxD, lora, "q", dtype)
        k = layers.Linear(K * H, dtype, init, name="c_k")(h_BxTxD) + layers.lora_delta(h_BxTxD, lora, "k", dtype)
        v = layers.Linear(K * H, dtype, init, name="c_v")(h_BxTxD) + layers.lora_delta(h_BxTxD, lora, "v", dtype)
        q, k = q.reshape(B, T, N, H), k.reshape(B, T, K, H)
        if ve_BxTxKH is not None:
            v = v + ve_BxTxKH.astype(v.dtype)
        v = v.reshape(B, T, K, H)
        rope_dims = cfg.rope_dims if cfg.rope_dims > 0 else H
        base = rope_base_for(T, cfg.rope_base, rope_dims, cfg.rope_train_seq_len)
        q_gain = self.param("q_gain", nn.initializers.constant(cfg.qk_gain_init), (N,), jnp.float32)
        y = layers.normed_rotary_attention(q, k, v, q_gain, rope_dims, base, cfg.attention_impl, segment_ids_BxT)
        if self.use_xsa:
            y = xsa(y, v)
        if cfg.attn_gate == "sparse":
            gate_w = self.param("attn_gate_w", nn.initializers.zeros, (N, cfg.gate_window), jnp.float32)
            logits = h_BxTxD[..., : cfg.gate_window] @ gate_w.astype(h_BxTxD.dtype).T
            y = y * jax.nn.sigmoid(cfg.attn_gate_scale * logits)[..., None].astype(y.dtype)
        out = layers.Linear(D, dtype, nn.initializers.zeros, name="proj")(y.reshape(B, T, D))
        return out + layers.lora_delta(h_BxTxD, lora, "o", dtype)


class MLP(nn.Module):
    """`act(h·W_up) · W_down` with act = relu² (baseline) or leaky_relu(·, 0.5)²; W_down zero-init."""

    cfg: Any

    @nn.compact
    def __call__(self, h_BxTxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        D = h_BxTxD.shape[-1]
        up = layers.Linear(int(cfg.mlp_mult * D), dtype, layers.MATRIX_INITS[cfg.matrix_init], name="fc")(h_BxTxD)
        if cfg.mlp_activation == "relu2":
            act = jnp.square(jax.nn.relu(up))
        else:
            act = jnp.square(jax.nn.leaky_relu(up, negative_slope=0.5))
        return layers.Linear(D, dtype, nn.initializers.zeros, name="proj")(act)


class Block(nn.Module):
    """resid_mix with x0, then attention and MLP on RMSNorm(·)·s, s = 1/√(i+1) with ln_scale.

    Sequential: the MLP reads the post-attention stream. `parallel` (GPT-J, the SP8192
    stack from layer `parallel_residual_start`): both read `x_in` and both outputs are
    added to it. Two-lane (#1787 / #1855, `parallel_mode="two_lane"`): called with
    `lane1` and the layer's lambdas, attention reads lane 0 (mixed with x0), the MLP
    reads lane 1, and each lane is `resid·lane + post_attn·attn + post_mlp·mlp`; it
    returns both lanes. `lora` holds this use's per-document adapters (phased TTT).
    """

    cfg: Any
    layer_idx: int
    use_xsa: bool
    parallel: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, x0: jax.Array, ve: jax.Array | None, *, segment_ids: jax.Array | None = None,
                 lora: dict | None = None, lane1: jax.Array | None = None, lane_resid: jax.Array | None = None,
                 lane_post: jax.Array | None = None):
        D = x.shape[-1]
        ones = nn.initializers.ones
        resid_mix = self.param("resid_mix", lambda _, s: jnp.stack([jnp.ones(s), jnp.zeros(s)]), (D,))
        attn_scale = self.param("attn_scale", ones, (D,), jnp.float32)
        mlp_scale = self.param("mlp_scale", ones, (D,), jnp.float32)
        s = 1.0 / math.sqrt(self.layer_idx + 1) if self.cfg.ln_scale else None

        def normed(h):
            h = layers.rms_norm(h)
            return h if s is None else h * s

        def mlp_out(h):
            return mlp(h) + layers.lora_delta(h, lora, "mlp", self.cfg.compute_dtype)

        mix = resid_mix.astype(x.dtype)
        x_in = mix[0] * x + mix[1] * x0
        attn = Attention(self.cfg, self.use_xsa, name="attn")(normed(x_in), ve, segment_ids, lora)
        mlp = MLP(self.cfg, name="mlp")
        if lane1 is not None:
            a = attn_scale.astype(x.dtype) * attn
            m = mlp_scale.astype(x.dtype) * mlp_out(normed(lane1))
            resid, post = lane_resid.astype(x.dtype), lane_post.astype(x.dtype)
            return (resid[0] * x + post[0, 0] * a + post[1, 0] * m,
                    resid[1] * lane1 + post[0, 1] * a + post[1, 1] * m)
        if self.parallel:
            return x_in + attn_scale.astype(x.dtype) * attn + mlp_scale.astype(x.dtype) * mlp_out(normed(x_in))
        x_out = x_in + attn_scale.astype(x.dtype) * attn
        return x_out + mlp_scale.astype(x.dtype) * mlp_out(normed(x_out))
