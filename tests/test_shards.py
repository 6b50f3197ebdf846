"""Shard format: round trip, exact bytes, and every corruption case's error message."""

from __future__ import annotations

import numpy as np
import pytest

from golf_jax.data.shards import (
    HEADER_BYTES,
    MAGIC,
    ShardError,
    load_tokens,
    load_validation_tokens,
    read_shard,
    shard_files,
)
from golf_jax.data.prepare import write_shard


def _header(magic: int = MAGIC, version: int = 1, n: int = 0) -> bytes:
    h = np.zeros(256, dtype="<i4")
    h[:3] = magic, version, n
    return h.tobytes()


def test_round_trip_and_exact_bytes(tmp_path):
    path = tmp_path / "fineweb_train_000000.bin"
    toks = np.array([1, 2, 1023, 65535, 0], dtype=np.int64)
    write_shard(path, toks)
    raw = path.read_bytes()
    # Hand-built expected file: 1024-byte LE int32 header, then LE uint16 body.
    expected = (
        (20240520).to_bytes(4, "little") + (1).to_bytes(4, "little") + (5).to_bytes(4, "little")
        + bytes(1012)
        + b"\x01\x00\x02\x00\xff\x03\xff\xff\x00\x00"
    )
    assert raw == expected
    for mmap in (True, False):
        got = read_shard(path, mmap=mmap)
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, toks)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_empty_shard_and_write_validation(tmp_path):
    write_shard(tmp_path / "e.bin", np.zeros(0, dtype=np.uint16))
    assert read_shard(tmp_path / "e.bin").size == 0
    with pytest.raises(ShardError, match=r"bad\.bin.*uint16"):
        write_shard(tmp_path / "bad.bin", [1, 70000])
    with pytest.raises(ShardError, match="uint16"):
        write_shard(tmp_path / "bad.bin", [-1])
    assert not (tmp_path / "bad.bin").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (_header()[:100], r"truncated header \(100 of 1024 bytes\)"),
        (_header(magic=12345, n=2) + bytes(4), r"bad magic 12345 \(expected 20240520\)"),
        (_header(version=2, n=2) + bytes(4), r"bad version 2 \(expected 1\)"),
        (_header(n=10) + bytes(6), r"truncated: 1030 bytes but the header says 10 tokens"),
        (_header(n=2) + bytes(7), r"3 trailing bytes after 2 tokens"),
    ],
    ids=["truncated_header", "bad_magic", "bad_version", "truncated_body", "trailing_bytes"],
)
def test_corrupt_shards(tmp_path, content, message):
    path = tmp_path / "fineweb_val_000000.bin"
    path.write_bytes(content)
    with pytest.raises(ShardError, match=message) as info:
        read_shard(path)
    text = str(info.value)
    assert str(path) in text
    assert "rebuild" in text or "prepare" in text  # says how to fix it


def test_token_id_beyond_vocab(tmp_path):
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, [1, 5, 700, 3, 1023])
    read_shard(path, vocab_size=1024)
    with pytest.raises(ShardError) as info:
        read_shard(path, vocab_size=512)
    text = str(info.value)
    assert str(path) in text and "token id 1023" in text and "position 2" in text
    assert "--config.model.vocab_size" in text and "1024" in text and "tokenizer" in text


def test_empty_glob(tmp_path):
    pattern = str(tmp_path / "fineweb_train_*.bin")
    with pytest.raises(ShardError, match="no shard files match") as info:
        shard_files(pattern)
    assert pattern in str(info.value)
    with pytest.raises(ShardError):
        load_tokens(pattern)


def test_load_tokens_sorted_concat(tmp_path):
    write_shard(tmp_path / "fineweb_train_000001.bin", [4, 5])
    write_shard(tmp_path / "fineweb_train_000000.bin", [1, 2, 3])
    write_shard(tmp_path / "fineweb_train_000010.bin", [6])
    files = shard_files(str(tmp_path / "fineweb_train_*.bin"))
    assert [f.name[-10:-4] for f in files] == ["000000", "000001", "000010"]
    np.testing.assert_array_equal(load_tokens(str(tmp_path / "*.bin")), [1, 2, 3, 4, 5, 6])
    assert HEADER_BYTES == 1024


def test_validation_truncation(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(10))
    write_shard(tmp_path / "fineweb_val_000001.bin", np.arange(10, 23))
    pattern = str(tmp_path / "fineweb_val_*.bin")
    # N = 23, seq_len 5: ((23-1)//5)*5 + 1 = 21 tokens kept.
    np.testing.assert_array_equal(load_validation_tokens(pattern, 5), np.arange(21))
    # Exactly k*L+1 tokens keeps everything.
    assert load_validation_tokens(pattern, 11).size == 23
    # max_tokens cuts first: 12 -> ((12-1)//5)*5 + 1 = 11.
    np.testing.assert_array_equal(load_validation_tokens(pattern, 5, max_tokens=12), np.arange(11))
    with pytest.raises(ShardError, match="fewer than seq_len \\+ 1 = 24"):
        load_validation_tokens(pattern, 23)
    with pytest.raises(ShardError, match="vocab_size 16"):
        load_validation_tokens(pattern, 5, vocab_size=16)
