"""Shuffled-sequence training loader of the SP8192 record stack (PR #1735; spec
docs/reference-notes.md#shuffled-loader, which describes that stack's training loader).

The reference's `ShuffledSequenceLoader`: data rank r owns the sorted shards r, r+W, …
and its own RNG. Each shard gets a random phase in [0, min(seq_len-1, n-seq_len-1)] and
a random permutation of its sequence starts (phase + k·seq_len). Each row picks one of
the rank's shards with probability ∝ its remaining starts and takes the *last* start of
that shard's list; when every shard is empty, all are reshuffled (a new epoch). So every
sequence of an epoch is read exactly once, in an order that depends only on the RNG.

Seeding: the reference seeds rank r with PCG64(r), so the data order ignores the run
seed (`compat.loader_rank_seed=True` reproduces that). By default rank r is seeded with
PCG64(SeedSequence([seed, r])), so changing `seed` changes the data order too.

The RNG call order (integers for the phase, permutation, then one `choice` per row) is
the reference's, so with the rank seed the rows are bit-identical to #1735's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np

from golf_jax.data.loader import _check_ranks, check_batch_geometry
from golf_jax.data.shards import gather_windows, read_header, read_shard, shard_files


def seed_rule(seed: int, rank_seed: bool) -> str:
    """How each data rank's generator is seeded (recorded in data.json and the state)."""
    return "PCG64(rank)" if rank_seed else f"PCG64(SeedSequence([{int(seed)}, rank]))"


def _bit_generator(seed: int, rank: int, rank_seed: bool) -> np.random.PCG64:
    if rank_seed:
        return np.random.PCG64(rank)
    if seed < 0:
        raise ValueError(
            f"seed={seed}: the shuffled loader seeds PCG64(SeedSequence([seed, rank])), which "
            "needs seed >= 0; pass a non-negative --config.seed"
        )
    return np.random.PCG64(np.random.SeedSequence([int(seed), int(rank)]))


