"""TokenStream, SequentialLoader and CoprimeLoader against direct index arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from golf_jax.data.coprime import CoprimeLoader, path_seed
from golf_jax.data.loader import TokenStream
from golf_jax.data.sequential import SequentialLoader, span_ranks
from golf_jax.data.shards import ShardError
from golf_jax.data.prepare import write_shard


def _write(tmp_path, sizes, name="fineweb_train"):
    """Shards whose tokens are their global stream positions (so slices are checkable)."""
    start = 0
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"{name}_{i:06d}.bin", np.arange(start, start + n) % 65536)
        start += n
    return str(tmp_path / f"{name}_*.bin"), start


def test_token_stream_cross_shard_and_wrap(tmp_path):
    pattern, total = _write(tmp_path, [10, 5, 15])
    s = TokenStream(pattern)
    np.testing.assert_array_equal(s.take(7), np.arange(7))
    np.testing.assert_array_equal(s.take(10), np.arange(7, 17))  # crosses 0 -> 1 -> 2
    np.testing.assert_array_equal(s.take(20), np.arange(17, 37) % total)  # wraps to shard 0
    assert (s.file_idx, s.pos) == (0, 7)
    s.skip(40)
    np.testing.assert_array_equal(s.take(3), np.arange(77, 80) % total)
    state = s.state_dict()
    t = TokenStream(pattern)
    t.load_state_dict(state)
    np.testing.assert_array_equal(t.take(50), s.take(50))


def test_token_stream_validates_vocab_on_open(tmp_path):
    pattern, _ = _write(tmp_path, [10, 10])
    s = TokenStream(pattern, vocab_size=12)  # shard 0 holds 0..9: fine
    with pytest.raises(ShardError, match="fineweb_train_000001.bin.*token id 19"):
        s.take(15)


def _expected_sequential(step, rank, total, seq_len, local_tokens, world):
    span = local_tokens + 1
    start = step * span * world + rank * span
    local = np.arange(start, start + span) % total
    return local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)


def test_sequential_loader_matches_slices_and_process_split(tmp_path):
    pattern, total = _write(tmp_path, [100, 57, 130])
    world, seq_len, gbt = 8, 4, 64  # local_tokens 8 (2 sequences), span 9, 72 per step
    full = SequentialLoader(pattern, seq_len, gbt, world, range(world))
    procs = [SequentialLoader(pattern, seq_len, gbt, world, r)
             for r in ([0, 1, 2, 3], [4, 5, 6, 7])]
    for step in range(6):  # 432 tokens: wraps the 287-token stream
        x, y = full.next_batch()
        assert x.shape == y.shape == (16, 4) and x.dtype == y.dtype == np.int32
        for r in range(world):
            ex, ey = _expected_sequential(step, r, total, seq_len, 8, world)
            np.testing.assert_array_equal(x[2 * r : 2 * r + 2], ex)
            np.testing.assert_array_equal(y[2 * r : 2 * r + 2], ey)
        parts = [p.next_batch() for p in procs]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
        assert procs[0].position == procs[1].position == full.position
    assert full.stream.tokens_taken == 6 * 72


def test_sequential_loader_rank_order_state_and_errors(tmp_path):
    pattern, total = _write(tmp_path, [300])
    a = SequentialLoader(pattern, 4, 32, 4, [2, 0])  # rows follow the given rank order
    x, _ = a.next_batch()
    np.testing.assert_array_equal(x[:2], _expected_sequential(0, 2, total, 4, 8, 4)[0])
    np.testing.assert_array_equal(x[2:], _expected_sequential(0, 0, total, 4, 8, 4)[0])
    state = a.state_dict()
    b = SequentialLoader(pattern, 4, 32, 4, [2, 0])
    b.load_state_dict(state)
    for _ in range(3):
        np.testing.assert_array_equal(a.next_batch()[1], b.next_batch()[1])
    with pytest.raises(ValueError, match="train.batch_tokens=60"):
        SequentialLoader(pattern, 4, 60, 4, [0])
    with pytest.raises(ValueError, match="distinct"):
        SequentialLoader(pattern, 4, 32, 4, [0, 4])


def _coprime(pattern, ranks=range(4), **kw):
    return CoprimeLoader(pattern, kw.get("seq_len", 64), kw.get("gns", 16), 4, ranks)


def test_coprime_golden_windows(tmp_path, monkeypatch):
    """First windows, checked against the reference implementation for these paths."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    for i, n in enumerate([5000, 3001, 7777, 2049, 100]):
        write_shard(tmp_path / "shards" / f"fineweb_train_{i:06d}.bin", np.zeros(n, np.uint16))
    loader = _coprime("shards/fineweb_train_*.bin")
    assert loader.seed == 12509603061458641885
    assert loader._sample_global_windows()[:8] == [
        (4, 25), (0, 1840), (2, 5630), (1, 1955), (3, 1634), (3, 1762), (0, 4784), (1, 739)]
    loader.batches_built += 1
    assert loader._sample_global_windows()[-4:] == [(1, 2659), (2, 7422), (2, 638), (2, 1086)]


