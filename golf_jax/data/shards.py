"""The Parameter Golf token shard format: read and validate (golf_jax/data/prepare.py writes).

A shard is 256 little-endian int32 header words (magic, version, num_tokens, zeros)
followed by num_tokens little-endian uint16 token ids. This is the format the
reference `train_gpt.py` reads, so shards built here also run the PyTorch reference.
Every error names the file and says how to fix it, because a bad shard usually means
a half-written build or a tokenizer / vocab-size mismatch.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path

import numpy as np

from golf_jax.core.errors import UserError

MAGIC = 20240520
VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
TOKEN_BYTES = 2

_REBUILD = "rebuild it with `python -m golf_jax.data.prepare`"
SIDECAR_TAG = "_bytes_"  # fineweb_val_bytes_%06d.bin: a CaseOps byte sidecar, never a token shard


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardError(UserError):
    """A shard file is missing, malformed, or inconsistent with the configured vocab."""


def read_header(path: str | os.PathLike) -> int:
    """Validate header and file size without reading the body; return num_tokens."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard ({e}); check the path / data pattern") from e
    if len(raw) < HEADER_BYTES:
        raise ShardError(
            f"{path}: truncated header ({len(raw)} of {HEADER_BYTES} bytes); "
            f"the file is incomplete or not a shard, {_REBUILD}"
        )
    header = np.frombuffer(raw, dtype="<i4")
    if int(header[0]) != MAGIC:
        raise ShardError(
            f"{path}: bad magic {int(header[0])} (expected {MAGIC}); "
            f"this is not a Parameter Golf token shard, {_REBUILD}"
        )
    if int(header[1]) != VERSION:
        raise ShardError(
            f"{path}: bad version {int(header[1])} (expected {VERSION}); {_REBUILD}"
        )
    num_tokens = int(header[2])
    if num_tokens < 0:
        raise ShardError(f"{path}: negative token count {num_tokens} in header; {_REBUILD}")
    expected = HEADER_BYTES + TOKEN_BYTES * num_tokens
    if size < expected:
        raise ShardError(
            f"{path}: file is truncated: {size} bytes but the header says {num_tokens} tokens "
            f"({expected} bytes); the copy/build was interrupted, {_REBUILD} or copy it again"
        )
    if size > expected:
        raise ShardError(
            f"{path}: file has {size - expected} trailing bytes after {num_tokens} tokens "
            f"(expected {expected} bytes); the file is corrupt or was appended to, {_REBUILD}"
        )
    return num_tokens


def check_vocab(path: str | os.PathLike, tokens: np.ndarray, vocab_size: int | None) -> None:
    """Raise if any token id is >= vocab_size (shards built with another tokenizer)."""
    if vocab_size is None or tokens.size == 0:
        return
    hi = int(tokens.max())
    if hi >= vocab_size:
        where = int(np.argmax(np.asarray(tokens) >= vocab_size))
        raise ShardError(
            f"{path}: token id {hi} (first bad id at position {where}) is >= vocab_size "
            f"{vocab_size}; the shards were built with a larger tokenizer: set "
            f"--config.model.vocab_size to at least {hi + 1} and use the tokenizer the "
            "shards were built with (see manifest.json next to the shards)"
        )


def gather_windows(shard, files, shard_R: np.ndarray, start_R: np.ndarray, span: int,
                   vocab_size: int | None) -> np.ndarray:
    """Rows shard(si)[start : start + span] as one [R, span] uint16 array: one gather from a
    strided window view and one vocab check per shard (a memmap slice per row costs Python
    time per row; docs/perf.md)."""
    out = np.empty((len(shard_R), span), np.uint16)
    for si in np.unique(shard_R).tolist():
        rows = np.flatnonzero(shard_R == si)
        out[rows] = np.lib.stride_tricks.sliding_window_view(np.asarray(shard(si)), span)[start_R[rows]]
        check_vocab(files[si], out[rows], vocab_size)
    return out


