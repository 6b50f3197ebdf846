"""The upstream naive baseline at full size (val_bpb 1.2244 on 8×H100 in the challenge).

9×512, 8/4 heads, relu² ×2, seq 1024, 524,288 tokens per step, Muon 0.04 with
momentum warmup 0.85→0.95 over 500 steps, Adam 0.05 (tied embedding) / 0.04
(scalars), wallclock warmdown of 1200 steps' worth, 600 s cap, int8+zlib export.
Point `data.source=dir` and `data.dir`/`data.tokenizer` at real shards.
"""

from golf_jax.config import base_config


def get_config():
    return base_config()
