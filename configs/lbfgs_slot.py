"""PR #675 ("L-BFGS SLOT", 0.5793, non-causal): the #1303/#1313 11-layer stack.

Source: openai/parameter-golf PR #675 head 5149815c, `2026-04-06_LBFGS_SLOT_0.5793/train_gpt.py`
(docs/reference-notes.md#slot-pr675). Relative to configs/record.py:

* QK-gain init 4.0 (same); WARMDOWN_ITERS 3500;
* BigramHash 1024×128; no MTP heads;
* value residual (VRL: sigmoid-gated mix of layer 0's raw v into layers 1..10, gate init
  −1.5) — NOT implemented by golf_jax's record model yet; this config leaves it out;
* unbanked CastedLinear matrices with orthogonal init and 1/√(2L)-scaled projections;
* int6 per-row with a 5-percentile clip search (no full GPTQ) + lzma;
* eval: round trip, sliding s96 and per-window L-BFGS SLOT (eval.slot.mode=pr675:
  hidden δ ∈ R^512 + logit bias ∈ R^1024 inside the softcap, lr 0.1, 5 iterations ×
  8 `.step` calls, history 10, no clamp) fitted on the scored positions themselves —
  NON-COMPLIANT (docs/reference-notes.md#slot-pr675). Legacy (reference) window rule; eval stride 96 by default in
  the code.
"""

from golf_jax.config import sibling_config  # configs/*.py load by path: from any directory


def get_config():
    c = sibling_config(__file__, "record")
    c.name = "lbfgs_slot"
    c.model.bigram_vocab_size = 1024
    c.model.bigram_dim = 128
    c.model.mtp_num_heads = 0
    c.model.mtp_loss_weight = 0.0
    c.schedule.warmdown_iters = 3500
    c.data.loader = "sequential"
    c.export.format = "rtn_int6"  # int6 per-row with the percentile clip search, no GPTQ (so no calibration)
    c.eval.stages = "roundtrip,sliding,slot"
    c.eval.sliding.stride = 96
    c.eval.sliding.window_rule = "reference"
    s = c.eval.slot
    s.mode, s.lr, s.max_iter, s.history, s.steps, s.clamp, s.warm_start = "pr675", 0.1, 5, 10, 8, 0.0, False
    return c
