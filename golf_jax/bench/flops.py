"""Model FLOPs per token, the numerator of MFU, in docs/reference-notes.md#flops-mfu's conventions.

Causal-effective: a query attends to T/2 keys on average, so QKᵀ and AV cost
2·2·D·T/2 = 2·D·T per token per layer in the forward, 6·D·T in training. Matmuls
cost 2 FLOPs per weight per token forward, 6 in training (N_matmul counts every
`kernel` leaf, looped blocks once per use, plus the tied head V·D; the embedding
gather is no matmul). Elementwise work, norms and Muon's Newton–Schulz (< 0.2 % at
the record shape) are not counted; XLA's own count (`xla_flops_per_device_call` in the JSON)
includes them, and the attention the implementation actually computes.

  training:  6·N_matmul + 6·L·T·D  per token (MTP heads included: the loss runs them)
  forward:   2·N_body + 2·L·T·D per token + 2·V·D per position whose logits are formed
             (N_body: N_matmul without the head and the MTP heads, which eval never runs)
"""

from __future__ import annotations

import collections

import numpy as np
from flax import traverse_util

from golf_jax.model import gpt


def _layers_and_uses(cfg):
    encoder, decoder = gpt.layer_order(cfg.model, looping=True)
    return len(encoder) + len(decoder), collections.Counter(encoder + decoder)


def matmul_params(cfg, params, mtp_heads: bool = True) -> int:
    """N_matmul: kernel weights per token, a looped block's once per use, plus the tied head."""
    _, uses = _layers_and_uses(cfg)

    def times_used(path) -> int:
        if path[0].startswith("mtp_heads_") and not mtp_heads:
            return 0
        return uses[int(path[0].split("_")[1])] if path[0].startswith("blocks_") else 1

    flat = traverse_util.flatten_dict(params)
    n = sum(int(np.prod(v.shape)) * times_used(k) for k, v in flat.items() if k[-1] == "kernel")
    return n + int(cfg.model.vocab_size) * int(cfg.model.model_dim)


def train_per_token(cfg, params, seq_len: int, mtp_heads: bool = True) -> float:
    """6·N_matmul + 6·L·T·D (TTT trains the eval model: mtp_heads=False)."""
    n_layers, _ = _layers_and_uses(cfg)
    return 6.0 * matmul_params(cfg, params, mtp_heads) + 6.0 * n_layers * seq_len * int(cfg.model.model_dim)


def attention_forward(cfg, seq_len: int, sequences: float) -> float:
    """The causal attention term of `forward`: 2·L·T·D per token."""
    n_layers, _ = _layers_and_uses(cfg)
    return sequences * seq_len * 2.0 * n_layers * seq_len * int(cfg.model.model_dim)


def forward(cfg, params, seq_len: int, sequences: float, logit_positions: float) -> float:
    """FLOPs of `sequences` forwards of seq_len tokens with logits formed at `logit_positions` positions in all."""
    V, D = int(cfg.model.vocab_size), int(cfg.model.model_dim)
    body = matmul_params(cfg, params, mtp_heads=False) - V * D
    return (sequences * seq_len * 2.0 * body + attention_forward(cfg, seq_len, sequences)
            + logit_positions * 2.0 * V * D)
