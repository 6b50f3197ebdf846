"""resouer PR #6 ("Discriminative TTT", 1.0807): the #1350 training stack plus a per-block-LR TTT.

Source: docs/reference-notes.md#prequant-discriminative (resouer/parameter-golf PR #6 head;
not in the openai mirror). Relative to configs/record.py:

* QK-gain init 5.0; WARMDOWN_ITERS 4000;
* BigramHash 2048×128; no MTP heads;
* loader: plain sequential; GPTQ damp 0.005;
* pre-quant AdamW TTT on val (NON-COMPLIANT, docs/reference-notes.md#prequant-discriminative): 10 epochs, freeze 0,
  lr_i = 5e-4·(0.3 + 0.7·i/10) for block i, every group cosine-annealed toward 5e-5.
  `eval.prequant_ttt.depth_scope="scalars"` is the reference (the scale reaches only the
  block scalars; the banked matrices train at 5e-4); "blocks" is the intended ULMFiT;
* eval: round trip and sliding s64, no SLOT.
"""

from golf_jax.config import sibling_config  # configs/*.py load by path: from any directory


def get_config():
    c = sibling_config(__file__, "record")
    c.name = "discriminative_ttt"
    c.model.qk_gain_init = 5.0
    c.model.bigram_vocab_size = 2048
    c.model.bigram_dim = 128
    c.model.mtp_num_heads = 0
    c.model.mtp_loss_weight = 0.0
    c.schedule.warmdown_iters = 4000
    c.data.loader = "sequential"
    c.export.gptq_damp = 0.005
    c.export.reserve_seconds = 0.0  # the seed calibrates on 256 training batches after the 600 s cap
    c.eval.stages = "roundtrip,sliding"
    p = c.eval.prequant_ttt
    p.mode = "discriminative"
    p.epochs, p.lr, p.lr_floor = 10, 5e-4, 5e-5
    p.batch_seqs, p.grad_clip = 32, 1.0
    p.freeze_blocks = 0
    p.depth_lr_min, p.depth_scope = 0.3, "scalars"
    return c
