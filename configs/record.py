"""PR #1318 record stack.

NOTE: until the record-model issue lands this points at the *baseline* model with
the record's training shape (seq 2048, 786,432 tokens per step); it is not yet the
record architecture.
"""

from golf_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "record"
    c.train.seq_len = 2048
    c.train.batch_tokens = 786_432
    return c
