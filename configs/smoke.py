"""A CPU smoke run: a tiny baseline on the generated default corpus, a few minutes."""

from golf_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "smoke"
    c.model.num_layers = 4
    c.model.model_dim = 128
    c.model.num_heads = 4
    c.model.num_kv_heads = 2
    c.model.compute_dtype = "float32"  # bf16 matmuls are slow on CPU
    c.train.seq_len = 256
    c.train.batch_tokens = 4096
    c.train.iterations = 150
    c.train.max_wallclock_seconds = 0.0
    c.train.val_every = 0  # validate once, at the end
    c.train.log_every = 25
    c.schedule.mode = "iterations"
    c.schedule.warmdown_iters = 50
    c.opt.muon_momentum_warmup_steps = 50
    c.eval.batch_tokens = 16_384
    c.eval.max_tokens = 65_537
    c.eval.stages = "roundtrip"
    return c
