"""The reference's sequential loader (docs/reference-notes.md#sequential-loader): `SequentialLoader` cuts each global
step's contiguous chunk of the `TokenStream` into one span per data rank, exactly like the
reference `DistributedTokenLoader` with grad_accum_steps = 1. Data order therefore does
not depend on the seed, and a multi-host run gets the same global batch as one host.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from golf_jax.data.loader import TokenStream, _check_ranks, check_batch_geometry


def span_ranks(ranks: Iterable[int], world_size: int, spans: int) -> tuple[int, tuple[int, ...]]:
    """(spans per step, the spans these data ranks read): the reference reads one span per
    GPU, so `spans` = its GPU count (#1318: 8) gives its data order on any device count;
    device r reads spans [r·k, (r+1)·k), k = spans / world_size. spans = 0: one per device."""
    if spans == 0:
        return world_size, tuple(ranks)
    if spans < 0 or spans % world_size:
        raise ValueError(f"compat.loader_spans={spans}: use 0 (a span per device) or a multiple of {world_size}")
    k = spans // world_size
    return spans, tuple(r * k + j for r in ranks for j in range(k))


class SequentialLoader:
    """Reference DistributedTokenLoader for the data ranks this process owns.

    Each call consumes span*world_size tokens (span = local_tokens + 1); rank r gets
    chunk[r*span:(r+1)*span]. Rows of (x, y) follow the order of `ranks`, local_seqs
    rows per rank. Other ranks' spans are skipped without being copied.
    """

    def __init__(
        self,
        pattern: str,
        seq_len: int,
        global_batch_tokens: int,
        world_size: int,
        ranks: Iterable[int],
        vocab_size: int | None = None,
    ) -> None:
        check_batch_geometry(seq_len, global_batch_tokens, world_size)
        self.seq_len = seq_len
        self.world_size = world_size
        self.ranks = _check_ranks(ranks, world_size)
        self.local_tokens = global_batch_tokens // world_size
        self.local_seqs = self.local_tokens // seq_len
        self.span = self.local_tokens + 1
        self.stream = TokenStream(pattern, vocab_size)
        self.batches_built = 0

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) int32 arrays of shape [len(ranks) * local_seqs, seq_len]."""
        owned = set(self.ranks)
        spans: dict[int, np.ndarray] = {}
        last = max(owned)
        for r in range(self.world_size):
            if r in owned:
                spans[r] = self.stream.take(self.span)
            elif r < last:
                self.stream.skip(self.span)
            else:
                self.stream.skip(self.span * (self.world_size - r))
                break
        xs, ys = [], []
        for r in self.ranks:
            local = spans[r].astype(np.int32)
            xs.append(local[:-1].reshape(self.local_seqs, self.seq_len))
            ys.append(local[1:].reshape(self.local_seqs, self.seq_len))
        self.batches_built += 1
        return np.concatenate(xs), np.concatenate(ys)

    @property
    def position(self) -> tuple[int, int]:
        """(shard index, token offset) of the next unread token."""
        return self.stream.file_idx, self.stream.pos

    def state_dict(self) -> dict[str, Any]:
        return {"batches_built": self.batches_built, "stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])
        self.batches_built = int(state["batches_built"])