class _RankStream:
    """One data rank's shards, RNG and remaining starts (the reference loader's state).

    A shard's remaining starts are `starts[i][:counts[i]]`; taking the last one is the
    reference's list.pop(). The starts of an epoch are a function of the RNG state at the
    epoch's reset, so the state is that RNG state plus the counts (kilobytes, not the
    millions of starts a real run holds), and `load` regenerates the lists from it.
    """

    def __init__(self, rank: int, shard_ids: list[int], num_tokens: np.ndarray, seq_len: int,
                 bit_generator: np.random.PCG64) -> None:
        self.rank = rank
        self.shard_ids = shard_ids
        self.num_tokens = [int(num_tokens[i]) for i in shard_ids]
        self.seq_len = seq_len
        self.rng = np.random.Generator(bit_generator)
        self.epoch = -1
        self._reset_all()

    def _reset_all(self) -> None:
        """A new epoch: every shard gets a new phase and a new permutation of its starts."""
        self.epoch += 1
        self.epoch_rng_state = self.rng.bit_generator.state
        seq_len, rng = self.seq_len, self.rng
        self.starts: list[np.ndarray] = []
        for n in self.num_tokens:
            max_phase = min(seq_len - 1, max(0, n - seq_len - 1))
            phase = int(rng.integers(max_phase + 1)) if max_phase > 0 else 0
            order = rng.permutation((n - 1 - phase) // seq_len)
            self.starts.append(phase + order.astype(np.int64) * seq_len)
        self.counts = np.array([s.size for s in self.starts], dtype=np.int64)

    def pick(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(local shard index, token start) of the next n rows, as the reference draws them.

        The reference's `rng.choice(S, p=counts/total)` per row is numpy's cdf = cumsum(p),
        cdf /= cdf[-1], one rng.random(), searchsorted(side='right'); here the uniforms up to
        the epoch's end come from one rng.random(k) (the same stream) and the cdf walk is
        plain float arithmetic, bit for bit numpy's; it stays a loop, as each draw changes
        the next one's counts (tests/test_shuffled_loader.py checks it against choice).
        """
        si_R, start_R = np.empty(n, np.int64), np.empty(n, np.int64)
        i = 0
        while i < n:
            total = int(self.counts.sum())
            if total <= 0:
                self._reset_all()
                total = int(self.counts.sum())
            counts = self.counts.tolist()
            for u in self.rng.random(min(n - i, total)).tolist():
                cdf = list(itertools.accumulate(c / total for c in counts))
                si = next(j for j, c in enumerate(cdf) if c / cdf[-1] > u)
                counts[si] -= 1
                total -= 1
                si_R[i], start_R[i] = si, self.starts[si][counts[si]]
                i += 1
            self.counts = np.array(counts, np.int64)
        return si_R, start_R

    def state(self) -> dict[str, Any]:
        return {"rank": self.rank, "epoch": self.epoch, "epoch_rng": self.epoch_rng_state,
                "rng": self.rng.bit_generator.state, "remaining": self.counts.tolist()}

    def load(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["epoch_rng"]
        self.epoch = int(state["epoch"]) - 1
        self._reset_all()
        remaining = np.asarray(state["remaining"], dtype=np.int64)
        if remaining.shape != self.counts.shape or np.any(remaining < 0) or np.any(remaining > self.counts):
            raise ValueError(
                f"data state for rank {self.rank} has remaining starts {remaining.tolist()} that do not "
                f"fit its shards ({self.counts.tolist()} per epoch); resume with the same shards"
            )
        self.counts = remaining
        self.rng.bit_generator.state = state["rng"]


class ShuffledLoader:
    """Same interface as SequentialLoader: next_batch() -> (x, y) for `ranks`.

    Rows follow the order of `ranks`, local_seqs = global_batch_tokens / (world·seq_len)
    rows per rank. Every shard header is validated when the loader is built.
    """

    def __init__(
        self,
        pattern: str,
        seq_len: int,
        global_batch_tokens: int,
        world_size: int,
        ranks: Iterable[int],
        vocab_size: int | None = None,
        seed: int = 0,
        rank_seed: bool = False,
    ) -> None:
        check_batch_geometry(seq_len, global_batch_tokens, world_size)
        self.pattern = pattern
        self.seq_len = seq_len
        self.world_size = world_size
        self.ranks = _check_ranks(ranks, world_size)
        self.local_seqs = global_batch_tokens // (world_size * seq_len)
        self.vocab_size = vocab_size
        self.seed, self.rank_seed = int(seed), bool(rank_seed)
        self.seed_rule = seed_rule(self.seed, self.rank_seed)
        self.files = shard_files(pattern)
        self.num_tokens = np.array([read_header(f) for f in self.files], dtype=np.int64)
        if len(self.files) < world_size:
            raise ValueError(
                f"{len(self.files)} shards match {pattern!r} but there are {world_size} data ranks; "
                "data.loader='shuffled' gives rank r the shards r, r+W, … so it needs at least one "
                "shard per rank: build more, smaller shards (prepare --shard_tokens) or use "
                "data.loader='sequential'"
            )
        self.streams = [self._new_stream(r) for r in self.ranks]
        self.batches_built = 0
        self._mmaps: dict[int, np.ndarray] = {}

    def _new_stream(self, rank: int) -> _RankStream:
        ids = list(range(rank, len(self.files), self.world_size))
        if int(self.num_tokens[ids].max()) < self.seq_len + 1:
            names = ", ".join(self.files[i].name for i in ids)
            raise ValueError(
                f"data rank {rank}'s shards ({names}) each hold fewer than seq_len + 1 = "
                f"{self.seq_len + 1} tokens; use larger shards or a shorter train.seq_len"
            )
        return _RankStream(rank, ids, self.num_tokens, self.seq_len,
                           _bit_generator(self.seed, rank, self.rank_seed))

    def _shard(self, si: int) -> np.ndarray:
        mm = self._mmaps.get(si)
        if mm is None:
            mm = self._mmaps[si] = read_shard(self.files[si], mmap=True)
        return mm

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch's global shard index and token start per row, without reading tokens."""
        drawn = [stream.pick(self.local_seqs) for stream in self.streams]
        self.batches_built += 1
        return (np.concatenate([np.asarray(s.shard_ids)[si] for s, (si, _) in zip(self.streams, drawn)]),
                np.concatenate([start for _, start in drawn]))

    def picks(self) -> list[tuple[int, int]]:
        return list(zip(*(a.tolist() for a in self.draw())))

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) int32 arrays of shape [len(ranks) * local_seqs, seq_len]."""
        shard_R, start_R = self.draw()
        batch = gather_windows(self._shard, self.files, shard_R, start_R, self.seq_len + 1, self.vocab_size)
        return batch[:, :-1].astype(np.int32), batch[:, 1:].astype(np.int32)

    @property
    def position(self) -> int:
        """Batches drawn so far (with the RNG states and counts this fixes the data order)."""
        return self.batches_built

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready: big ints (the PCG64 state) are plain Python ints, as in CoprimeLoader."""
        return {
            "batches_built": self.batches_built,
            "seed_rule": self.seed_rule,
            "world_size": self.world_size,
            "shards": [[f.name, int(n)] for f, n in zip(self.files, self.num_tokens)],
            "ranks": [s.state() for s in self.streams],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this process's ranks; a rank the state lacks is replayed from its seed.

        In a multi-host run only process 0 writes the checkpoint, so its state holds only
        its own ranks; the other processes rebuild theirs by redrawing `batches_built`
        batches' picks without reading tokens (~12 µs a row).
        """
        shards = [[f.name, int(n)] for f, n in zip(self.files, self.num_tokens)]
        saved = [[str(a), int(b)] for a, b in state["shards"]]
        if saved != shards:
            raise ValueError(
                f"data state was recorded for shards {saved} but {self.pattern!r} matches "
                f"{shards} (name, tokens); resume with the same shard set"
            )
        if state["seed_rule"] != self.seed_rule or int(state["world_size"]) != self.world_size:
            raise ValueError(
                f"data state was recorded with seed rule {state['seed_rule']} and world_size "
                f"{state['world_size']}, this run has {self.seed_rule} and {self.world_size}; resume "
                "with the same seed, compat.loader_rank_seed and device count"
            )
        batches = int(state["batches_built"])
        by_rank = {int(s["rank"]): s for s in state["ranks"]}
        self.streams = [self._new_stream(r) for r in self.ranks]
        for stream in self.streams:
            if stream.rank in by_rank:
                stream.load(by_rank[stream.rank])
            else:
                stream.pick(batches * self.local_seqs)
        self.batches_built = batches

