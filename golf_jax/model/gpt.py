"""The one GPT of golf_jax: every model is a config of this module.

The skeleton is the upstream one (tied embeddings, RMSNorm'd input, resid_mix with
x0, a U-Net of blocks with skip connections, softcap 30). Features are `model.*` keys:

* the PR #1318 record (docs/reference-notes.md#record-model): partial NTK RoPE, XSA,
  LeakyReLU² MLP, the 1/√(i+1) norm scale, SmearGate, BigramHash, value embeddings,
  MTP heads (train loss only), orthogonal init, a residual stream in the compute dtype;
* the SP8192 stack of #1735/#1758 (docs/reference-notes.md#sp8192-stack): sigmoid-gated skips
  (`skip_gates`), GPT-J parallel residuals from layer `parallel_residual_start`, and
  depth recurrence: layers loop_start..loop_end run `num_loops` extra times, giving
  e.g. the virtual order [0,1,2,3,4,5,3,4,5,3,4,5,6,7,8,9,10] with shared weights.
  Training switches the loop on at a wallclock fraction (`loop_enable_frac`); the
  module attribute `looping` selects the graph, so both compile before the clock.

`configs/baseline.py`, `configs/record.py` and `configs/sp8192_*.py` are the presets.

Pytree (fp32 masters; matmul weights are `(in, out)` `kernel`s): `tok_emb/embedding`,
`skip_weights` [S, D], `skip_gates` [S, D], `blocks_i/{resid_mix, attn_scale, mlp_scale}`,
`blocks_i/attn/{c_q, c_k, c_v, proj}/kernel`, `blocks_i/attn/q_gain`,
`blocks_i/mlp/{fc, proj}/kernel`, and with the record features `bigram/{embed,
proj/kernel, scale}`, `smear/gate`, `ve_shared/{embed, proj/kernel, scale}`,
`ve_layer_scales` [n_ve], `mtp_heads_k/kernel`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from golf_jax.model import layers
from golf_jax.model.blocks import Block
from golf_jax.model.embeddings import BOS_ID, BigramHash, SmearGate, ValueEmbedding, WindowSmearGate


def ve_layer_indices(cfg: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in str(cfg.ve_layers).split(",") if x.strip())


def layer_order(cfg: Any, looping: bool) -> tuple[list[int], list[int]]:
    """(encoder, decoder) physical block indices in the order they run.

    Without recurrence: the first L//2 blocks encode, the rest decode. With it
    (num_loops > 0 and `looping`), the segment loop_start..loop_end repeats
    num_loops+1 times and the virtual sequence is split in half the same way.
    """
    L = int(cfg.num_layers)
    if cfg.num_loops > 0 and looping:
        seg = list(range(cfg.loop_start, cfg.loop_end + 1))
        order = list(range(cfg.loop_start)) + seg * (cfg.num_loops + 1) + list(range(cfg.loop_end + 1, L))
    else:
        order = list(range(L))
    half = len(order) // 2
    return order[:half], order[half:]


def num_skips(cfg: Any) -> int:
    """U-Net skip connections: one per encoder output the decoder can take (of the looped order)."""
    enc, dec = layer_order(cfg, looping=True)
    return min(len(enc), len(dec))


def lora_slots(cfg: Any) -> int:
    """Block calls per forward (the looped order's length): one LoRA slot each."""
    encoder, decoder = layer_order(cfg, looping=True)
    return len(encoder) + len(decoder)


def slot_lora(lora: dict | None, u: int) -> dict | None:
    """Slot u's adapters (A/B of q, k, v, o, mlp) of every row, from the stacked LoRA pytree."""
    if lora is None:
        return None
    out = {k: v[:, u] for k, v in lora.items() if k.endswith(("_A", "_B")) and not k.startswith("head_")}
    out["scale"] = lora["scale"]
    return out


class GPT(nn.Module):
    """`apply(params, tokens_BxT) -> logits_BxTxV` (softcapped); `loss` adds MTP."""

    cfg: Any
    looping: bool = True  # depth recurrence on (the trained model's graph); training starts with it off

    def setup(self):
        cfg = self.cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        D, L = cfg.model_dim, cfg.num_layers
        kv_dim = cfg.num_kv_heads * (D // cfg.num_heads)
        self.residual_dtype = dtype if cfg.residual_dtype == "compute" else jnp.dtype(jnp.float32)
        self.tok_emb = nn.Embed(
            cfg.vocab_size,
            D,
            embedding_init=nn.initializers.normal(cfg.tied_embed_init_std),
            param_dtype=jnp.float32,
            dtype=self.residual_dtype,
        )
        self.bigram = (
            BigramHash(cfg.bigram_vocab_size, cfg.bigram_dim, D, dtype, name="bigram")
            if cfg.bigram_vocab_size > 0
            else None
        )
        smear = {"record": lambda: SmearGate(D), "window": lambda: WindowSmearGate(cfg.gate_window)}
        self.smear = smear[cfg.smear_gate]() if cfg.smear_gate in smear else None
        S = num_skips(cfg)
        self.skip_weights = self.param("skip_weights", nn.initializers.ones, (S, D))
        self.skip_gates = self.param("skip_gates", nn.initializers.zeros, (S, D)) if cfg.skip_gates else None
        xsa_from = max(0, L - cfg.xsa_last_n) if cfg.xsa_last_n > 0 else L
        par_from = cfg.parallel_residual_start if cfg.parallel_residual_start >= 0 else L
        gptj = cfg.parallel_mode == "gptj"
        self.blocks = [Block(cfg, i, i >= xsa_from, gptj and i >= par_from, name=f"blocks_{i}") for i in range(L)]
        if cfg.parallel_mode == "two_lane" and cfg.parallel_residual_start >= 0:
            # per layer: lane residual weights [attn lane, mlp lane] (init 1.1) and the
            # [attn, mlp] outputs' weights into [lane 0, lane 1] (init 1), as #1787
            self.lane_resid = self.param("parallel_resid_lambdas", nn.initializers.constant(1.1), (L, 2))
            self.lane_post = self.param("parallel_post_lambdas", nn.initializers.ones, (L, 2, 2))
        self.ve_layers = ve_layer_indices(cfg)
        if self.ve_layers:
            self.ve_shared = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, kv_dim, dtype)
            self.ve_layer_scales = self.param("ve_layer_scales", nn.initializers.ones, (len(self.ve_layers),))
        self.mtp_heads = [
            layers.Linear(cfg.vocab_size, dtype, nn.initializers.zeros, name=f"mtp_heads_{k}")
            for k in range(cfg.mtp_num_heads)
        ]

    def hidden(self, tokens_BxT: jax.Array, embed_delta_BxTxD: jax.Array | None = None, *,
               segment_ids_BxT: jax.Array | None = None, lora: dict | None = None) -> jax.Array:
        """Final-normed hidden states [B, T, D] in the residual dtype.

        `embed_delta_BxTxD` (tests only) is added to the token+bigram embedding before
        the first norm: a continuous input through which causality can be checked.
        `segment_ids_BxT` keeps packed documents apart in attention; with
        `model.doc_isolation` they come from the tokens (a new segment at every BOS).
        `lora` (phased TTT) holds each row's adapters, [B, slot, ...] with slot u = the u-th
        block call of the layer order (see `lora_slots`), plus `scale` and the head's
        adapter [B, ...].
        """
        dtype = self.residual_dtype
        if self.cfg.doc_isolation and segment_ids_BxT is None:  # segment = documents begun so far (causal)
            segment_ids_BxT = jnp.cumsum(tokens_BxT == BOS_ID, axis=1)
        x = self.tok_emb(tokens_BxT).astype(dtype)
        if self.bigram is not None:
            x = x + self.bigram(tokens_BxT).astype(dtype)
        if embed_delta_BxTxD is not None:
            x = x + embed_delta_BxTxD.astype(dtype)
        if self.cfg.smear_gate == "window":
            x = self.smear(x, tokens_BxT)
        x = layers.rms_norm(x)
        if self.cfg.smear_gate == "record":
            x = self.smear(x)
        x0 = x
        ve_base = self.ve_shared(tokens_BxT) if self.ve_layers else None

        def block(u: int, i: int, h: jax.Array, **lanes):
            ve = None
            if i in self.ve_layers:
                ve = ve_base * self.ve_layer_scales[self.ve_layers.index(i)].astype(ve_base.dtype)
            return self.blocks[i](h, x0, ve, segment_ids=segment_ids_BxT, lora=slot_lora(lora, u), **lanes)

        encoder, decoder = layer_order(self.cfg, self.looping)
        skips, lane1 = [], None
        for u, i in enumerate(encoder):
            x = block(u, i, x)
            skips.append(x)
        for j, i in enumerate(decoder):
            two_lane = self.cfg.parallel_mode == "two_lane" and 0 < self.cfg.parallel_residual_start <= i
            if two_lane and lane1 is None:
                lane1 = x  # both lanes start from the stream (x is lane 0 from here on)
            if j < self.skip_weights.shape[0] and skips:
                scaled_skip = self.skip_weights[j].astype(x.dtype) * skips.pop()
                if self.skip_gates is None:
                    x = x + scaled_skip
                else:  # torch.lerp(scaled_skip, x, g): g = 1 keeps x, g = 0 takes the skip
                    g = jax.nn.sigmoid(self.skip_gates[j].astype(x.dtype))
                    x = scaled_skip + g * (x - scaled_skip)
            if two_lane:
                x, lane1 = block(len(encoder) + j, i, x, lane1=lane1, lane_resid=self.lane_resid[i],
                                 lane_post=self.lane_post[i])
            else:
                x = block(len(encoder) + j, i, x)
        if lane1 is not None:
            x = 0.5 * (x + lane1)  # the reference's final lane "mean"
        return layers.rms_norm(x)

    def logits_from_hidden(self, h_BxTxD: jax.Array, bias_V: jax.Array | None = None,
                           lora: dict | None = None) -> jax.Array:
        """Softcapped logits; `bias_V` (PR #675's SLOT logit bias) and the head's LoRA
        (phased TTT) are added before the softcap."""
        dtype = jnp.dtype(self.cfg.compute_dtype)
        logits = layers.matmul_2d(h_BxTxD.astype(dtype), self.tok_emb.embedding.astype(dtype).T)
        if lora is not None and "head_A" in lora:
            logits = logits + layers.lora_delta(h_BxTxD, {k: lora[k] for k in ("head_A", "head_B", "scale")}, "head",
                                                dtype)
        if bias_V is not None:
            logits = logits.astype(jnp.float32) + bias_V
        return layers.softcap(logits, self.cfg.logit_softcap)

    def __call__(self, tokens_BxT: jax.Array, embed_delta_BxTxD: jax.Array | None = None, *,
                 segment_ids_BxT: jax.Array | None = None, lora: dict | None = None) -> jax.Array:
        if self.is_initializing():  # create the MTP heads' params too
            h = self.hidden(tokens_BxT)
            for head in self.mtp_heads:
                head(h)
            return self.logits_from_hidden(h)
        h = self.hidden(tokens_BxT, embed_delta_BxTxD, segment_ids_BxT=segment_ids_BxT, lora=lora)
        return self.logits_from_hidden(h, lora=lora)

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
            return main, {}
        mtp = sum(mtp_terms) / len(mtp_terms)
        return main + cfg.mtp_loss_weight * mtp, {"main_loss": main, "mtp_loss": mtp}


EMBED_PATHS = (("tok_emb", "embedding"), ("bigram", "embed"), ("ve_shared", "embed"))


def make_param_labels(mtp_untrained: bool = False):
    """Labels per docs/reference-notes.md#param-groups (the record's optimizer groups): Muon for block matrices, the
    three tables 'embed', the rest 'scalar' (incl. skip weights and gates, bigram.proj and
    ve_shared.proj); MTP heads 'head', or 'frozen' with `compat.mtp_untrained` (the
    reference never trains them, docs/reference-notes.md#mtp-untrained). The baseline and SP8192 groups are the same rule."""

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
