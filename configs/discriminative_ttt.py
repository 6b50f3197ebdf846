"""resouer PR #6 ("Discriminative TTT", 1.0807): the #1350 training stack plus a per-block-LR TTT.

Source: variants-and-compliance.md §1.1, §2.3 (F6 = resouer/parameter-golf PR #6 head;
not in the openai mirror). Relative to configs/record.py:

* QK-gain init 5.0; WARMDOWN_ITERS 4000;
* BigramHash 2048×128; no MTP heads;
* loader: plain sequential; GPTQ damp 0.005;
* eval: pre-quant AdamW TTT, 10 epochs, lr_i = 5e-4·(0.3 + 0.7·i/10) per block
  (effective on the block scalars only in the reference), cosine to 5e-5; plain sliding
  eval, no SLOT. Kept in `variant_notes` until the TTT stage takes them.
"""

from configs.record import get_config as record_config


def get_config():
    c = record_config()
    c.name = "discriminative_ttt"
    c.model.qk_gain_init = 5.0
    c.model.bigram_vocab_size = 2048
    c.model.bigram_dim = 128
    c.model.mtp_num_heads = 0
    c.model.mtp_loss_weight = 0.0
    c.schedule.warmdown_iters = 4000
    c.data.loader = "sequential"
    c.unlock()
    c.variant_notes = {
        "source_pr": "6 (resouer/parameter-golf)",
        "gptq_damp": 0.005,
        "prequant_ttt": {"epochs": 10, "lr": 5e-4, "lr_floor": 5e-5, "depth_scale": (0.3, 0.7),
                         "batch_seqs": 32, "grad_clip": 1.0},
    }
    c.lock()
    return c
