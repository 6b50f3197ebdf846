"""ShuffledLoader (data.loader="shuffled") against a transcription of #1735's loader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from golf_jax.core import mesh as mesh_lib
from golf_jax.config import base_config
from golf_jax.data.shards import ShardError
from golf_jax.data.prepare import write_shard
from golf_jax.data.shuffled import ShuffledLoader
from golf_jax.data.source import loader_seed_rule
from golf_jax.train import loop

L = 8


def _write(tmp_path, sizes):
    """Shards whose token at position p of shard i is 4096*i + p (so a row names its source)."""
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", 4096 * i + np.arange(n))
    return str(tmp_path / "fineweb_train_*.bin")


def _source(row: np.ndarray) -> tuple[int, int]:
    return int(row[0]) // 4096, int(row[0]) % 4096


class _Reference:
    """A line-by-line transcription of #1735's ShuffledSequenceLoader (lists, pop, choice)."""

    def __init__(self, sizes, rank, world):
        self.ids = list(range(len(sizes)))[rank::world]
        self.n = [sizes[i] for i in self.ids]
        self.rng = np.random.Generator(np.random.PCG64(rank))
        self.start_inds = [[] for _ in self.ids]
        for si in range(len(self.ids)):
            self._reset_shard(si)

    def _reset_shard(self, si):
        max_phase = min(L - 1, max(0, self.n[si] - L - 1))
        phase = int(self.rng.integers(max_phase + 1)) if max_phase > 0 else 0
        num_sequences = (self.n[si] - 1 - phase) // L
        sequence_order = self.rng.permutation(num_sequences)
        self.start_inds[si] = (phase + sequence_order * L).tolist()

    def batch(self, rows):
        remaining = np.array([len(s) for s in self.start_inds], dtype=np.float64)
        out = []
        for _ in range(rows):
            total = remaining.sum()
            if total <= 0:
                for si in range(len(self.ids)):
                    self._reset_shard(si)
                remaining = np.array([len(s) for s in self.start_inds], dtype=np.float64)
                total = remaining.sum()
            si = int(self.rng.choice(len(self.ids), p=remaining / total))
            out.append((self.ids[si], self.start_inds[si].pop()))
            remaining[si] -= 1
        return out


def test_rank_seed_matches_reference_transcription(tmp_path):
    # Shard 2 is too short for any sequence; shard 3 has max_phase 0 (no phase draw).
    sizes = [300, 201, 5, L + 1, 150, 97]
    pattern = _write(tmp_path, sizes)
    world, rows = 2, 3
    loader = ShuffledLoader(pattern, L, world * rows * L, world, [0, 1], seed=99, rank_seed=True)
    refs = [_Reference(sizes, r, world) for r in range(world)]
    for _ in range(60):  # several epochs (rank 0: ~66 sequences, rank 1: ~43)
        x, y = loader.next_batch()
        want = [p for ref in refs for p in ref.batch(rows)]
        assert [_source(row) for row in x] == want
        for row_x, row_y, (si, start) in zip(x, y, want):
            np.testing.assert_array_equal(row_x, 4096 * si + np.arange(start, start + L))
            np.testing.assert_array_equal(row_y, row_x + 1)
    assert x.dtype == y.dtype == np.int32 and x.shape == (world * rows, L)
    assert min(s.epoch for s in loader.streams) >= 2


