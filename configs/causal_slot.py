"""PR #1306 ("Causal SLOT + pre-quant TTT", 1.0846) and PR #1350 ("L-BFGS causal SLOT", 1.0046).

Source: openai/parameter-golf PR #1306 head d43a0f36 and PR #1350 head 4ede046a
(docs/reference-notes.md#prequant-flat, #slot-pr1306, #slot-pr1350). Relative to configs/record.py:

* QK-gain init 1.5 (#1306) / 5.0 (#1350);
* WARMDOWN_ITERS 3500 (#1306) / 4000 (#1350);
* BigramHash 2048×128 (record: 3072×112);
* no MTP heads (MTP_NUM_HEADS=0);
* loader: the plain sequential TokenStream (the READMEs' "coprime loader" is not in the code);
* GPTQ damp 0.01 (#1306) / 0.005 (#1350), Hessians from 256 training batches;
* pre-quant AdamW TTT on val (NON-COMPLIANT, docs/reference-notes.md#prequant-flat): 6 epochs, lr 5e-4 cosine per epoch
  to 5e-5, freeze blocks 0–1 in the banked reference's sense (only their scalars);
* eval: round trip, sliding s64 and the seed's SLOT over batches of 32 windows of the
  legacy (reference) window rule (NON-COMPLIANT,
  docs/reference-notes.md#slot-pr1306, #slot-pr1350) — #1306: one hidden-space
  δ per batch, 8 AdamW steps, lr 0.005, β (0.3, 0.9), on every window's context
  (eval.slot.mode=pr1306); #1350: one logit-space δ per batch by L-BFGS (25 iterations,
  history 20) on [1920, s), warm start, clamp ±5 (eval.slot.mode=pr1350). The legal
  shape of either is `--config.eval.slot.mode=context`.

`get_config("1306")` or `get_config("1350")` (default "1350").
"""

from golf_jax.config import sibling_config  # configs/*.py load by path: from any directory


def get_config(variant: str = "1350"):
    if variant not in ("1306", "1350"):
        raise ValueError(f"configs/causal_slot.py: variant must be '1306' or '1350', got {variant!r}")
    c = sibling_config(__file__, "record")
    c.name = f"causal_slot_{variant}"
    c.model.qk_gain_init = 1.5 if variant == "1306" else 5.0
    c.model.bigram_vocab_size = 2048
    c.model.bigram_dim = 128
    c.model.mtp_num_heads = 0
    c.model.mtp_loss_weight = 0.0
    c.schedule.warmdown_iters = 3500 if variant == "1306" else 4000
    c.data.loader = "sequential"
    c.export.gptq_damp = 0.01 if variant == "1306" else 0.005
    c.export.reserve_seconds = 0.0  # the seed calibrates on 256 training batches after the 600 s cap
    c.eval.stages = "roundtrip,sliding,slot"
    c.eval.sliding.window_rule = "reference"
    s = c.eval.slot
    if variant == "1306":
        s.mode, s.steps = "pr1306", 8
        s.adam_lr, s.adam_beta1, s.adam_beta2, s.adam_eps, s.adam_weight_decay = 0.005, 0.3, 0.9, 1e-5, 1e-8
    else:
        s.mode, s.max_iter, s.history, s.focal, s.clamp, s.warm_start = "pr1350", 25, 20, 128, 5.0, True
    p = c.eval.prequant_ttt
    p.mode = "flat"
    p.epochs, p.lr, p.lr_floor = 6, 5e-4, 5e-5
    p.batch_seqs, p.grad_clip = 32, 1.0
    p.freeze_blocks, p.freeze_scope = 2, "scalars"
    return c
