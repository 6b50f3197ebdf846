"""The SP8192 stack of PR #1735 / #1738 / #1758 (docs/reference-notes.md#sp8192-stack), legal.

Model: SP8192 vocabulary with a 512-d tied embedding, 11 layers × 512, 8/4 heads, MLP 4×
LeakyReLU(0.5)², XSA on every layer, partial RoPE (16 of 64 dims, no NTK rescale up to
2048), QK gain 5.25, 1/√(i+1) norm scale, sigmoid-gated U-Net skips, GPT-J parallel
residuals from layer 7, and depth recurrence: layers 3–5 run three times (virtual order
[0,1,2,3,4,5,3,4,5,3,4,5,6,7,8,9,10]) once 35% of the training time has passed. No
BigramHash, SmearGate, value embeddings or MTP.

Training: MuonEq-R (rows normalised before Newton–Schulz) at LR 0.022 / wd 0.095, Adam
for the tied embedding (0.03 / 0.085) and the scalars (0.02 / 0.02), β (0.9, 0.95), clip
0.3, momentum 0.92 → 0.99 over 1,500 steps, EMA 0.9965; LR by wallclock fraction with a
linear warmdown over the last 72% (floor schedule.min_lr = 0, as #1735); 786,432 tokens
× 2048 per step; the shuffled-sequence loader; training stops 12 s early so that GPTQ
calibration on training data fits inside the 600 s.

Export: GPTQ int6 with SDClip (k = 12.85, clip ±31, damp 0.01) for the block matrices,
GPTQ int8 (k = 20) for the tied embedding with its Hessian from the final-norm output,
byte-shuffle + brotli-11. Evaluation: round trip, merged-rule sliding s64, then legal
score-first TTT (the merged 1.0828 record's shape: SGD 0.005, momentum 0.9, 3 epochs
per 32,768-token chunk, blocks 0–1 frozen) instead of #1758's pre-quant TTT — a step
toward our legal record (configs/sp8192_prequant_ttt.py reproduces #1758).

Data: point `data.dir` at SP8192 shards (`python -m golf_jax.data.prepare` with
`fineweb_8192_bpe.model`, or `--caseops` for #1738's CaseOps shards with their byte
sidecar) and `data.tokenizer` at the tokenizer.
"""

from golf_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "sp8192_legal"
    c.data.source = "dir"
    c.data.loader = "shuffled"

    m = c.model
    m.vocab_size = 8192
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 11, 512, 8, 4
    m.mlp_mult, m.mlp_activation, m.matrix_init = 4.0, "leaky_relu2", "orthogonal"
    m.residual_dtype = "float32"  # torch autocast keeps the residual stream fp32
    m.rope_base, m.rope_dims, m.rope_train_seq_len = 10000.0, 16, 2048
    m.qk_gain_init, m.xsa_last_n, m.ln_scale = 5.25, 11, True
    m.logit_softcap, m.tied_embed_init_std = 30.0, 0.005
    m.skip_gates = True
    m.parallel_residual_start = 7
    m.num_loops, m.loop_start, m.loop_end, m.loop_enable_frac = 2, 3, 5, 0.35

    o = c.opt
    o.muon_variant = "muoneq_r"
    o.matrix_lr, o.scalar_lr, o.tied_embed_lr = 0.022, 0.02, 0.03
    o.muon_weight_decay, o.adam_weight_decay, o.embed_weight_decay = 0.095, 0.02, 0.085
    o.beta1, o.beta2, o.adam_eps = 0.9, 0.95, 1e-8
    o.muon_momentum, o.muon_momentum_warmup_start, o.muon_momentum_warmup_steps = 0.99, 0.92, 1500
    o.muon_ns_steps = 5
    o.grad_clip_norm = 0.3

    s = c.schedule
    s.mode, s.warmdown_frac, s.min_lr = "wallclock_fraction", 0.72, 0.0

    t = c.train
    t.seq_len, t.batch_tokens, t.iterations = 2048, 786_432, 20_000
    t.max_wallclock_seconds = 600.0
    t.val_every, t.log_every = 4000, 500
    t.ema_decay = 0.9965

    e = c.export
    e.format = "gptq_int6"
    e.gptq_clip, e.sdclip_k, e.gptq_damp, e.gptq_block = "sdclip", 12.85, 0.01, 128
    e.embed_quant, e.embed_sdclip_k = "gptq", 20.0
    e.compressor = "brotli"  # with the stride-2 byte shuffle
    e.calib_source = "train"
    e.calib_seqs = 12_288  # 256 batches × 48 sequences, the reference's calibration volume
    e.reserve_seconds = 12.0

    v = c.eval
    v.stages = "roundtrip,sliding,ttt"
    v.sliding.stride, v.sliding.batch_windows, v.sliding.window_rule = 64, 32, "merged"
    v.ttt.mode, v.ttt.optimizer, v.ttt.lr, v.ttt.momentum = "score_first", "sgd", 0.005, 0.9
    v.ttt.chunk_tokens, v.ttt.epochs, v.ttt.batch_seqs, v.ttt.grad_clip = 32_768, 3, 32, 1.0
    v.ttt.freeze_blocks, v.ttt.freeze_scope = 2, "blocks"
    return c