def read_shard(
    path: str | os.PathLike, vocab_size: int | None = None, mmap: bool = True
) -> np.ndarray:
    """Return the shard's tokens as uint16 (a read-only memmap when mmap=True)."""
    path = Path(path)
    num_tokens = read_header(path)
    if num_tokens == 0:
        tokens = np.zeros(0, dtype=np.uint16)
    elif mmap:
        tokens = np.memmap(path, mode="r", dtype="<u2", offset=HEADER_BYTES, shape=(num_tokens,))
    else:
        tokens = np.fromfile(path, dtype="<u2", count=num_tokens, offset=HEADER_BYTES)
        if tokens.size != num_tokens:
            raise ShardError(
                f"{path}: short read ({tokens.size} of {num_tokens} tokens); {_REBUILD}"
            )
    check_vocab(path, tokens, vocab_size)
    return tokens


def shard_files(pattern: str) -> list[Path]:
    """Sorted glob (the reference orders shards by name); an empty match is an error.

    Byte sidecars are left out: "fineweb_val_*.bin" also matches fineweb_val_bytes_*.bin
    (#1738 excludes them from its token glob the same way).
    """
    files = [Path(p) for p in sorted(glob.glob(str(pattern))) if SIDECAR_TAG not in Path(p).name]
    if not files:
        raise ShardError(
            f"no shard files match {str(pattern)!r}; check the data directory / pattern, "
            "or build shards with `python -m golf_jax.data.prepare` (real text) or "
            "golf_jax.data.synthetic.ensure_default_corpus() (generated corpus)"
        )
    return files


def load_tokens(pattern: str, vocab_size: int | None = None) -> np.ndarray:
    """All shards matching `pattern`, in sorted order, concatenated in memory."""
    parts = [read_shard(f, vocab_size) for f in shard_files(pattern)]
    return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])


def load_validation_tokens(
    pattern: str,
    seq_len: int,
    vocab_size: int | None = None,
    max_tokens: int | None = None,
) -> np.ndarray:
    """Validation stream cut like the reference: the first ((N-1)//L)*L + 1 tokens.

    `max_tokens` (a quick-eval cap) is applied before the cut, so the result is
    still a whole number of sequences plus the final target.
    """
    tokens = load_tokens(pattern, vocab_size)
    if max_tokens is not None:
        tokens = tokens[: int(max_tokens)]
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ShardError(
            f"validation shards {pattern!r} hold {tokens.size} tokens (after max_tokens), "
            f"fewer than seq_len + 1 = {seq_len + 1}; use more validation data, a larger "
            "max_tokens, or a shorter sequence length"
        )
    return tokens[: usable + 1]


def sidecar_name(token_file: str | os.PathLike) -> Path:
    """fineweb_val_000003.bin -> fineweb_val_bytes_000003.bin, beside it."""
    path = Path(token_file)
    head, tail = path.name.rsplit("_", 1)
    return path.with_name(f"{head}{SIDECAR_TAG}{tail}")


def load_byte_sidecar(pattern: str) -> np.ndarray | None:
    """The byte sidecar of the shards of `pattern`, concatenated like them; None if there is none.

    A sidecar (golf_jax/data/caseops.py) holds per token the bytes of the original text
    it stands for, in the shard format. Each token shard must have one with exactly as
    many entries, or none may: a partial or misaligned sidecar would credit bytes to the
    wrong targets, so it is an error naming the file.
    """
    token_files = shard_files(pattern)
    wanted = [sidecar_name(f) for f in token_files]
    found = [f for f in wanted if f.exists()]
    if not found:
        return None
    fix = "rebuild the val split with `python -m golf_jax.data.prepare --caseops`"
    if len(found) < len(wanted):
        missing = next(f for f in wanted if not f.exists())
        raise ShardError(f"{missing}: this byte sidecar is missing while {found[0].name} exists; every val shard "
                         f"needs its sidecar, {fix}")
    parts = []
    for tok, side in zip(token_files, wanted):
        n_tok, n_side = read_header(tok), read_header(side)
        if n_side != n_tok:
            raise ShardError(f"{side}: {n_side} byte entries, but {tok.name} holds {n_tok} tokens; the sidecar "
                             f"must be parallel to the val tokens, {fix}")
        parts.append(read_shard(side))
    return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])
