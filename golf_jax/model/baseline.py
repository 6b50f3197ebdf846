"""The upstream naive-baseline GPT (openai/parameter-golf `train_gpt.py`, val_bpb 1.2244).

9 layers, d=512, 8 heads / 4 KV heads, full-head RoPE, QK RMS-norm with a per-head
q gain, relu² MLP ×2, resid_mix with x0, U-Net skips, tied embeddings, softcap 30.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import traverse_util

from golf_jax.model import layers


class Attention(nn.Module):
    cfg: Any

    @nn.compact
    def __call__(self, h_BxTxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        B, T, D = h_BxTxD.shape
        head_dim = D // cfg.num_heads
        q = layers.Linear(D, dtype, name="c_q")(h_BxTxD).reshape(B, T, cfg.num_heads, head_dim)
        k = layers.Linear(cfg.num_kv_heads * head_dim, dtype, name="c_k")(h_BxTxD)
        v = layers.Linear(cfg.num_kv_heads * head_dim, dtype, name="c_v")(h_BxTxD)
        k = k.reshape(B, T, cfg.num_kv_heads, head_dim)
        v = v.reshape(B, T, cfg.num_kv_heads, head_dim)
        q_gain = self.param("q_gain", nn.initializers.constant(cfg.qk_gain_init), (cfg.num_heads,))
        y = layers.normed_rotary_attention(q, k, v, q_gain, head_dim, cfg.rope_base, cfg.attention_impl)
        return layers.Linear(D, dtype, nn.initializers.zeros, name="proj")(y.reshape(B, T, D))


class MLP(nn.Module):
    cfg: Any

    @nn.compact
    def __call__(self, h_BxTxD: jax.Array) -> jax.Array:
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        D = h_BxTxD.shape[-1]
        up = layers.Linear(int(cfg.mlp_mult * D), dtype, name="fc")(h_BxTxD)
        return layers.Linear(D, dtype, nn.initializers.zeros, name="proj")(jnp.square(jax.nn.relu(up)))


class Block(nn.Module):
    cfg: Any

    @nn.compact
    def __call__(self, x: jax.Array, x0: jax.Array) -> jax.Array:
        D = x.shape[-1]
        ones = nn.initializers.ones
        resid_mix = self.param("resid_mix", lambda _, s: jnp.stack([jnp.ones(s), jnp.zeros(s)]), (D,))
        attn_scale = self.param("attn_scale", ones, (D,))
        mlp_scale = self.param("mlp_scale", ones, (D,))
        x = resid_mix[0].astype(x.dtype) * x + resid_mix[1].astype(x.dtype) * x0
        x = x + attn_scale.astype(x.dtype) * Attention(self.cfg, name="attn")(layers.rms_norm(x))
        x = x + mlp_scale.astype(x.dtype) * MLP(self.cfg, name="mlp")(layers.rms_norm(x))
        return x


class BaselineGPT(nn.Module):
    """`apply(params, tokens_BxT) -> logits_BxTxV` (softcapped, compute dtype)."""

    cfg: Any

    def setup(self):
        cfg = self.cfg
        self.tok_emb = nn.Embed(
            cfg.vocab_size,
            cfg.model_dim,
            embedding_init=nn.initializers.normal(cfg.tied_embed_init_std),
            param_dtype=jnp.float32,
        )
        self.blocks = [Block(cfg, name=f"blocks_{i}") for i in range(cfg.num_layers)]
        self.num_encoder = cfg.num_layers // 2
        num_skips = min(self.num_encoder, cfg.num_layers - self.num_encoder)
        self.skip_weights = self.param("skip_weights", nn.initializers.ones, (num_skips, cfg.model_dim))

    def hidden(self, tokens_BxT: jax.Array) -> jax.Array:
        """Final-normed hidden states [B, T, D] (the residual stream is fp32)."""
        x = layers.rms_norm(self.tok_emb(tokens_BxT).astype(jnp.float32))
        x0 = x
        skips = []
        for i in range(self.num_encoder):
            x = self.blocks[i](x, x0)
            skips.append(x)
        for j, block in enumerate(self.blocks[self.num_encoder :]):
            if skips:
                x = x + self.skip_weights[j].astype(x.dtype) * skips.pop()
            x = block(x, x0)
        return layers.rms_norm(x)

    def logits_from_hidden(self, h_BxTxD: jax.Array, bias_V: jax.Array | None = None) -> jax.Array:
        """Softcapped logits; `bias_V` (PR #675's SLOT logit bias) is added before the softcap."""
        dtype = jnp.dtype(self.cfg.compute_dtype)
        logits = jnp.dot(h_BxTxD.astype(dtype), self.tok_emb.embedding.astype(dtype).T)
        if bias_V is not None:
            logits = logits.astype(jnp.float32) + bias_V
        return layers.softcap(logits, self.cfg.logit_softcap)

    def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
        return self.logits_from_hidden(self.hidden(tokens_BxT))

    def loss(self, tokens_BxT: jax.Array, targets_BxT: jax.Array) -> tuple[jax.Array, dict]:
        nll_BxT = layers.cross_entropy_BxT(self(tokens_BxT), targets_BxT)
        return jnp.mean(nll_BxT), {}


CONTROL_NAMES = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights")


def param_labels(params: dict) -> dict:
    """Muon for block matrices, 'embed' for the tied table, 'scalar' for the rest."""

    def label(path: tuple[str, ...], leaf) -> str:
        if path[0] == "tok_emb":
            return "embed"
        if path[0].startswith("blocks_") and leaf.ndim == 2 and path[-1] == "kernel":
            return "muon"
        return "scalar"

    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({p: label(p, v) for p, v in flat.items()})
