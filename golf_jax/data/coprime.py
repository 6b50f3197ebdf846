"""Coprime-stride multi-shard training loader (docs/reference-notes.md#coprime-loader).

This is the loader of the merged record lineage (PR #726 / #1184): every step mixes
windows from several shards, and each shard is walked with a random phase, start and
a stride coprime to its block count, so every block is read once per cycle.

Bit-identical ordering with the reference needs the same RNG call order, reproduced
here step by step. Caveat: the RNG seed is an FNV-style hash of the *path strings* of
the sorted shard files (as `glob` returns them, through `pathlib.Path`), not of the run
seed. The same shards reached through a different path (absolute vs relative, another
directory) give a different data order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from golf_jax.data.loader import _check_ranks
from golf_jax.data.shards import gather_windows, read_header, read_shard, shard_files

_FNV_PRIME = 1099511628211
_MASK64 = (1 << 64) - 1
RAMP_BATCHES = 1800  # batches over which alpha and the shard mix ramp


def path_seed(files: Iterable[Path | str]) -> int:
    """FNV-1a-style hash of the path strings (start 0, not the FNV offset basis)."""
    seed = 0
    for f in files:
        for b in str(f).encode():
            seed = ((seed ^ b) * _FNV_PRIME) & _MASK64
    return seed


class CoprimeLoader:
    """Same interface as SequentialLoader: next_batch() -> (x, y) for `ranks`."""

    def __init__(
        self,
        pattern: str,
        seq_len: int,
        global_seqs: int,
        world_size: int,
        ranks: Iterable[int],
        vocab_size: int | None = None,
    ) -> None:
        if global_seqs <= 0 or global_seqs % world_size:
            raise ValueError(
                f"global sequences per step ({global_seqs} = train.batch_tokens / seq_len) "
                f"must be a positive multiple of world_size={world_size}; change "
                "train.batch_tokens"
            )
        self.seq_len = seq_len
        self.global_seqs = global_seqs
        self.world_size = world_size
        self.ranks = _check_ranks(ranks, world_size)
        self.local_seqs = global_seqs // world_size
        self.vocab_size = vocab_size
        self.files = shard_files(pattern)
        self.num_tokens = np.array([read_header(f) for f in self.files], dtype=np.int64)
        self.seed = path_seed(self.files)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        base = (self.num_tokens - 1) // seq_len
        self.eligible = np.nonzero(base > 0)[0].astype(np.int64)
        if self.eligible.size == 0:
            raise ValueError(
                f"no shard matching {pattern!r} holds more than seq_len={seq_len} tokens; "
                "use larger shards or a shorter sequence length"
            )
        self.base_blocks = base[self.eligible].astype(np.int64)
        n = len(self.files)
        self.c_phase = np.zeros(n, dtype=np.int64)
        self.c_blocks = np.zeros(n, dtype=np.int64)
        self.c_next = np.zeros(n, dtype=np.int64)
        self.c_start = np.zeros(n, dtype=np.int64)
        self.c_stride = np.ones(n, dtype=np.int64)
        self.c_init = np.zeros(n, dtype=np.bool_)
        self.batches_built = 0
        self._mmaps: dict[int, np.ndarray] = {}

    # -- per-shard cursors ---------------------------------------------------------
    def _coprime_stride(self, bc: int) -> int:
        if bc <= 1:
            return 1
        while True:
            s = int(self.rng.integers(1, bc))
            if math.gcd(s, bc) == 1:
                return s

    def _reset_cursor(self, si: int) -> None:
        seq_len, nt = self.seq_len, int(self.num_tokens[si])
        max_phase = min(seq_len - 1, max(0, nt - seq_len - 1))
        phase = int(self.rng.integers(max_phase + 1)) if max_phase > 0 else 0
        bc = (nt - 1 - phase) // seq_len
        self.c_phase[si] = phase
        self.c_blocks[si] = bc
        self.c_next[si] = 0
        self.c_start[si] = int(self.rng.integers(bc)) if bc > 1 else 0
        self.c_stride[si] = self._coprime_stride(bc)
        self.c_init[si] = True

    def _take_from_shard(self, si: int, count: int) -> list[tuple[int, int]]:
        """`count` window offsets from shard si, resetting the cursor at cycle ends."""
        out: list[tuple[int, int]] = []
        while count > 0:
            if not self.c_init[si] or self.c_next[si] >= self.c_blocks[si]:
                self._reset_cursor(si)
            bc, ni = int(self.c_blocks[si]), int(self.c_next[si])
            phase, start = int(self.c_phase[si]), int(self.c_start[si])
            stride = int(self.c_stride[si])
            take = min(count, bc - ni)
            k = np.arange(ni, ni + take, dtype=np.int64)
            out.extend(zip([si] * take, (phase + (start + k * stride) % bc * self.seq_len).tolist()))
            self.c_next[si] = ni + take
            count -= take
        return out

    # -- one global batch ------------------------------------------------------------
    def _sample_global_windows(self) -> list[tuple[int, int]]:
        """The step's global list of (shard index, token offset); RNG order as reference."""
        ec, gns, rng = int(self.eligible.size), self.global_seqs, self.rng
        progress = min(self.batches_built / float(RAMP_BATCHES), 1.0)
        el = self.eligible
        remaining = np.where(self.c_init[el], np.maximum(self.c_blocks[el] - self.c_next[el], 1),
                             self.base_blocks).astype(np.float64)
        weights = np.power(remaining, 0.90 - 0.40 * progress)
        total = float(weights.sum())
        if not np.isfinite(total) or total <= 0.0:
            weights = np.ones(ec, dtype=np.float64)
            total = float(weights.sum())
        probs = weights / total
        low = min(max(8, self.world_size), ec, gns)
        high = min(max(32, self.world_size * 8), ec, gns)
        mix = max(1, min(int(round(low + progress * (high - low))), ec, gns))
        chosen = rng.choice(ec, size=mix, replace=False, p=probs)
        shards = self.eligible[chosen]
        q = probs[chosen].copy()
        q /= q.sum()
        counts = np.ones(mix, dtype=np.int64)
        if gns - mix > 0:
            counts += rng.multinomial(gns - mix, q).astype(np.int64)
        perm = rng.permutation(mix)
        shards, counts = shards[perm], counts[perm]
        buckets: list[list[tuple[int, int]]] = []
        for si, cnt in zip(shards.tolist(), counts.tolist()):
            bucket = self._take_from_shard(int(si), int(cnt))
            if bucket:
                if len(bucket) > 1:
                    bucket = [bucket[k] for k in rng.permutation(len(bucket)).tolist()]
                buckets.append(bucket)
        windows: list[tuple[int, int]] = []
        active = [i for i, b in enumerate(buckets) if b]
        while active:
            still: list[int] = []
            for oi in rng.permutation(len(active)).tolist():
                b = buckets[active[oi]]
                if b:
                    windows.append(b.pop())
                if b:
                    still.append(active[oi])
            active = still
        return windows

    def _shard(self, si: int) -> np.ndarray:
        mm = self._mmaps.get(si)
        if mm is None:
            mm = self._mmaps[si] = read_shard(self.files[si], mmap=True)
        return mm

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) int32 arrays of shape [len(ranks) * local_seqs, seq_len]; rank r gets
        global windows r, r+W, r+2W, ..."""
        windows = self._sample_global_windows()
        mine = np.array([w for r in self.ranks for w in windows[r :: self.world_size]], np.int64)
        self.batches_built += 1
        batch = gather_windows(self._shard, self.files, mine[:, 0], mine[:, 1], self.seq_len + 1,
                               self.vocab_size).astype(np.int32)
        return batch[:, :-1], batch[:, 1:]

    @property
    def position(self) -> int:
        """Batches drawn so far (with the RNG/cursor state this fixes the data order)."""
        return self.batches_built

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches_built": self.batches_built,
            "rng": self.rng.bit_generator.state,
            "seed": self.seed,
            "cursors": {
                k: getattr(self, k).tolist()
                for k in ("c_phase", "c_blocks", "c_next", "c_start", "c_stride", "c_init")
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"data state was recorded with path seed {state['seed']} but these shards "
                f"give {self.seed}; resume with the same shard paths"
            )
        self.batches_built = int(state["batches_built"])
        self.rng.bit_generator.state = state["rng"]
        for k, v in state["cursors"].items():
            setattr(self, k, np.asarray(v, dtype=getattr(self, k).dtype))