def test_epoch_visits_every_sequence_once(tmp_path):
    sizes = [200, 131, 77]
    loader = ShuffledLoader(_write(tmp_path, sizes), L, L, 1, [0], seed=5)
    stream = loader.streams[0]
    for epoch in range(3):
        picks = [loader.picks()[0]]  # an epoch's first pick (after the first, it resets all)
        assert stream.epoch == epoch
        phases = [int(s.min()) for s in stream.starts]  # starts are phase + k·L, k = 0, 1, …
        assert all(0 <= p <= L - 1 for p in phases)
        expected = {(i, p + k * L) for i, (n, p) in enumerate(zip(sizes, phases)) for k in range((n - 1 - p) // L)}
        picks += [loader.picks()[0] for _ in range(len(expected) - 1)]
        assert len(set(picks)) == len(picks) and set(picks) == expected
        assert int(stream.counts.sum()) == 0 and stream.epoch == epoch


def test_ranks_own_disjoint_shards(tmp_path):
    pattern = _write(tmp_path, [100 + 7 * i for i in range(9)])
    for r in range(4):
        loader = ShuffledLoader(pattern, L, 4 * 2 * L, 4, [r])
        seen = {si for _ in range(40) for si, _ in loader.picks()}
        assert seen == set(range(r, 9, 4))


def test_seed_changes_order_unless_rank_seeded(tmp_path):
    pattern = _write(tmp_path, [300, 250])

    def rows(seed, rank_seed=False):
        loader = ShuffledLoader(pattern, L, 2 * 4 * L, 2, [0, 1], seed=seed, rank_seed=rank_seed)
        return np.concatenate([loader.next_batch()[0] for _ in range(5)])

    np.testing.assert_array_equal(rows(1), rows(1))
    assert not np.array_equal(rows(1), rows(2))
    np.testing.assert_array_equal(rows(1, True), rows(2, True))
    assert not np.array_equal(rows(0), rows(0, True))


def test_state_dict_round_trip_continues_identically(tmp_path):
    pattern = _write(tmp_path, [90, 70, 60, 45])
    make = lambda ranks: ShuffledLoader(pattern, L, 2 * 3 * L, 2, ranks, seed=7)  # noqa: E731
    straight, first = make([0, 1]), make([0, 1])
    for k in (4, 9):  # 9 batches crosses an epoch boundary on both ranks
        while first.batches_built < k:
            straight.next_batch(), first.next_batch()
        state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint's meta holds
        resumed = make([0, 1])
        resumed.load_state_dict(state)
        for _ in range(12):
            a, b = straight.next_batch(), resumed.next_batch()
            first.next_batch()
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        straight, first = make([0, 1]), make([0, 1])
    # Another process's ranks (absent from process 0's state) are replayed from their seeds.
    pattern4 = _write(tmp_path / "w4", [90, 70, 60, 45, 50])
    make4 = lambda ranks: ShuffledLoader(pattern4, L, 4 * 3 * L, 4, ranks, seed=7)  # noqa: E731
    proc0, proc1 = make4([0, 1]), make4([2, 3])
    for _ in range(6):
        proc0.next_batch(), proc1.next_batch()
    other = make4([2, 3])
    other.load_state_dict(json.loads(json.dumps(proc0.state_dict())))
    for _ in range(5):
        np.testing.assert_array_equal(proc1.next_batch()[0], other.next_batch()[0])
    bad = make([0, 1]).state_dict()
    with pytest.raises(ValueError, match="seed rule"):
        ShuffledLoader(pattern, L, 2 * 3 * L, 2, [0, 1], seed=8).load_state_dict(bad)


def test_multi_rank_process_equals_single_rank_loaders(tmp_path):
    pattern = _write(tmp_path, [120, 80, 100, 64, 90])
    both = ShuffledLoader(pattern, L, 4 * 2 * L, 4, [0, 1], seed=3)
    one = [ShuffledLoader(pattern, L, 4 * 2 * L, 4, [r], seed=3) for r in (0, 1)]
    for _ in range(20):
        x, y = both.next_batch()
        parts = [ld.next_batch() for ld in one]
        np.testing.assert_array_equal(x, np.concatenate([p[0] for p in parts]))
        np.testing.assert_array_equal(y, np.concatenate([p[1] for p in parts]))


def test_clear_errors(tmp_path):
    pattern = _write(tmp_path, [100, 100, 5])
    with pytest.raises(ValueError, match="at least one shard per rank"):
        ShuffledLoader(pattern, L, 4 * L, 4, [0])
    with pytest.raises(ValueError, match="rank 2's shards .*fineweb_train_000002.bin"):
        ShuffledLoader(pattern, L, 3 * L, 3, [2])
    with pytest.raises(ValueError, match="train.batch_tokens=20"):
        ShuffledLoader(pattern, L, 20, 2, [0])
    with pytest.raises(ValueError, match="non-negative --config.seed"):
        ShuffledLoader(pattern, L, 2 * L, 2, [0], seed=-1)
    with pytest.raises(ShardError, match="fineweb_train_000000.bin: token id .* >= vocab_size 5;"):
        ShuffledLoader(pattern, L, 2 * L, 2, [0], vocab_size=5).next_batch()
    # A corrupt shard (here: one the loader's ranks never read) fails when the loader is built.
    (tmp_path / "fineweb_train_000002.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ShardError, match="fineweb_train_000002.bin: truncated header"):
        ShuffledLoader(pattern, L, 2 * L, 2, [0])


def test_wired_into_the_training_loop(tmp_path):
    _write(tmp_path, [400] * 8)
    cfg = base_config()
    cfg.data.loader, cfg.train.seq_len, cfg.train.batch_tokens, cfg.seed = "shuffled", L, 8 * 2 * L, 11
    cfg.model.vocab_size = 65536
    loop.check_config(cfg, 8)
    loader = loop.make_loader(cfg, tmp_path, mesh_lib.make_mesh())
    assert isinstance(loader, ShuffledLoader) and loader.ranks == tuple(range(8))
    assert loader.next_batch()[0].shape == (16, L)
    assert loader_seed_rule(cfg) == loader.seed_rule == "PCG64(SeedSequence([11, rank]))"
    cfg.compat.loader_rank_seed = True
    assert loader_seed_rule(cfg) == "PCG64(rank)"
    cfg.data.loader = "shufled"
    with pytest.raises(ValueError, match="data.loader='shufled': use one of 'sequential', 'coprime', 'shuffled'"):
        loop.check_config(cfg, 8)
