"""The PR #1318 record GPT (spec reference-pr1318.md §3) and its optimizer labels.

11 layers, d=512, 8/4 heads, partial NTK RoPE (16 of 64 dims), QK RMS-norm, q gain 4,
XSA on every layer, LeakyReLU(0.5)² MLP ×3, ln scale 1/√(i+1), resid_mix with x0,
SmearGate, BigramHash 3072×112, ValueEmbedding on layers 9–10, U-Net skips, MTP
heads (train loss only), tied embeddings with softcap 30.

Pytree (all fp32 masters; matmul weights are `(in, out)` `kernel`s):
`tok_emb/embedding`, `bigram/{embed, proj/kernel, scale}`, `smear/gate`,
`skip_weights`, `blocks_i/{resid_mix, attn_scale, mlp_scale}`,
`blocks_i/attn/{c_q, c_k, c_v, proj}/kernel`, `blocks_i/attn/q_gain`,
`blocks_i/mlp/{fc, proj}/kernel`, `ve_shared/{embed, proj/kernel, scale}`,
`ve_layer_scales` [n_ve], `mtp_heads_k/kernel`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from golf_jax.model import layers
from golf_jax.model.record_layers import (
    BigramHash,
    RecordBlock,
    SmearGate,
    ValueEmbedding,
)


def ve_layer_indices(cfg: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in str(cfg.ve_layers).split(",") if x.strip())


class RecordGPT(nn.Module):
    """`apply(params, tokens_BxT) -> logits_BxTxV` (softcapped); `loss` adds MTP."""

    cfg: Any

    def setup(self):
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        D, L = cfg.model_dim, cfg.num_layers
        kv_dim = cfg.num_kv_heads * (D // cfg.num_heads)
        self.tok_emb = nn.Embed(
            cfg.vocab_size,
            D,
            embedding_init=nn.initializers.normal(cfg.tied_embed_init_std),
            param_dtype=jnp.float32,
            dtype=dtype,
        )
        self.bigram = (
            BigramHash(cfg.bigram_vocab_size, cfg.bigram_dim, D, dtype, name="bigram")
            if cfg.bigram_vocab_size > 0
            else None
        )
        self.smear = SmearGate(D)
        self.num_encoder = L // 2
        num_skips = min(self.num_encoder, L - self.num_encoder)
        self.skip_weights = self.param("skip_weights", nn.initializers.ones, (num_skips, D))
        xsa_from = max(0, L - cfg.xsa_last_n) if cfg.xsa_last_n > 0 else L
        self.blocks = [RecordBlock(cfg, i, i >= xsa_from, name=f"blocks_{i}") for i in range(L)]
        self.ve_layers = ve_layer_indices(cfg)
        if self.ve_layers:
            self.ve_shared = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, kv_dim, dtype)
            self.ve_layer_scales = self.param(
                "ve_layer_scales", nn.initializers.ones, (len(self.ve_layers),)
            )
        self.mtp_heads = [
            layers.Linear(cfg.vocab_size, dtype, nn.initializers.zeros, name=f"mtp_heads_{k}")
            for k in range(cfg.mtp_num_heads)
        ]

    def hidden(self, tokens_BxT: jax.Array, embed_delta_BxTxD: jax.Array | None = None) -> jax.Array:
        """Final-normed hidden states [B, T, D] in the compute dtype.

        `embed_delta_BxTxD` (tests only) is added to the token+bigram embedding before
        the first norm: a continuous input through which causality can be checked.
        """
        dtype = jnp.dtype(self.cfg.compute_dtype)
        x = self.tok_emb(tokens_BxT).astype(dtype)
        if self.bigram is not None:
            x = x + self.bigram(tokens_BxT).astype(dtype)
        if embed_delta_BxTxD is not None:
            x = x + embed_delta_BxTxD.astype(dtype)
        x = self.smear(layers.rms_norm(x))
        x0 = x
        ve_base = self.ve_shared(tokens_BxT) if self.ve_layers else None

        def ve_for(i: int) -> jax.Array | None:
            if i not in self.ve_layers:
                return None
            scale = self.ve_layer_scales[self.ve_layers.index(i)]
            return ve_base * scale.astype(ve_base.dtype)

        skips = []
        for i in range(self.num_encoder):
            x = self.blocks[i](x, x0, ve_for(i))
            skips.append(x)
        for j, block in enumerate(self.blocks[self.num_encoder :]):
            if skips:
                x = x + self.skip_weights[j].astype(x.dtype) * skips.pop()
            x = block(x, x0, ve_for(self.num_encoder + j))
        return layers.rms_norm(x)

    def logits_from_hidden(self, h_BxTxD: jax.Array, bias_V: jax.Array | None = None) -> jax.Array:
        """Softcapped logits; `bias_V` (PR #675's SLOT logit bias) is added before the softcap."""
        dtype = jnp.dtype(self.cfg.compute_dtype)
        logits = jnp.dot(h_BxTxD.astype(dtype), self.tok_emb.embedding.astype(dtype).T)
        if bias_V is not None:
            logits = logits.astype(jnp.float32) + bias_V
        return layers.softcap(logits, self.cfg.logit_softcap)

    def __call__(self, tokens_BxT: jax.Array, embed_delta_BxTxD: jax.Array | None = None) -> jax.Array:
        if self.is_initializing():  # create the MTP heads' params too
            h = self.hidden(tokens_BxT)
            for head in self.mtp_heads:
                head(h)
            return self.logits_from_hidden(h)
        return self.logits_from_hidden(self.hidden(tokens_BxT, embed_delta_BxTxD))

    def loss(self, tokens_BxT: jax.Array, targets_BxT: jax.Array) -> tuple[jax.Array, dict]:
        """Training loss: mean CE + mtp_loss_weight · mean_k CE_k (head k predicts y[t+k+1])."""
        cfg = self.cfg
        h = self.hidden(tokens_BxT)
        main = jnp.mean(layers.cross_entropy_BxT(self.logits_from_hidden(h), targets_BxT))
        T = tokens_BxT.shape[1]
        mtp_terms = []
        if cfg.mtp_loss_weight > 0.0:
            for k, head in enumerate(self.mtp_heads):
                valid = T - (k + 1)
                if valid <= 0:
                    continue
                logits = layers.softcap(head(h[:, :valid]), cfg.logit_softcap)
                mtp_terms.append(jnp.mean(layers.cross_entropy_BxT(logits, targets_BxT[:, k + 1 :])))
        if not mtp_terms:
            return main, {"main_loss": main}
        mtp = sum(mtp_terms) / len(mtp_terms)
        return main + cfg.mtp_loss_weight * mtp, {"main_loss": main, "mtp_loss": mtp}


EMBED_PATHS = (("tok_emb", "embedding"), ("bigram", "embed"), ("ve_shared", "embed"))


def make_param_labels(mtp_untrained: bool = False):
    """Labels per spec §4.1: Muon for block matrices, the three tables 'embed', the rest
    'scalar' (incl. bigram.proj and ve_shared.proj); MTP heads 'head', or 'frozen' with
    `compat.mtp_untrained` (the reference never trains them, §8.1)."""

    def param_labels(params: dict) -> dict:
        def label(path: tuple[str, ...], leaf) -> str:
            if path in EMBED_PATHS:
                return "embed"
            if path[0].startswith("mtp_heads_"):
                return "frozen" if mtp_untrained else "head"
            if path[0].startswith("blocks_") and path[-1] == "kernel" and np.ndim(leaf) == 2:
                return "muon"
            return "scalar"

        flat = traverse_util.flatten_dict(params)
        return traverse_util.unflatten_dict({p: label(p, v) for p, v in flat.items()})

    return param_labels


param_labels = make_param_labels(False)


def params_from_reference(state_dict: Mapping[str, np.ndarray]) -> dict:
    """The reference's (banked, torch `(out, in)`) state dict as our params pytree (fp32).

    Also accepts the unbanked export names (`blocks.i.attn.c_q.weight`, …, spec §3.4).
    """
    sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
    flat: dict[tuple[str, ...], np.ndarray] = {}
    if "qo_bank" in sd:
        n = sd["mlp_up_bank"].shape[0]
        for i in range(n):
            sd[f"blocks.{i}.attn.c_q.weight"] = sd["qo_bank"][i]
            sd[f"blocks.{i}.attn.proj.weight"] = sd["qo_bank"][n + i]
            sd[f"blocks.{i}.attn.c_k.weight"] = sd["kv_bank"][i]
            sd[f"blocks.{i}.attn.c_v.weight"] = sd["kv_bank"][n + i]
            sd[f"blocks.{i}.mlp.fc.weight"] = sd["mlp_up_bank"][i]
            sd[f"blocks.{i}.mlp.proj.weight"] = sd["mlp_down_bank"][i]
        for bank in ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank"):
            del sd[bank]
    ve_scales = sorted(k for k in sd if k.startswith("ve_layer_scales."))
    if ve_scales:
        flat[("ve_layer_scales",)] = np.concatenate(
            [sd.pop(k).reshape(-1) for k in sorted(ve_scales, key=lambda k: int(k.split(".")[1]))]
        )
    direct = {
        "tok_emb.weight": ("tok_emb", "embedding"),
        "bigram.embed.weight": ("bigram", "embed"),
        "bigram.scale": ("bigram", "scale"),
        "smear.gate": ("smear", "gate"),
        "skip_weights": ("skip_weights",),
        "ve_shared.embed.weight": ("ve_shared", "embed"),
        "ve_shared.scale": ("ve_shared", "scale"),
    }
    for name, arr in sd.items():
        parts = name.split(".")
        if name in direct:
            flat[direct[name]] = arr
        elif name in ("bigram.proj.weight", "ve_shared.proj.weight"):
            flat[(parts[0], "proj", "kernel")] = arr.T
        elif parts[0] == "mtp_heads":
            flat[(f"mtp_heads_{parts[1]}", "kernel")] = arr.T
        elif parts[0] == "blocks":
            block = f"blocks_{parts[1]}"
            if parts[-1] == "weight":  # blocks.i.{attn,mlp}.{c_q,…}.weight
                flat[(block, parts[2], parts[3], "kernel")] = arr.T
            elif parts[2] == "attn":  # blocks.i.attn.q_gain
                flat[(block, "attn", parts[3])] = arr
            else:  # resid_mix, attn_scale, mlp_scale
                flat[(block, parts[2])] = arr
        else:
            raise ValueError(f"params_from_reference: unknown reference tensor {name!r}")
    return traverse_util.unflatten_dict(flat)
