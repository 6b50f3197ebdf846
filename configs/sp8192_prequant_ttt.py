"""PR #1758 (1.02840 claimed): the SP8192 stack of configs/sp8192_legal.py with #1735's
parallel pre-quant TTT as #1758 retuned it (docs/reference-notes.md#prequant-parallel). NON-COMPLIANT.

After training and the EMA, every device trains its own replica on val chunks r, r+W, …
(32,768 tokens each, one AdamW step of 16 × 2048 per chunk, lr 1e-3 cosine-annealed
per epoch to 1e-4, no weight decay, clip 1.0) for 21 epochs, averaging the replicas'
weights after each epoch; all blocks train (freeze 0), the tied embedding stays frozen.
It trains on every val token before any is scored, so the score is labelled
"non-compliant (reproduction)". Then GPTQ, the round trip and the sliding eval that
#1758 reports. The reference's whole post-training work took about 750 s (over the
600 s evaluation budget); the summary's eval budget says how ours compares.
"""

from golf_jax.config import sibling_config  # configs/*.py load by path: from any directory


def get_config():
    c = sibling_config(__file__, "sp8192_legal")
    c.name = "sp8192_prequant_ttt"
    v = c.eval
    v.stages = "roundtrip,sliding"
    p = v.prequant_ttt
    p.mode, p.epochs, p.lr, p.lr_floor = "parallel", 21, 1e-3, 1e-4
    p.weight_decay, p.grad_clip, p.chunk_tokens = 0.0, 1.0, 32_768
    p.freeze_blocks, p.freeze_scope, p.freeze_embed = 0, "blocks", True
    return c
