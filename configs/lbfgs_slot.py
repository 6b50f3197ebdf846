"""PR #675 ("L-BFGS SLOT", 0.5793, non-causal): the #1303/#1313 11-layer stack.

Source: openai/parameter-golf PR #675 head 5149815c, `2026-04-06_LBFGS_SLOT_0.5793/train_gpt.py`
(variants-and-compliance.md §1.1, §2.9). Relative to configs/record.py:

* QK-gain init 4.0 (same); WARMDOWN_ITERS 3500;
* BigramHash 1024×128; no MTP heads;
* value residual (VRL: sigmoid-gated mix of layer 0's raw v into layers 1..10, gate init
  −1.5) — NOT implemented by golf_jax's record model yet; this config leaves it out;
* unbanked CastedLinear matrices with orthogonal init and 1/√(2L)-scaled projections;
* int6 per-row with a 5-percentile clip search (no full GPTQ) + lzma;
* eval: per-window L-BFGS SLOT (hidden δ ∈ R^512 + logit bias ∈ R^1024, lr 0.1,
  5 iterations × 8 steps, history 10), on the scored positions — non-causal. Eval
  stride 96 by default in the code. SLOT comes with evaluation part 2; until then
  this config evaluates round trip and sliding s96.
"""

from configs.record import get_config as record_config


def get_config():
    c = record_config()
    c.name = "lbfgs_slot"
    c.model.bigram_vocab_size = 1024
    c.model.bigram_dim = 128
    c.model.mtp_num_heads = 0
    c.model.mtp_loss_weight = 0.0
    c.schedule.warmdown_iters = 3500
    c.data.loader = "sequential"
    c.eval.stages = "roundtrip,sliding"
    c.eval.sliding.stride = 96
    return c
