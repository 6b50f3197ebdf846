"""PR #1855, the top of the final legal leaderboard (1.0611, 3 seeds; docs/reference-notes.md#frontier-stack).

The SP8192 stack of configs/sp8192_legal.py plus what #1736 → #1787 → #1797 → #1855 added:
QK gain 5, a two-lane parallel decoder from layer 8 (attention and MLP lanes mixed by
learned per-layer weights, averaged at the end) instead of GPT-J residuals, the sparse
per-head attention output gate (from the first 12 dims, scale 0.5), the windowed
BOS-masked SmearGate, attention isolated per document (segments start at each BOS), Polar-Express Newton–Schulz coefficients in MuonEq-R, momentum
0.97, matrix LR 0.026, Adam β2 0.99, and a warmdown over the last 85% to an LR floor of
0.10. Training stops 0.5 s early for calibration (16 batches), as its run command does.

Export: SDClip GPTQ int6 (per-group k: MLP 11.5σ, attention 13σ), int7 tied embedding
(GPTQ, 14σ), the gate as int8 rows, and LQER rank-4 int4 corrections of the three
worst tensors, compressed per group. Evaluation: phased score-first TTT.

The 9 tuned values of #1855 (its README): MLP clip 11.5σ, embed clip 14σ, warmdown 0.85,
β2 0.99, TTT β2 0.99, TTT wd 0.5, LoRA rank 80, sparse-gate scale 0.5, phased prefix 2,500
documents.
"""

from golf_jax.config import sibling_config  # configs/*.py load by path: from any directory


def get_config():
    c = sibling_config(__file__, "sp8192_legal")
    c.name = "frontier"

    m = c.model
    m.qk_gain_init = 5.0
    m.rope_train_seq_len = 0  # #1855 runs ROPE_YARN=0: RoPE's base is never rescaled, at any length
    m.parallel_residual_start, m.parallel_mode = 8, "two_lane"
    m.attn_gate, m.attn_gate_scale, m.gate_window = "sparse", 0.5, 12
    m.smear_gate = "window"
    m.doc_isolation = True  # the reference packs documents with varlen attention (cu_seqlens at each BOS)

    o = c.opt
    o.muon_ns_coeffs = "polar_express"
    o.muon_momentum = 0.97
    o.matrix_lr = 0.026
    o.beta2 = 0.99

    c.schedule.warmdown_frac, c.schedule.min_lr = 0.85, 0.10

    e = c.export
    e.embed_bits, e.embed_sdclip_k = 7, 14.0
    e.sdclip_k_mlp, e.sdclip_k_attn = 11.5, 13.0
    e.gate_int8 = True
    e.lqer_rank, e.lqer_top_k, e.lqer_bits, e.lqer_group = 4, 3, 4, 64
    e.compressor = "pergroup_zpaq"  # L1-sorted rows, groups by role, ZPAQ (the reference: lrzip's ZPAQ); needs `zpaq`

    v = c.eval
    v.stages = "roundtrip,ttt"
    v.ttt.mode = "phased"  # eval.phased.* defaults are #1855's run values (chunks of 48, LoRA 80, 3 phases, 2,500 docs)
    v.phased.batch_docs = 64 * 8  # 64 documents per GPU on 8 GPUs
    e.calib_seqs = 16 * 48  # 16 batches of 48 sequences
    e.reserve_seconds = 0.5
    return c