def test_path_seed_depends_on_path_strings():
    assert path_seed([]) == 0
    assert path_seed(["a"]) == (97 * 1099511628211) % 2**64
    assert path_seed(["d/x.bin"]) != path_seed(["./d/x.bin"])


def test_coprime_cycle_visits_every_block_once(tmp_path):
    pattern, _ = _write(tmp_path, [64 * 37 + 20])
    loader = _coprime(pattern)
    for _ in range(5):  # five cycles, each with a new phase / start / stride
        first = loader._take_from_shard(0, 1)  # uninitialised / exhausted: resets
        bc, phase = int(loader.c_blocks[0]), int(loader.c_phase[0])
        assert bc in (36, 37)
        offsets = [pos for _, pos in first + loader._take_from_shard(0, bc - 1)]
        assert len(offsets) == bc and math.gcd(int(loader.c_stride[0]), bc) == 1
        assert sorted(offsets) == [phase + 64 * k for k in range(bc)]
        assert int(loader.c_next[0]) == bc  # the next take resets the cursor


def test_coprime_batches_shapes_ranks_and_determinism(tmp_path):
    pattern, _ = _write(tmp_path, [3000, 1500, 4100, 900, 2222, 5000, 1200, 2600, 700, 3333])
    full, twin, again = _coprime(pattern), _coprime(pattern), _coprime(pattern)
    procs = [_coprime(pattern, [0, 1]), _coprime(pattern, [2, 3])]
    starts = np.cumsum([0, 3000, 1500, 4100, 900, 2222, 5000, 1200, 2600, 700])
    seen = set()
    for _ in range(30):
        windows = twin._sample_global_windows()
        twin.batches_built += 1
        x, y = full.next_batch()
        assert x.shape == y.shape == (16, 64) and x.dtype == np.int32
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        # Rank r holds global windows r, r+4, r+8, r+12, in rank order.
        for r in range(4):
            for j, (si, pos) in enumerate(windows[r::4]):
                start = starts[si] + pos
                np.testing.assert_array_equal(x[4 * r + j], np.arange(start, start + 64))
                seen.add((si, pos))
        xa, ya = again.next_batch()
        np.testing.assert_array_equal(xa, x)
        parts = [p.next_batch() for p in procs]
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    assert len({si for si, _ in seen}) == 10  # windows mix all shards
    state = full.state_dict()
    resumed = _coprime(pattern)
    resumed.load_state_dict(state)
    for _ in range(3):
        np.testing.assert_array_equal(resumed.next_batch()[0], full.next_batch()[0])


def test_coprime_errors(tmp_path):
    pattern, _ = _write(tmp_path, [1000])
    with pytest.raises(ValueError, match="multiple of world_size=4"):
        CoprimeLoader(pattern, 64, 18, 4, [0])
    with pytest.raises(ValueError, match="more than seq_len=2000"):
        CoprimeLoader(pattern, 2000, 4, 4, [0])
    loader = CoprimeLoader(pattern, 64, 4, 4, [0], vocab_size=500)
    with pytest.raises(ShardError, match="token id"):
        for _ in range(20):
            loader.next_batch()


@pytest.mark.parametrize("devices,ranks", [(1, [0]), (2, [0, 1]), (2, [1]), (4, [2, 3]), (8, range(8))])
def test_reference_spans_give_the_8_gpu_order_on_any_device_count(tmp_path, devices, ranks):
    """compat.loader_spans=8: every device count reads the 8-GPU run's 8 spans of batch/8 + 1 tokens,
    device r the spans [r·k, (r+1)·k); one span per device reads other rows below 8 devices."""
    pattern, _ = _write(tmp_path, [100, 57, 130])
    seq_len, gbt = 4, 64
    eight = SequentialLoader(pattern, seq_len, gbt, 8, range(8))
    spans, read = span_ranks(ranks, devices, 8)
    ours = SequentialLoader(pattern, seq_len, gbt, spans, read)
    k = 8 // devices
    rows = [i for r in ranks for i in range(2 * k * r, 2 * k * (r + 1))]  # 2 sequences per span
    for _ in range(3):
        x8, y8 = eight.next_batch()
        x, y = ours.next_batch()
        np.testing.assert_array_equal(x, x8[rows])
        np.testing.assert_array_equal(y, y8[rows])
    if devices < 8:
        plain = SequentialLoader(pattern, seq_len, gbt, *span_ranks([0], devices, 0))
        first8 = SequentialLoader(pattern, seq_len, gbt, 8, range(8)).next_batch()[0]
        assert not np.array_equal(plain.next_batch()[0], first8[: 2 * k])
    with pytest.raises(ValueError, match="compat.loader_spans=6"):
        span_ranks([0], 4, 6)
