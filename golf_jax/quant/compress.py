"""Self-describing compression of the artifact: lzma (xz, preset 9), brotli-11, zstd-22.

Stream format: ``[method tag: 1 byte][shuffle stride: 1 byte][compressed bytes]``
with tags 0 = none, 1 = lzma, 2 = brotli, 3 = zstd. ``decompress`` needs no
argument. Two bytes of overhead buy a stream that names its own codec.

Byte shuffle (the SP8192 stack, #1735 L1442-1478, applies stride 2 before
brotli): with stride k, the output is bytes 0, k, 2k, ... then 1, k+1, ..., i.e.
byte j of every k-byte word is gathered into plane j. For fp16 data the high
bytes (sign, exponent: few distinct values) and the low bytes (mantissa: noisy)
end up in separate runs, which an entropy coder with a sliding context models
better than their interleaving. For int8 payloads stride 2 only splits even and
odd columns and is roughly neutral. The stride is stored, so any method may use
it; only brotli defaults to 2, lzma defaults to 1 as in the PR #1318 reference.
"""

from __future__ import annotations

import lzma
import zlib

import numpy as np

METHODS = {"none": 0, "lzma": 1, "brotli": 2, "zstd": 3, "zlib": 4}
_NAMES = {v: k for k, v in METHODS.items()}
DEFAULT_SHUFFLE = {"none": 1, "lzma": 1, "brotli": 2, "zstd": 1, "zlib": 1}
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CompressionError(ValueError):
    """A compressed stream that is truncated, corrupted or of an unknown method."""


def byte_shuffle(data: bytes, stride: int) -> bytes:
    """Gather byte j of every stride-byte word into plane j (planes back to back)."""
    if stride <= 1 or len(data) < stride:
        return bytes(data)
    src = np.frombuffer(data, dtype=np.uint8)
    return b"".join(src[j::stride].tobytes() for j in range(stride))


def byte_unshuffle(data: bytes, stride: int) -> bytes:
    """Inverse of byte_shuffle (plane j holds ceil((n - j) / stride) bytes)."""
    if stride <= 1 or len(data) < stride:
        return bytes(data)
    src = np.frombuffer(data, dtype=np.uint8)
    n = src.size
    out = np.empty(n, dtype=np.uint8)
    off = 0
    for j in range(stride):
        m = (n - j + stride - 1) // stride
        out[j::stride] = src[off : off + m]
        off += m
    return out.tobytes()


def compress(data: bytes, method: str = "lzma", shuffle: int | None = None) -> bytes:
    """Compress with lzma preset 9 (xz container, CRC64), brotli quality 11 or zstd 22."""
    if method not in METHODS:
        raise ValueError(f"unknown compression method {method!r}; choose one of {sorted(METHODS)}")
    stride = DEFAULT_SHUFFLE[method] if shuffle is None else int(shuffle)
    if not 1 <= stride <= 255:
        raise ValueError(f"byte-shuffle stride must be in 1..255, got {stride}")
    payload = byte_shuffle(bytes(data), stride)
    if method == "lzma":
        body = lzma.compress(payload, format=lzma.FORMAT_XZ, preset=9)
    elif method == "brotli":
        import brotli

        body = brotli.compress(payload, quality=11)
    elif method == "zstd":
        import zstandard

        body = zstandard.ZstdCompressor(level=22, write_checksum=True, write_content_size=True).compress(payload)
    elif method == "zlib":  # the upstream baseline's int8+zlib export
        body = zlib.compress(payload, level=9)
    else:
        body = payload
    return bytes([METHODS[method], stride]) + body


def method_of(blob: bytes) -> str:
    """The method a stream from ``compress`` was written with (or a bare xz/zstd stream)."""
    if blob[:6] == _XZ_MAGIC:
        return "lzma"
    if blob[:4] == _ZSTD_MAGIC:
        return "zstd"
    if len(blob) < 2 or blob[0] not in _NAMES:
        raise CompressionError(f"not a golf_jax compressed stream (first bytes {bytes(blob[:8])!r})")
    return _NAMES[blob[0]]


def decompress(blob: bytes) -> bytes:
    """Inverse of ``compress``; also accepts a bare xz or zstd stream."""
    blob = bytes(blob)
    method = method_of(blob)
    if blob[:6] == _XZ_MAGIC or blob[:4] == _ZSTD_MAGIC:
        stride, body = 1, blob
    else:
        stride, body = blob[1], blob[2:]
        if stride < 1:
            raise CompressionError("corrupted stream header: byte-shuffle stride 0")
    try:
        if method == "lzma":
            raw = lzma.decompress(body, format=lzma.FORMAT_XZ)
        elif method == "brotli":
            import brotli

            raw = brotli.decompress(body)
        elif method == "zstd":
            import zstandard

            raw = zstandard.ZstdDecompressor().decompress(body)
        elif method == "zlib":
            raw = zlib.decompress(body)
        else:
            raw = body
    except Exception as exc:  # lzma.LZMAError, brotli.error, zstandard.ZstdError, EOFError
        raise CompressionError(f"{method} stream is truncated or corrupted ({len(blob)} bytes): {exc}") from exc
    return byte_unshuffle(raw, stride)
