"""The training stream every loader reads, and the batch geometry they share.

`TokenStream` walks the sorted shards in order and wraps around (the reference's
sequential stream, docs/reference-notes.md#sequential-loader); the loaders that cut batches from it are
golf_jax/data/sequential.py (the reference's), coprime.py and shuffled.py, each packed
only where the config uses it (golf_jax/submission/modules.py GATES).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from golf_jax.data.shards import ShardError, read_header, read_shard, shard_files


class TokenStream:
    """Sequential, wrapping token stream over sorted shards; shards validated on open."""

    def __init__(self, pattern: str, vocab_size: int | None = None) -> None:
        self.pattern = pattern
        self.vocab_size = vocab_size
        self.files: list[Path] = shard_files(pattern)
        for f in self.files:  # every header now, not when the stream reaches a damaged shard mid-run
            read_header(f)
        self.tokens_taken = 0
        self._open(0)
        self.pos = 0

    def _open(self, file_idx: int) -> None:
        self.file_idx = file_idx
        self.tokens = read_shard(self.files[file_idx], self.vocab_size)
        self.pos = 0

    def _advance(self, n: int, out: list[np.ndarray] | None) -> None:
        """Move n tokens forward; append the pieces to `out` unless it is None."""
        if n < 0:
            raise ValueError(f"cannot take a negative number of tokens ({n})")
        remaining, empty_opens = n, 0
        while remaining > 0:
            avail = self.tokens.shape[0] - self.pos
            if avail <= 0:
                empty_opens += 1
                if empty_opens > len(self.files):
                    raise ShardError(
                        f"all shards matching {self.pattern!r} are empty; rebuild them"
                    )
                self._open((self.file_idx + 1) % len(self.files))
                continue
            empty_opens = 0
            k = min(remaining, avail)
            if out is not None:
                out.append(self.tokens[self.pos : self.pos + k])
            self.pos += k
            remaining -= k
        self.tokens_taken += n

    def take(self, n: int) -> np.ndarray:
        """The next n tokens (uint16 copy), crossing shard boundaries and wrapping."""
        parts: list[np.ndarray] = []
        self._advance(n, parts)
        if not parts:
            return np.zeros(0, dtype=np.uint16)
        return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])

    def skip(self, n: int) -> None:
        """Advance n tokens without copying them (other processes' ranks)."""
        self._advance(n, None)

    def state_dict(self) -> dict[str, Any]:
        return {
            "file_idx": self.file_idx,
            "pos": self.pos,
            "tokens_taken": self.tokens_taken,
            "files": [str(f) for f in self.files],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        files = [str(f) for f in self.files]
        if state.get("files", files) != files:
            raise ValueError(
                f"data state was recorded for shards {state['files']} but {self.pattern!r} "
                f"matches {files}; resume with the same shard set"
            )
        self._open(int(state["file_idx"]))
        self.pos = int(state["pos"])
        self.tokens_taken = int(state["tokens_taken"])


def check_batch_geometry(seq_len: int, global_batch_tokens: int, world_size: int) -> None:
    """Each rank must get whole sequences of the global batch."""
    if seq_len <= 0 or world_size <= 0:
        raise ValueError(f"seq_len ({seq_len}) and world_size ({world_size}) must be > 0")
    if global_batch_tokens <= 0 or global_batch_tokens % (world_size * seq_len):
        raise ValueError(
            f"train.batch_tokens={global_batch_tokens} must be a positive multiple of "
            f"world_size * seq_len = {world_size} * {seq_len} = {world_size * seq_len}; "
            "change train.batch_tokens or the sequence length"
        )


def _check_ranks(ranks: Iterable[int], world_size: int) -> tuple[int, ...]:
    out = tuple(int(r) for r in ranks)
    if not out:
        raise ValueError("ranks is empty; each process must own at least one data rank")
    if len(set(out)) != len(out) or any(r < 0 or r >= world_size for r in out):
        raise ValueError(f"ranks {out} must be distinct and in [0, world_size={world_size})")
    return out
